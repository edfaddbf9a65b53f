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
- ``generic`` (weather given by the caller): the folder-name pairs and name conventions of many releases.
  Input folders ``input/``, ``inputs/``, ``inputcrop/``, ``rain/``, ``rainy/``, ``rainy_image/``, ``hazy/``,
  ``haze/``, ``snow/``, ``snowy/``, ``degraded/``, ``lq/``; target folders, tried in this order, ``target/``,
  ``targets/``, ``gt/``, ``groundtruth/``, ``ground_truth/``, ``clean/``, ``cleancrop/``, ``norain/``, ``clear/``,
  ``hazefree/``, ``haze_free/``, ``label/``, ``hq/`` (MFDNet/MPRNet/DRSformer/AirNet ``input/+target/``, MSPFN
  ``inputcrop/+cleancrop/``, Syn2Real ``rain/+norain/``, GridDehazeNet ``hazy/+clear/``, DDN
  ``rainy_image/+ground_truth/``). Target names, tried in order: the same name; the name without trailing
  ``_<number>`` parts (SOTS ``0001_0.8_0.2`` -> ``0001``, ITS ``1400_1`` -> ``1400``, DDN ``1_1`` -> ``1``);
  without a Rain100L/H scale tag (``norain-1x2`` -> ``norain-1``); a weather suffix (rain, rainy, hazy, haze, snow,
  snowy) swapped for a clean one (GT, ground_truth, groundtruth, clean, clear, norain, target) or dropped:
  ``35_outdoor_hazy`` -> ``35_outdoor_GT``, ``1rain`` -> ``1ground_truth``, ``12_rain`` -> ``12_clean``. An image
  below none of these folders takes its role from such a suffix and pairs with a target in its own folder (DDN's
  ``synthetic/1rain.jpg`` + ``1ground_truth.jpg``) or in a target folder beside its own (O-HAZE's
  ``dataset/35_outdoor_hazy.jpg`` + ``hazefree/35_outdoor_GT.jpg``). Side-by-side files (pix2pix ``A|B`` in one
  image, as DID-MDN ships) are not pairs on disk: split them into two files first.

