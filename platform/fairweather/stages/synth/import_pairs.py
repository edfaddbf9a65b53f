"""``fairweather import-pairs``: list a paired set from disk (Outdoor-Rain, RainDrop, SPA, OTS, Snow100K, or the
``generic`` layout: ``input/`` + ``target/``, ``rain/`` + ``norain/``, ``hazy/`` + ``GT/``, ``_hazy`` / ``_GT``
names and the other conventions of :mod:`fairweather.data.paired_folders`) in the ``paired`` table, next to the
generated pairs.

Only the table is written: the images stay where they are and the rows point at them (relative to ``data.tables``
for local folders, full URIs for cloud ones). Reading headers is light driver work, so no Ray is needed. Rerunning on
the same folder writes nothing; a folder that gained images adds only their rows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.tables import TableStore
from fairweather.data.paired_folders import FolderImport, PairedFolderError, scan_paired_folder, skip_counts
from fairweather.stages.infra.console import say
from fairweather.synth.paired import SPLITS, write_pairs

#: How many file names of each problem the console shows (the summary holds all of them).
_SHOWN = 5


@dataclass(frozen=True)
class ImportSummary:
    dataset: str
    weather: str
    num_pairs: int
    #: Imported pairs per split (train / val / test).
    splits: dict[str, int]
    #: ``paired`` rows added or changed (0 on an identical rerun).
    rows_written: int
    #: Every image that was not paired, by reason (see :class:`FolderImport`).
    unmatched: tuple[str, ...]
    unreadable: tuple[str, ...]
    size_mismatch: tuple[str, ...]
    duplicates: tuple[str, ...]
    unused_targets: int
    other_files: int
    seconds: float


def _problems(found: FolderImport) -> list[str]:
    lines = []
    for what, items in (
        ("inputs without a target", found.unmatched),
        ("unreadable images", found.unreadable),
        ("pairs of different sizes", found.size_mismatch),
        ("repeated names (another suffix)", found.duplicates),
    ):
        if items:
            more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            lines.append(f"  {len(items)} {what}, skipped: {', '.join(items[:_SHOWN])}{more}")
    for reason, uris in found.skipped.items():
        more = f" (+{len(uris) - _SHOWN} more)" if len(uris) > _SHOWN else ""
        lines.append(
            f"  {skip_counts({reason: uris})} listing entries skipped: {', '.join(uris[:_SHOWN])}{more}"
        )
    if found.unused_targets or found.other_files:
        lines.append(
            f"  {found.unused_targets} target(s) no input used; {found.other_files} image(s) outside the input "
            f"and target folders (not part of the layout)"
        )
    return lines


def _reasons(found: FolderImport) -> str:
    """One line of counts: why nothing (or what) was skipped."""
    counts = [
        f"{len(items)} {what}"
        for what, items in (
            ("inputs without a target", found.unmatched),
            ("unreadable", found.unreadable),
            ("size mismatches", found.size_mismatch),
            ("repeated names", found.duplicates),
        )
        if items
    ]
    if found.skipped:
        counts.append(f"listing skipped {skip_counts(found.skipped)}")
    return "; ".join(counts) or "nothing to pair"


def run_import_pairs(
    cfg: FairweatherConfig,
    folder: str,
    layout: str,
    dataset: str,
    *,
    weather: str | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    split: str | None = None,
) -> ImportSummary:
    """Scan ``folder`` as ``layout`` (:data:`fairweather.data.paired_folders.LAYOUTS`) and add its pairs to the
    ``paired`` table under ``data.tables`` as dataset ``dataset``.

    The split fractions default to the generated data's (``synth.val_fraction``, ``synth.test_fraction``); a set
    with its own train/test folders keeps them; ``split`` (train / val / test) puts every pair in that split.
    Links out of ``folder`` are followed when ``data.follow_links_out`` is set. Raises :class:`PairedFolderError`
    when no pair was found, naming every reason (and count) of what was skipped.
    """
    start = time.perf_counter()
    found = scan_paired_folder(
        folder,
        layout,
        dataset,
        weather=weather,
        val_fraction=cfg.synth.val_fraction if val_fraction is None else val_fraction,
        test_fraction=cfg.synth.test_fraction if test_fraction is None else test_fraction,
        split=split,
        follow_links_out=cfg.data.follow_links_out,
    )
    problems = _problems(found)
    if not found.pairs:
        raise PairedFolderError(
            f"no pairs found in {folder} as layout '{layout}' ({_reasons(found)}):\n" + "\n".join(problems)
        )
    rows = write_pairs(TableStore(cfg.data.tables), found.pairs)
    counts = Counter(pair.split for pair in found.pairs)
    summary = ImportSummary(
        dataset=dataset,
        weather=found.pairs[0].weather,
        num_pairs=len(found.pairs),
        splits={name: counts[name] for name in SPLITS},
        rows_written=rows,
        unmatched=found.unmatched,
        unreadable=found.unreadable,
        size_mismatch=found.size_mismatch,
        duplicates=found.duplicates,
        unused_targets=found.unused_targets,
        other_files=found.other_files,
        seconds=round(time.perf_counter() - start, 2),
    )
    say(
        f"import-pairs: {summary.num_pairs} {summary.weather} pairs from {folder} as '{dataset}' ({layout}), "
        f"train/val/test {'/'.join(str(n) for n in summary.splits.values())}; {rows} table row(s) written to "
        f"{cfg.data.tables} in {summary.seconds:.1f}s"
    )
    if found.hash_split and summary.splits["train"]:
        say(
            f"import-pairs: {found.hash_split} pair(s) split by a hash of their target (no train/test folder "
            "above them): a benchmark's test set belongs whole in test (--split test), or evaluate scores only "
            "its share"
        )
    for line in problems:
        say(line)
    return summary
