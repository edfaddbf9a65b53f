"""Build ``devdata/``: small sets of real benchmark pairs, taken from public repositories that ship test samples.

    .venv/bin/python benchmarks/build_devdata.py --mirrors /work/.mirror [--out devdata]

``--mirrors`` is a folder of bare git mirrors, one per source repository, at ``<mirrors>/<owner>+<name>/repo`` (the
layout the session's ``fetch github:<owner>/<name>`` gives). Every file is read at the commit pinned in
:data:`SOURCES`, so a rebuild gives the same bytes whatever the mirrors' newest commit is. A missing mirror or
commit stops the build, before anything is written, with one line naming the repository to fetch.

It writes, for each set (folder name, weather):

- ``rain100h`` (rain): Rain100H test, 100 pairs (MSPFN's ``inputcrop/`` + ``cleancrop/``, 480 x 320);
- ``rain100l`` (rain): Rain100L test samples, 15 pairs (MFDNet's 3, AirNet's 2, MSCIANet's 10: ``rain-001`` to
  ``rain-010``, 480 x 320);
- ``rain12`` (rain): Rain12 (Li et al.), all 12 pairs (MSCIANet's ``Rain12/rain`` + ``norain``, 480 x 320);
- ``ddn_sirr_test`` (rain): the DDN-SIRR synthetic test pairs (Fu et al.'s DDN data, as SIRR's test), 20 pairs;
- ``sots_outdoor`` (haze): RESIDE SOTS-outdoor test, the hazy images of the scenes numbered below 200 that
  have a clear image, 167 pairs (4 scenes have two hazy images); each pair is named after its hazy file, e.g.
  ``0001_0.8_0.2`` (C2PNet's ``images/SOTS/outdoor``, at a commit before the folder was deleted; about 550 x 410);
- ``sots_indoor`` (haze): RESIDE SOTS-indoor test, 50 pairs, one hazy image of each scene (the fifth of its ten haze
  levels, ``<scene>_5.png``) with the scene's clear image (C2PNet, the same commit; 620 x 460);
- ``o_haze`` (haze): O-HAZE pairs, 3 (the ones whose two files are in the mirror: blobs of 4 MiB and more are not);
- ``dense_haze`` (haze): Dense-Haze (NTIRE 2019) test, 5 pairs, 51-55 (C2PNet's ``images/NH19``; 1600 x 1200);
- ``nh_haze`` (haze): NH-HAZE 2 (NTIRE 2021), 5 pairs, 21-25 (C2PNet's ``images/NH21``; 1600 x 1200).

each as ``devdata/<set>/input/<name>`` + ``devdata/<set>/target/<name>`` (one name per pair; a target keeps its own
suffix, so SOTS pairs a ``.jpg`` input with a ``.png`` target), the layout ``fairweather import-pairs --layout
generic --weather rain|haze`` reads. Files are copied byte for byte, never re-encoded. ``devdata/MANIFEST.csv``
names every file's source: set, weather, role, file, source_repo, commit, source_path, licence (the first line of
the repository's licence file at that commit, or "none stated"), sha256. ``devdata/`` is git-ignored and never
committed: most of these repositories state no licence (see docs/licences.md, "Data that is not shipped").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_COLUMNS = (
    "set",
    "weather",
    "role",
    "file",
    "source_repo",
    "commit",
    "source_path",
    "licence",
    "sha256",
)
LICENCE_FILES = re.compile(r"(licen[cs]e|copying)(\.(md|txt|rst))?", re.IGNORECASE)
LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class Source:
    """Pairs in one folder pair of one repository at one commit.

    An input's file name must fully match ``pattern`` (case-insensitive); its ``key`` group names the pair in
    devdata (after ``prefix``), and its named groups fill ``target`` (a file name below ``target_dir``, matched
    case-insensitively): SOTS-outdoor's ``{scene}`` gives several hazy inputs, each its own pair, one clear target.
    """

    repo: str
    commit: str
    input_dir: str
    target_dir: str
    pattern: str
    target: str
    prefix: str = ""


#: set -> (weather, sources). The commits are the ones devdata was built from.
SOURCES: dict[str, tuple[str, tuple[Source, ...]]] = {
    "rain100h": (
        "rain",
        (
            Source(
                "kuijiang94/MSPFN",
                "26e6073b163ac4f087d6c57bf55eba7ed20751d7",
                "model/test/test_data/R100H/inputcrop",
                "model/test/test_data/R100H/cleancrop",
                r"(?P<key>\d+)\.png",
                "{key}.png",
            ),
        ),
    ),
    "rain100l": (
        "rain",
        (
            Source(
                "qwangg/MFDNet",
                "868cdec4946938222cd88b40af117655f563ef8d",
                "Datasets/test/Rain100L/input",
                "Datasets/test/Rain100L/target",
                r"(?P<key>\d+)\.png",
                "{key}.png",
                prefix="mfdnet_",
            ),
            Source(
                "XLearning-SCU/2022-CVPR-AirNet",
                "bedea82f7f7a71f135bcc026fd02ea9f2feaa710",
                "test/derain/input",
                "test/derain/target",
                r"(?P<key>\d+)\.png",
                "{key}.png",
                prefix="airnet_",
            ),
            Source(
                "CoderLi365/MSCIANet",
                "0a1a76bc73b5d0abb4d9790bd2a955b111fc58bf",
                "Rain100L/rain",
                "Rain100L/norain",
                r"rain-(?P<key>\d+)\.png",
                "norain-{key}.png",
                prefix="mscianet_",
            ),
        ),
    ),
    "rain12": (
        "rain",
        (
            Source(
                "CoderLi365/MSCIANet",
                "0a1a76bc73b5d0abb4d9790bd2a955b111fc58bf",
                "Rain12/rain",
                "Rain12/norain",
                r"rain-(?P<key>\d+)\.png",
                "norain-{key}.png",
            ),
        ),
    ),
    "ddn_sirr_test": (
        "rain",
        (
            Source(
                "rajeevyasarla/Syn2Real",
                "147d5968f5f38404d8f3a8074aa9473d21f5bd28",
                "data/test/derain/SIRR_test/rain",
                "data/test/derain/SIRR_test/norain",
                r"input(?P<key>\d+)\.png",
                "input{key}.png",
            ),
        ),
    ),
    "sots_outdoor": (
        "haze",
        (
            Source(
                "YuZheng9/C2PNet",
                "9c6d113fc6313d672ceb6ceeaf29e00c3cd80f67",
                "images/SOTS/outdoor/hazy",
                "images/SOTS/outdoor/clear",
                r"(?P<key>(?P<scene>0[01]\d\d)_[\d.]+_[\d.]+)\.jpg",
                "{scene}.png",
            ),
        ),
    ),
    "sots_indoor": (
        "haze",
        (
            Source(
                "YuZheng9/C2PNet",
                "9c6d113fc6313d672ceb6ceeaf29e00c3cd80f67",
                "images/SOTS/indoor/hazy",
                "images/SOTS/indoor/clear",
                r"(?P<key>\d{4})_5\.png",
                "{key}.png",
            ),
        ),
    ),
    "o_haze": (
        "haze",
        (
            Source(
                "yellow444/SimpleDehaze",
                "c8e546fd123a5a2f0fd4d9ca427bc07def64e4c5",
                "SimpleDeHaze/dataset",
                "SimpleDeHaze/hazefree",
                r"(?P<key>\d+)_outdoor_hazy\.jpg",
                "{key}_outdoor_GT.jpg",
            ),
        ),
    ),
    "dense_haze": (
        "haze",
        (
            Source(
                "YuZheng9/C2PNet",
                "9c6d113fc6313d672ceb6ceeaf29e00c3cd80f67",
                "images/NH19/hazy",
                "images/NH19/clear",
                r"(?P<key>\d+)\.png",
                "{key}.png",
            ),
        ),
    ),
    "nh_haze": (
        "haze",
        (
            Source(
                "YuZheng9/C2PNet",
                "9c6d113fc6313d672ceb6ceeaf29e00c3cd80f67",
                "images/NH21/hazy",
                "images/NH21/clear",
                r"(?P<key>\d+)\.png",
                "{key}.png",
            ),
        ),
    ),
}


class BuildError(RuntimeError):
    """The build cannot go on (a mirror or commit is missing, a source gives no pairs)."""


def run_git(git_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """One git command on a bare mirror; the caller reads its return code."""
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=False)


def git(git_dir: Path, *args: str) -> bytes:
    """Run one git command on a bare mirror and return its stdout; a failure stops the build."""
    done = run_git(git_dir, *args)
    if done.returncode != 0:
        raise BuildError(f"git {' '.join(args)} in {git_dir} failed: {done.stderr.decode().strip()}")
    return done.stdout


def blob_bytes(git_dir: Path, commit: str, path: str) -> bytes | None:
    """The blob at ``commit:path``, or None where the mirror lacks it (too big for the snapshot) or holds an LFS pointer."""
    done = run_git(git_dir, "show", f"{commit}:{path}")
    if done.returncode != 0 or done.stdout.startswith(LFS_POINTER):
        return None
    return done.stdout


def list_dir(git_dir: Path, commit: str, folder: str) -> list[str]:
    """File names directly below ``folder`` at ``commit``, sorted."""
    out = git(git_dir, "ls-tree", "--name-only", f"{commit}:{folder}").decode()
    return sorted(line for line in out.splitlines() if line)


def licence_of(git_dir: Path, commit: str) -> str:
    """The first non-empty line of the repository's root licence file at ``commit``, or "none stated"."""
    for name in list_dir(git_dir, commit, ""):
        if LICENCE_FILES.fullmatch(name) and (data := blob_bytes(git_dir, commit, name)):
            lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
            if lines:
                return lines[0]
    return "none stated"