An input is an image below an input folder (sub-folders allowed, as in OTS's ``haze/part1/``); its target is looked
up below a target folder with the same parent, any image suffix (SOTS pairs ``.jpg`` inputs with ``.png`` targets).
Folder names and file names match case-insensitively.

Splits: a ``train`` / ``val`` / ``test`` word in the path above the input folder (``train/``, ``test_a/``,
``Snow100K-testset/``, ``Testing/``) is the set's own split, and its training part gives ``val_fraction`` of its
pairs to ``val``; without one, pairs are split by a hash. The hash is of the *target*, so the 15 renderings of one
Outdoor-Rain scene never straddle train and test. A caller's ``split`` puts every pair in that split instead,
whatever the folder names say. Nothing is dropped silently: inputs without a target, unreadable files, pairs whose
sizes differ, repeated names, targets no input used, images outside both folders and the listing's skipped entries
(hidden files, links out of the folder unless ``follow_links_out``, ...) are all counted in :class:`FolderImport`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import filesystem_for, has_scheme, list_files
from fairweather.contracts.vocab import IMAGE_SUFFIXES
from fairweather.imaging import upright_size
from fairweather.synth.paired import GENERATED_DATASETS, PairRecord, hash_fraction, split_for

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


#: One name rule: a full match on the input's stem (case-insensitive) with a ``key`` group (and optionally ``sep``),
#: and the target stems it gives, ``{key}`` / ``{sep}`` replaced, tried in order.
NameRule = tuple[str, tuple[str, ...]]
_SAME_NAME: NameRule = (r"(?P<key>.+)", ("{key}",))


@dataclass(frozen=True)
class Layout:
    """How one published set stores its pairs (see the module docstring's table)."""

    weather: str | None  # None: the caller must say
    input_dirs: tuple[str, ...]
    target_dirs: tuple[str, ...]  # tried in this order
    #: Name rules tried in order; the first target found wins.
    names: tuple[NameRule, ...] = (_SAME_NAME,)
    #: Stems (full match, case-insensitive) that make an image below neither an input nor a target folder an
    #: input / a target; None: such images are not part of the layout.
    input_names: str | None = None
    target_names: str | None = None


_WEATHER_WORDS = r"(?:rain|rainy|hazy|haze|snow|snowy)"
_CLEAN_WORDS = ("GT", "ground_truth", "groundtruth", "clean", "clear", "norain", "target")

LAYOUTS: dict[str, Layout] = {
    "outdoor_rain": Layout("rain", ("in", "input"), ("gt",), ((r"(?P<key>.+?)_s\d+_a\d+", ("{key}",)),)),
    "raindrop": Layout("rain", ("data",), ("gt",), ((r"(?P<key>.+)_rain", ("{key}_clean",)),)),
    "spa": Layout(
        "rain",
        ("rain",),
        ("norain", "gt"),
        ((r"(?P<key>.+?)(?:_?rain)?", ("{key}", "no{key}", "{key}gt", "{key}_gt", "{key}_norain")),),
    ),
    "ots": Layout("haze", ("hazy", "haze"), ("clear", "gt"), ((r"(?P<key>[^_]+)(?:_[0-9.]+)*", ("{key}",)),)),
    "snow100k": Layout("snow", ("synthetic",), ("gt",)),
    "generic": Layout(
        None,
        (
            "input",
            "inputs",
            "inputcrop",
            "rain",
            "rainy",
            "rainy_image",
            "hazy",
            "haze",
            "snow",
            "snowy",
            "degraded",
            "lq",
        ),
        (
            "target",
            "targets",
            "gt",
            "groundtruth",
            "ground_truth",
            "clean",
            "cleancrop",
            "norain",
            "clear",
            "hazefree",
            "haze_free",
            "label",
            "hq",
        ),
        (
            _SAME_NAME,
            (r"(?P<key>[^_]+)(?:_[0-9.]+)+", ("{key}",)),  # SOTS / OTS / ITS renderings, DDN's N_k
            (r"(?P<key>.+)x[234]", ("{key}",)),  # Rain100L/H's rain/X2/norain-1x2 -> norain/norain-1
            (
                rf"(?P<key>.+?)(?P<sep>[_-]?){_WEATHER_WORDS}",
                (*(f"{{key}}{{sep}}{word}" for word in _CLEAN_WORDS), "{key}"),
            ),
        ),
        input_names=rf".+?[_-]?{_WEATHER_WORDS}",
        target_names=r".+?[_-]?(?:gt|ground_?truth|clean|clear|norain|target)",
    ),
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
    #: Pairs split by the hash of their target (no split given, no split word in a folder above them).
    hash_split: int = 0
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
    """``(width, height)`` as training and scoring see the image (EXIF orientation applied), from its header only
    (PIL reads no pixels here)."""
    fs, path = filesystem_for(uri)
    with fs.open_input_file(path) as f, Image.open(f) as image:
        return upright_size(image)


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
    if not _DATASET_NAME.fullmatch(dataset) or dataset in GENERATED_DATASETS:
        raise PairedFolderError(
            f"dataset name '{dataset}' must be letters, digits, '.', '_' or '-' and not "
            f"{' or '.join(map(repr, GENERATED_DATASETS))} (the generated pairs)"
        )
    rules = LAYOUTS[layout]
    weather = weather or rules.weather
    if weather not in PAIRED_WEATHERS:
        raise PairedFolderError(
            f"layout '{layout}' does not say the pairs' weather: give it with --weather "
            f"({' | '.join(PAIRED_WEATHERS)})" + ("" if weather is None else f", not {weather!r}")
        )
    return rules, weather


_Group = tuple[str, ...]  # the path parts above an input or target folder: pairs come from one group
#: Where an input's target may be: ``(group, target folder name)``; the name ``""`` is the input's own folder.
_Place = tuple[_Group, str]
_SPLITS = ("train", "val", "test")


def _index(
    uris: list[str], root: str, rules: Layout
) -> tuple[list[tuple[tuple[_Place, ...], tuple[str, ...], str]], dict[tuple[_Group, str, str], str], int]:
    """Sort the listed images into inputs ``(places of their target, relative parts, uri)``, targets
    ``{(group, target folder, lower-case stem): uri}`` and a count of the others."""
    inputs, targets, other = [], {}, 0
    input_dirs, target_dirs = set(rules.input_dirs), set(rules.target_dirs)
    input_names = re.compile(rules.input_names, re.IGNORECASE) if rules.input_names else None
    target_names = re.compile(rules.target_names, re.IGNORECASE) if rules.target_names else None
    for uri in uris:
        parts = _relative_parts(uri, root)
        folders = [p.lower() for p in parts[:-1]]
        stem = PurePosixPath(parts[-1]).stem
        # The nearest input or target folder above the file decides its role.
        role = next(
            (i for i in reversed(range(len(folders))) if folders[i] in input_dirs | target_dirs), None
        )
        if role is None:
            # No folder says: the name may (DDN's 1rain / 1ground_truth, O-HAZE's 35_outdoor_hazy).
            # A clean word is tested first: "norain" ends in "rain".
            if target_names and target_names.fullmatch(stem):
                targets.setdefault((parts[:-1], "", stem.lower()), uri)
            elif input_names and input_names.fullmatch(stem):
                beside = tuple((parts[:-2], d) for d in rules.target_dirs) if len(parts) > 1 else ()
                inputs.append((((parts[:-1], ""), *beside), parts, uri))
            else:
                other += 1
        elif folders[role] in input_dirs:
            inputs.append((tuple((parts[:role], d) for d in rules.target_dirs), parts, uri))
        else:
            # Register the target under every target folder above it with no input folder between, so nested
            # releases such as OTS's clear/clear/0001.jpg pair with haze/part1/0001_0.8_0.2.jpg.
            for i in range(role, -1, -1):
                if folders[i] in input_dirs:
                    break
                if folders[i] in target_dirs:
                    targets.setdefault((parts[:i], folders[i], stem.lower()), uri)
    return inputs, targets, other


def _target_stems(stem: str, rules: Layout) -> list[str]:
    """The target stems ``stem`` may pair with, in the layout's order (lower case)."""
    stems = []
    for pattern, templates in rules.names:
        match = re.fullmatch(pattern, stem, re.IGNORECASE)
        if match:
            fields = {name: value or "" for name, value in match.groupdict().items()}
            stems += [t.format(**fields).lower() for t in templates]
    return list(dict.fromkeys(stems))


def skip_counts(skipped: dict[str, list[str]]) -> str:
    """``"3 link_outside_root (...), 1 hidden"``: a listing's skipped entries by reason, with a hint where one helps."""
    hints = {"link_outside_root": "set data.follow_links_out=true to follow them"}
    return ", ".join(
        f"{len(uris)} {reason}" + (f" ({hints[reason]})" if reason in hints else "")
        for reason, uris in sorted(skipped.items(), key=lambda item: -len(item[1]))
    )


def scan_paired_folder(
    folder: str,
    layout: str,
    dataset: str,
    *,
    weather: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split: str | None = None,
    follow_links_out: bool = False,
) -> FolderImport:
    """Pair the images below ``folder`` (local path or URI) by ``layout``'s rules; see the module docstring.

    dataset: the ``dataset`` column and the first part of every ``pair_id`` (``<dataset>/<input path, no suffix>``).
    weather: overrides the layout's weather (required for ``generic``).
    split: every pair's split (train / val / test); None: the folder names' split, else a hash of the target.
    follow_links_out: follow links whose target lies outside ``folder`` (``data.follow_links_out``).
    """
    rules, weather = _check_arguments(layout, dataset, weather)
    if min(val_fraction, test_fraction) < 0 or val_fraction + test_fraction >= 1:
        raise PairedFolderError(
            f"val_fraction and test_fraction must be >= 0 with a sum below 1; got {val_fraction}, {test_fraction}"
        )
    if split is not None and split not in _SPLITS:
        raise PairedFolderError(f"split must be one of {', '.join(_SPLITS)}; got {split!r}")
    listing = list_files(folder, suffixes=IMAGE_SUFFIXES, follow_links_out=follow_links_out)
    skipped = dict(listing.skipped)
    if listing.bad_names:
        skipped["name_not_utf8"] = list(listing.bad_names)
    root = filesystem_for(folder)[1]
    inputs, targets, other = _index(listing.files, root, rules)
    if not inputs:
        by_name = " or a weather suffix in the file name (_hazy, rain, ...)" if rules.input_names else ""
        not_listed = f"; the listing skipped {skip_counts(skipped)}" if skipped else ""
        raise PairedFolderError(
            f"no images below an input folder ({', '.join(f'{d}/' for d in rules.input_dirs)}){by_name} of "
            f"layout '{layout}' in {folder} ({len(listing.files)} image(s) found elsewhere{not_listed}); pass the "
            f"folder that holds both the input and the target folders"
        )
    pairs, unmatched, unreadable, mismatch, duplicates, used, ids = [], [], [], [], [], set(), set()
    hashed = 0
    for places, parts, uri in inputs:
        stems = _target_stems(PurePosixPath(parts[-1]).stem, rules)
        target = next(
            (
                targets[(group, d, stem)]
                for group, d in places
                for stem in stems
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
        given = split or _split_of_folders((PurePosixPath(root).name, *places[0][0]))
        pair_split = split_for(u, val_fraction, test_fraction) if given is None else given
        hashed += given is None
        if (
            given == "train" and split is None
        ):  # the set's own test split; its training part lends pairs to val
            pair_split = split_for(u, val_fraction, 0.0)
        pairs.append(PairRecord(pair_id, dataset, pair_split, weather, uri, target, size[0], size[1]))
    return FolderImport(
        pairs=tuple(pairs),
        unmatched=tuple(unmatched),
        unreadable=tuple(unreadable),
        size_mismatch=tuple(mismatch),
        duplicates=tuple(duplicates),
        unused_targets=len(set(targets.values()) - used),
        other_files=other,
        skipped=skipped,
        hash_split=hashed,
    )
