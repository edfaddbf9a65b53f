"""Paired sets on disk in the layouts of the published ones -> ``paired`` records (one adapter, a table of rules).

Each layout names the folder that holds the degraded inputs, the folder beside it that holds the clean targets, and
how an input's name maps to its target's name (looked up in each set's release and the loaders that use it):

- ``outdoor_rain`` (Outdoor-Rain, Li et al. 2019; rain): ``in/`` or ``input/`` -> ``gt/``,
  ``im_0001_s80_a04`` -> ``im_0001``;
- ``raindrop`` (RainDrop, Qian et al. 2018; rain): ``data/`` -> ``gt/``, ``12_rain`` -> ``12_clean``;
- ``spa`` (SPA-Data, Wang et al. 2019; rain): ``rain/`` -> ``norain/`` or ``gt/``, the same name or the
  conventions of its repackagings: ``rain-7`` -> ``norain-7``, ``007`` -> ``007gt``, ``7_rain`` -> ``7_gt``
  (the original training release, ``real_world/`` + ``real_world_gt/`` paired by ``real_world.txt``, is a list,
  not a layout: it is not read here);
- ``ots`` (RESIDE OTS / SOTS; haze): ``hazy/`` or ``haze/`` -> ``clear/`` or ``gt/``, ``0001_0.8_0.2`` -> ``0001``;
- ``snow100k`` (Snow100K; snow): ``synthetic/`` -> ``gt/``, the same name (``mask/`` is not an input);
- ``generic`` (weather given by the caller): ``input/`` -> ``target/``, the same name.

An input is an image below an input folder (sub-folders allowed, as in OTS's ``haze/part1/``); its target is looked
up below a target folder with the same parent, any image suffix (SOTS pairs ``.jpg`` inputs with ``.png`` targets).
Folder names match case-insensitively.

Splits: a ``train`` / ``val`` / ``test`` word in the path above the input folder (``train/``, ``test_a/``,
``Snow100K-testset/``, ``Testing/``) is the set's own split, and its training part gives ``val_fraction`` of its
pairs to ``val``; without one, pairs are split by a hash. The hash is of the *target*, so the 15 renderings of one
Outdoor-Rain scene never straddle train and test. Nothing is dropped silently: inputs without a target, unreadable
files, pairs whose sizes differ, repeated names, targets no input used and images outside both folders are all
counted in :class:`FolderImport`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import filesystem_for, has_scheme, list_files
from fairweather.contracts.vocab import IMAGE_SUFFIXES
from fairweather.synth.paired import PairRecord, hash_fraction, split_for

#: The weathers a paired set can restore (the ``paired`` table's ``weather`` column).
PAIRED_WEATHERS = ("rain", "haze", "snow")
#: Words in a folder name that name a split (a folder name is cut into its letter runs: ``test_a`` -> test).
_SPLIT_WORDS = {
    **dict.fromkeys(("train", "training", "trainset"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "valset"), "val"),
    **dict.fromkeys(("test", "testing", "testset"), "test"),
}
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PairedFolderError(FairweatherError, ValueError):
    """A folder cannot be read as the requested layout (wrong layout, no pairs, bad arguments)."""


@dataclass(frozen=True)
class Layout:
    """How one published set stores its pairs (see the module docstring's table)."""

    weather: str | None  # None: the caller must say
    input_dirs: tuple[str, ...]
    target_dirs: tuple[str, ...]  # tried in this order
    #: Full match on the input's file stem; its ``key`` group fills the target templates.
    pattern: str = r"(?P<key>.+)"
    #: Target stems tried in order, ``{key}`` replaced.
    targets: tuple[str, ...] = ("{key}",)


LAYOUTS: dict[str, Layout] = {
    "outdoor_rain": Layout("rain", ("in", "input"), ("gt",), r"(?P<key>.+?)_s\d+_a\d+"),
    "raindrop": Layout("rain", ("data",), ("gt",), r"(?P<key>.+)_rain", ("{key}_clean",)),
    "spa": Layout(
        "rain",
        ("rain",),
        ("norain", "gt"),
        r"(?P<key>.+?)(?:_?rain)?",
        ("{key}", "no{key}", "{key}gt", "{key}_gt", "{key}_norain"),
    ),
    "ots": Layout("haze", ("hazy", "haze"), ("clear", "gt"), r"(?P<key>[^_]+)(?:_[0-9.]+)*"),
    "snow100k": Layout("snow", ("synthetic",), ("gt",)),
    "generic": Layout(None, ("input",), ("target",)),
}


@dataclass(frozen=True)
class FolderImport:
    """What a scan found: the pairs, and every image it could not pair, by reason."""

    pairs: tuple[PairRecord, ...]
    #: Inputs whose target is missing (URIs).
    unmatched: tuple[str, ...] = ()
    #: ``"<uri>: <reason>"`` for inputs or targets whose image header cannot be read.
    unreadable: tuple[str, ...] = ()
    #: ``"<input uri>: WxH vs target WxH"``: a pair whose images differ in size cannot be cropped together.
    size_mismatch: tuple[str, ...] = ()
    #: Inputs whose pair_id another input already took (same name with another suffix).
    duplicates: tuple[str, ...] = ()
    #: Targets that no input used, and images below neither an input nor a target folder (e.g. ``mask/``).
    unused_targets: int = 0
    other_files: int = 0
    #: The listing's skipped entries (hidden, dangling or outside links, ...) by reason.
    skipped: dict[str, list[str]] = field(default_factory=dict)


def _split_of_folders(parts: tuple[str, ...]) -> str | None:
    """The split a path names (the nearest folder with a split word wins), or None."""
    for part in reversed(parts):
        for word in reversed(re.findall(r"[a-z]+", part.lower())):
            if word in _SPLIT_WORDS:
                return _SPLIT_WORDS[word]
    return None


def _relative_parts(uri: str, root_path: str) -> tuple[str, ...]:
    path = uri.partition("://")[2] if has_scheme(uri) else uri
    return PurePosixPath(path.lstrip("/")).relative_to(root_path.strip("/")).parts


def _image_size(uri: str) -> tuple[int, int]:
    """``(width, height)`` from the image header only (PIL reads no pixels here)."""
    fs, path = filesystem_for(uri)
    with fs.open_input_file(path) as f, Image.open(f) as image:
        return image.size


def _unreadable_reason(err: Exception) -> str:
    """Why an image header cannot be read, in words (PIL names the open file object, not the file)."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format PIL can read (or a damaged header)"
    if isinstance(
        err, OSError
    ):  # pyarrow: "Failed to open local file '<path>'. Detail: [errno 13] Permission denied"
        return (err.strerror or str(err)).split("Detail: ", 1)[-1]
    return str(err)


def _check_arguments(layout: str, dataset: str, weather: str | None) -> tuple[Layout, str]:
    if layout not in LAYOUTS:
        raise PairedFolderError(f"unknown layout '{layout}' (known: {', '.join(LAYOUTS)})")
    if not _DATASET_NAME.fullmatch(dataset) or dataset == "synth":
        raise PairedFolderError(
            f"dataset name '{dataset}' must be letters, digits, '.', '_' or '-' and not 'synth' (the generated set)"
        )
    rules = LAYOUTS[layout]
    weather = weather or rules.weather
    if weather not in PAIRED_WEATHERS:
        raise PairedFolderError(
            f"layout '{layout}' needs a weather, one of {PAIRED_WEATHERS}; got {weather!r}"
        )
    return rules, weather


_Group = tuple[str, ...]  # the path parts above an input or target folder: pairs come from one group


def _index(
    uris: list[str], root: str, rules: Layout
) -> tuple[list[tuple[_Group, tuple[str, ...], str]], dict[tuple[_Group, str, str], str], int]:
    """Sort the listed images into inputs ``(group, relative parts, uri)``, targets ``{(group, target folder,
    stem): uri}`` and a count of the others."""
    inputs, targets, other = [], {}, 0
    input_dirs, target_dirs = set(rules.input_dirs), set(rules.target_dirs)
    for uri in uris:
        parts = _relative_parts(uri, root)
        folders = [p.lower() for p in parts[:-1]]
        # The nearest input or target folder above the file decides its role.
        role = next(
            (i for i in reversed(range(len(folders))) if folders[i] in input_dirs | target_dirs), None
        )
        if role is None:
            other += 1
        elif folders[role] in input_dirs:
            inputs.append((parts[:role], parts, uri))
        else:
            # Register the target under every target folder above it with no input folder between, so nested
            # releases such as OTS's clear/clear/0001.jpg pair with haze/part1/0001_0.8_0.2.jpg.
            for i in range(role, -1, -1):
                if folders[i] in input_dirs:
                    break
                if folders[i] in target_dirs:
                    targets.setdefault((parts[:i], folders[i], PurePosixPath(parts[-1]).stem), uri)
    return inputs, targets, other


def scan_paired_folder(
    folder: str,
    layout: str,
    dataset: str,
    *,
    weather: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> FolderImport:
    """Pair the images below ``folder`` (local path or URI) by ``layout``'s rules; see the module docstring.

    dataset: the ``dataset`` column and the first part of every ``pair_id`` (``<dataset>/<input path, no suffix>``).
    weather: overrides the layout's weather (required for ``generic``).
    """
    rules, weather = _check_arguments(layout, dataset, weather)
    if min(val_fraction, test_fraction) < 0 or val_fraction + test_fraction >= 1:
        raise PairedFolderError(
            f"val_fraction and test_fraction must be >= 0 with a sum below 1; got {val_fraction}, {test_fraction}"
        )
    listing = list_files(folder, suffixes=IMAGE_SUFFIXES)
    root = filesystem_for(folder)[1]
    inputs, targets, other = _index(listing.files, root, rules)
    if not inputs:
        raise PairedFolderError(
            f"no images below an input folder ({', '.join(f'{d}/' for d in rules.input_dirs)}) of layout "
            f"'{layout}' in {folder} ({len(listing.files)} image(s) found elsewhere); pass the folder that holds "
            f"both the input and the target folders"
        )
    pattern = re.compile(rules.pattern)
    pairs, unmatched, unreadable, mismatch, duplicates, used, ids = [], [], [], [], [], set(), set()
    for group, parts, uri in inputs:
        match = pattern.fullmatch(PurePosixPath(parts[-1]).stem)
        candidates = [t.format(key=match["key"]) for t in rules.targets] if match else []
        target = next(
            (
                targets[(group, d, stem)]
                for d in rules.target_dirs
                for stem in candidates
                if (group, d, stem) in targets
            ),
            None,
        )
        if target is None:
            unmatched.append(uri)
            continue
        pair_id = f"{dataset}/{PurePosixPath(*parts).with_suffix('').as_posix()}"
        if pair_id in ids:
            duplicates.append(uri)
            continue
        sizes = []
        for role, image_uri in (("input", uri), ("target", target)):
            try:
                sizes.append(_image_size(image_uri))
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
                # The file that failed, named as itself (a target names its input too).
                of = f" (target of {uri})" if role == "target" else ""
                unreadable.append(f"{image_uri}{of}: {_unreadable_reason(err)}")
                break
        if len(sizes) < 2:
            continue
        size, target_size = sizes
        if size != target_size:
            mismatch.append(f"{uri}: {size[0]}x{size[1]} vs target {target_size[0]}x{target_size[1]}")
            continue
        ids.add(pair_id)
        used.add(target)
        u = hash_fraction(f"{dataset}/{'/'.join(_relative_parts(target, root))}")
        given = _split_of_folders((PurePosixPath(root).name, *group))
        split = split_for(u, val_fraction, test_fraction) if given is None else given
        if given == "train":  # the set has its own test split; its training part lends some pairs to val
            split = split_for(u, val_fraction, 0.0)
        pairs.append(PairRecord(pair_id, dataset, split, weather, uri, target, size[0], size[1]))
    return FolderImport(
        pairs=tuple(pairs),
        unmatched=tuple(unmatched),
        unreadable=tuple(unreadable),
        size_mismatch=tuple(mismatch),
        duplicates=tuple(duplicates),
        unused_targets=len(set(targets.values()) - used),
        other_files=other,
        skipped=listing.skipped,
    )