def mirror_of(mirrors: Path, repo: str) -> Path:
    """The bare git directory of ``repo`` below ``mirrors``."""
    return mirrors / repo.replace("/", "+") / "repo"


def check_mirrors(mirrors: Path, sets: list[str]) -> None:
    """Refuse (one line) before writing anything if a mirror or pinned commit is missing."""
    for name in sets:
        for src in SOURCES[name][1]:
            git_dir = mirror_of(mirrors, src.repo)
            if not (git_dir / "HEAD").is_file():
                raise BuildError(f"no mirror of {src.repo} at {git_dir}: fetch github:{src.repo} first")
            if run_git(git_dir, "cat-file", "-e", f"{src.commit}^{{commit}}").returncode != 0:
                raise BuildError(
                    f"the mirror of {src.repo} lacks commit {src.commit}: fetch github:{src.repo} again"
                )


def build_set(mirrors: Path, out: Path, name: str) -> tuple[list[dict[str, str]], int]:
    """Write one set's pairs; return its manifest rows and the number of pairs skipped (a file not in the mirror)."""
    weather, sources = SOURCES[name]
    rows: list[dict[str, str]] = []
    skipped = 0
    for src in sources:
        git_dir = mirror_of(mirrors, src.repo)
        licence = licence_of(git_dir, src.commit)
        targets = {t.lower(): t for t in list_dir(git_dir, src.commit, src.target_dir)}
        pairs = 0
        for input_name in list_dir(git_dir, src.commit, src.input_dir):
            match = re.fullmatch(src.pattern, input_name, re.IGNORECASE)
            target_name = targets.get(src.target.format(**match.groupdict()).lower()) if match else None
            if match is None or target_name is None:
                continue
            paths = {"input": f"{src.input_dir}/{input_name}", "target": f"{src.target_dir}/{target_name}"}
            data = {role: blob_bytes(git_dir, src.commit, path) for role, path in paths.items()}
            if any(blob is None for blob in data.values()):
                skipped += 1
                continue
            for role, path in paths.items():
                rel = PurePosixPath(
                    name, role, src.prefix + match["key"] + PurePosixPath(path).suffix.lower()
                )
                blob = data[role]
                assert blob is not None
                if (out / rel).exists():
                    raise BuildError(f"two sources of {name} give {rel}: set a prefix in SOURCES")
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(blob)
                sha = hashlib.sha256(blob).hexdigest()
                values = (name, weather, role, str(rel), src.repo, src.commit, path, licence, sha)
                rows.append(dict(zip(MANIFEST_COLUMNS, values, strict=True)))
            pairs += 1
        if pairs == 0:
            raise BuildError(f"{src.repo}@{src.commit[:10]} gives no pairs for {name} (table out of date?)")
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mirrors", type=Path, default=Path("/work/.mirror"), help="folder of <owner>+<name>/repo"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "devdata", help="output folder (default: devdata/)"
    )
    args = parser.parse_args(argv)
    try:
        check_mirrors(args.mirrors, list(SOURCES))
        all_rows: list[dict[str, str]] = []
        for name in SOURCES:
            shutil.rmtree(args.out / name, ignore_errors=True)
            rows, skipped = build_set(args.mirrors, args.out, name)
            all_rows += rows
            note = f" ({skipped} skipped: a file not in the mirror)" if skipped else ""
            print(f"{name}: {len(rows) // 2} pairs{note}")
    except BuildError as err:
        print(f"build_devdata: {err}", file=sys.stderr)
        return 2
    with (args.out / "MANIFEST.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(all_rows)
    print(f"wrote {len(all_rows)} files and {args.out / 'MANIFEST.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
