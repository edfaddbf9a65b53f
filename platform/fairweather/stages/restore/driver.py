"""``fairweather restore``: restore a folder (or one file) of weather photos with a trained checkpoint.

One process and one model copy, file after file, with a progress bar on a terminal. No Ray: a folder of photos
is restored by a single network on one device, so Ray would only add start-up time; large sets are the
evaluation stage's job. Each file is read once and decoded under the labeling stage's rules
(:func:`fairweather.imaging.decode_image`; failures named as :func:`fairweather.stages.infra.pool.read_decode_one`
names them: EXIF orientation applied, 16-bit/RGBA/CMYK/grayscale converted, empty, truncated, non-image and
over-``data.max_image_pixels`` files rejected with a reason), restored in tiles of ``model.tile`` pixels straight
into a uint8 image (a 24-Mpx photo costs its decoded and restored bytes, 72 MB each, one band of tiles and one
tile of activations; no float copy of it), and written
atomically in its own format (:mod:`fairweather.stages.restore.files`). A file that fails is reported and skipped;
the others are restored. The command fails only when every listed file failed.

The network and its config come from the checkpoint by default, so any training run's checkpoint restores with
no matching ``--config``; dotted overrides apply on top (``model.tile=256 data.max_image_pixels=80000000``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import atomic_write_bytes, check_writable, read_bytes
from fairweather.imaging import ImageDecodeError, decode_image
from fairweather.stages.infra.console import say
from fairweather.stages.infra.pool import folder_hint
from fairweather.stages.restore.files import encode_like, plan_restore, result_path
from fairweather.training.restorer import Restorer, load_restorer

log = logging.getLogger(__name__)


class NothingRestoredError(FairweatherError):
    """Every listed file failed: the command must not look like a success."""


@dataclass
class RestoreSummary:
    checkpoint: str
    arch: str
    step: int
    device: str
    output: str
    #: Files the run accounts for (restored + failed).
    listed: int
    restored: int
    failed: int
    #: Entries of the input folder not listed, by reason (hidden, suffix, dangling_link, ...).
    not_listed: dict[str, int]
    #: One ``{"uri", "stage", "reason", "message"}`` per failed file (stage: list, read, decode, write).
    failures: list[dict[str, str]]
    seconds: float
    images_per_s: float


def _failure(uri: str, stage: str, reason: str, message: str) -> dict[str, str]:
    return {"uri": uri, "stage": stage, "reason": reason, "message": message}


def restore_file(
    restorer: Restorer, source: str, target: str, weather: str | None = None
) -> dict[str, str] | None:
    """Restore ``source`` (of weather ``weather``, None: unknown) into ``target``; None when done, else the failure
    (never raises for a bad file).

    The file is read once (its bytes give the pixels, then the format and metadata of the result) and its pixels
    are held once: decoded, restored tile by tile into a uint8 image, encoded.
    """
    try:
        data = read_bytes(source)
    except (OSError, ValueError) as err:  # missing, permission, network: pyarrow raises OSError subclasses
        return _failure(source, "read", type(err).__name__, str(err))
    try:
        rgb = decode_image(data, max_pixels=restorer.cfg.data.max_image_pixels)
    except Exception as err:  # PIL plugins can raise anything on hostile bytes; one file must not end the run
        reason = err.reason if isinstance(err, ImageDecodeError) else f"crash:{type(err).__name__}"
        return _failure(source, "decode", reason, str(err))
    restored = restorer.restore(rgb, weather)
    del rgb
    try:
        encoded, suffix = encode_like(restored, data)
        atomic_write_bytes(result_path(target, suffix), encoded)
    except (OSError, ValueError) as err:  # the output went away, disk full, the input changed meanwhile
        return _failure(source, "write", type(err).__name__, str(err))
    return None


def run_restore(
    checkpoint: str,
    source: str,
    output: str,
    cfg: FairweatherConfig | None = None,
    *,
    config_source: str = "--config",
    overrides: Sequence[str] = (),
    device: str = "auto",
    weather: str | None = None,
) -> RestoreSummary:
    """Restore every image of ``source`` (a folder, recursively, or one file) into folder ``output``.

    weather: what a weather-conditioned network is told for every file; None: the weather its folder names
    (``rain/``, ``hazy/``, ... as the pool listing reads it), else unknown.

    cfg: an explicit config (named ``config_source`` in errors) whose network must be the checkpoint's; None
    uses the checkpoint's stored config with ``overrides``. The checkpoint, the input listing and the output
    location are all checked before the first file is written. Raises :class:`NothingRestoredError` when every
    listed file failed.
    """
    restorer = load_restorer(checkpoint, cfg, source=config_source, overrides=overrides, device=device)
    plan = plan_restore(source, output, follow_links_out=restorer.cfg.data.follow_links_out)
    check_writable(output, "--output")
    failures = [
        _failure(n, "list", "bad_name", "file name is not UTF-8 (shown escaped)") for n in plan.bad_names
    ]
    start = time.perf_counter()
    told: Counter[str] = Counter()
    for source_uri, target in tqdm(plan.jobs, desc="restore", unit="image", disable=None):
        file_weather = weather or folder_hint(source_uri)
        failure = restore_file(restorer, source_uri, target, file_weather)
        if failure is not None:
            log.warning("restore: skipped %s (%s: %s)", source_uri, failure["stage"], failure["message"])
            failures.append(failure)
        else:
            told[file_weather or "unknown"] += 1
    seconds = time.perf_counter() - start
    restored = plan.listed - len(failures)
    summary = RestoreSummary(
        checkpoint=checkpoint,
        arch=restorer.arch,
        step=restorer.step,
        device=str(restorer.device),
        output=output,
        listed=plan.listed,
        restored=restored,
        failed=len(failures),
        not_listed={reason: len(entries) for reason, entries in sorted(plan.skipped.items())},
        failures=failures,
        seconds=round(seconds, 3),
        images_per_s=round(restored / seconds, 3) if seconds > 0 else 0.0,
    )
    not_listed = ", ".join(f"{n} {reason}" for reason, n in summary.not_listed.items())
    say(
        f"restore: {summary.listed} listed, {sum(summary.not_listed.values())} not listed"
        + (f" ({not_listed})" if not_listed else "")
        + f"; {restored} restored into {output}, {len(failures)} failed in {seconds:.1f}s "
        f"({restorer.arch} network of step {restorer.step}, {restorer.device})"
    )
    model = restorer.cfg.model
    if model.arch == "nafnet" and model.nafnet.weather_film and told:  # what a conditioned network was told
        said = ", ".join(f"{name} {n}" for name, n in sorted(told.items()))
        hint = "" if weather else " (--weather, else a folder named rain/, hazy/, snowy/... above the file)"
        say(f"restore: the network was told the weather: {said}{hint}")
    if failures and not restored:
        reasons = Counter(f"{f['stage']}:{f['reason']}" for f in failures).most_common(3)
        raise NothingRestoredError(
            f"every one of the {summary.listed} listed files failed "
            f"({', '.join(f'{n} {reason}' for reason, n in reasons)})"
        )
    return summary
