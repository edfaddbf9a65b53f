"""Peak memory of the labeling job's driver on pools of growing size: it must not grow with the pool.

    .venv/bin/python benchmarks/bench_label_memory.py --sizes 100 1000

For each size, a fresh process generates a pool of random PNGs, starts a private local Ray and runs the real
``run_label`` (tables written, no MLflow), and reports its own peak RSS (``ru_maxrss``: the driver only, not the
Ray workers) and its RSS just before labeling started. Rows stream from Ray Data to the driver and are flushed to
the tables by count/time, so the driver's peak should be flat in the pool size; the workers' memory is Ray's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench_label import make_pool


def child(count: int, root: Path) -> dict:
    """Label a generated pool of ``count`` images under ``root`` in this process; its memory figures."""
    from fairweather.contracts.config import load_config
    from fairweather.contracts.metric_logger import NullLogger
    from fairweather.stages.infra.runtime import ray_session
    from fairweather.stages.label.driver import run_label

    make_pool(root / "pool", count, size=96)
    cfg = load_config(
        "smoke",
        [
            f"data.pool={root / 'pool'}",
            f"data.tables={root / 'tables'}",
            f"runtime.runs_dir={root / 'runs'}",
            "runtime.num_cpus=2",
            "label.flush_rows=64",
        ],
    )
    with ray_session(cfg):
        before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        summary = run_label(cfg, NullLogger())
        seconds = time.perf_counter() - start
    return {
        "images": count,
        "labeled": summary.labeled,
        "seconds": round(seconds, 1),
        "rss_before_mib": round(before / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.root)))
        return
    rows = []
    for count in args.sizes:
        with tempfile.TemporaryDirectory() as root:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(count), "--root", root],
                capture_output=True,
                text=True,
                check=True,
            )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'images':>7}{'labeled':>9}{'seconds':>9}{'RSS before (MiB)':>18}{'peak RSS (MiB)':>16}")
    for row in rows:
        print(
            f"{row['images']:>7}{row['labeled']:>9}{row['seconds']:>9}{row['rss_before_mib']:>18}"
            f"{row['peak_rss_mib']:>16}"
        )
    first, last = rows[0], rows[-1]
    print(
        f"peak driver RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.2f} for "
        f"x{last['images'] / first['images']:.0f} images"
    )


if __name__ == "__main__":
    main()
