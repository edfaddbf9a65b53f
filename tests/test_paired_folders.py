"""The paired-folder adapter on tiny fake copies of each published layout, and the import stage on top of it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairweather.contracts.config import load_config
from fairweather.contracts.io import resolve_uri
from fairweather.contracts.tables import TableStore
from fairweather.data.paired_folders import LAYOUTS, PairedFolderError, scan_paired_folder
from fairweather.stages.synth.import_pairs import run_import_pairs
from fairweather.synth import SPLITS


def image(path: Path, size: tuple[int, int] = (12, 8), value: int = 0) -> None:
    """A tiny RGB image of ``size`` (width, height), format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def make(root: Path, *names: str) -> Path:
    for name in names:
        image(root / name)
    return root


def by_id(found) -> dict:
    return {p.pair_id: p for p in found.pairs}


def test_outdoor_rain_maps_renderings_to_their_scene_and_keeps_the_sets_test_folder(tmp_path):
    root = make(
        tmp_path / "Outdoor-Rain",
        "train/in/im_0001_s80_a04.png",
        "train/in/im_0001_s95_a06.png",
        "train/in/im_0002_s80_a04.png",
        "train/in/im_0009_s80_a04.png",  # its gt is missing
        "train/gt/im_0001.png",
        "train/gt/im_0002.png",
        "test_1/in/im_0003_s90_a05.png",
        "test_1/gt/im_0003.png",
    )
    found = scan_paired_folder(str(root), "outdoor_rain", "outdoor-rain")
    pairs = by_id(found)
    assert set(pairs) == {
        "outdoor-rain/train/in/im_0001_s80_a04",
        "outdoor-rain/train/in/im_0001_s95_a06",
        "outdoor-rain/train/in/im_0002_s80_a04",
        "outdoor-rain/test_1/in/im_0003_s90_a05",
    }
    first, second = (
        pairs["outdoor-rain/train/in/im_0001_s80_a04"],
        pairs["outdoor-rain/train/in/im_0001_s95_a06"],
    )
    assert first.target == second.target == str(root / "train/gt/im_0001.png")
    assert first.split == second.split in ("train", "val")  # one scene never straddles two splits
    assert pairs["outdoor-rain/test_1/in/im_0003_s90_a05"].split == "test"
    assert {p.weather for p in found.pairs} == {"rain"} and {p.dataset for p in found.pairs} == {
        "outdoor-rain"
    }
    assert {(p.width, p.height) for p in found.pairs} == {(12, 8)}
    assert found.unmatched == (str(root / "train/in/im_0009_s80_a04.png"),)


def test_raindrop_pairs_rain_with_clean_and_reads_test_a(tmp_path):
    root = make(
        tmp_path / "RainDrop",
        "train/data/0_rain.png",
        "train/gt/0_clean.png",
        "test_a/data/3_rain.jpg",
        "test_a/gt/3_clean.jpg",
        "test_b/data/4_rain.png",  # no gt folder in this split
    )
    found = scan_paired_folder(str(root), "raindrop", "raindrop")
    pairs = by_id(found)
    assert pairs["raindrop/test_a/data/3_rain"].split == "test"
    assert pairs["raindrop/train/data/0_rain"].target.endswith("train/gt/0_clean.png")
    assert len(found.unmatched) == 1 and found.unmatched[0].endswith("test_b/data/4_rain.png")


def test_spa_name_conventions_and_hash_split(tmp_path):
    root = make(
        tmp_path / "SPA",
        "a/rain/rain-7.png",
        "a/norain/norain-7.png",
        "b/rain/007.png",
        "b/gt/007gt.png",
        "c/rain/12_rain.png",
        "c/gt/12_gt.png",
        "d/rain/5.png",
        "d/norain/5.png",
    )
    found = scan_paired_folder(str(root), "spa", "spa")
    targets = {Path(p.input).name: Path(p.target).name for p in found.pairs}
    assert targets == {
        "rain-7.png": "norain-7.png",
        "007.png": "007gt.png",
        "12_rain.png": "12_gt.png",
        "5.png": "5.png",
    }
    assert not found.unmatched and {p.split for p in found.pairs} <= set(SPLITS)


def test_ots_strips_the_haze_parameters_across_suffixes_and_nested_folders(tmp_path):
    root = make(
        tmp_path / "RESIDE",
        "OTS/hazy/0001_0.8_0.2.jpg",
        "OTS/hazy/0001_0.95_0.16.jpg",
        "OTS/clear/0001.jpg",
        "SOTS/outdoor/hazy/0002_0.8_0.2.jpg",
        "SOTS/outdoor/gt/0002.png",
        "OTS_BETA/haze/part1/0003_1_0.2.jpg",
        "OTS_BETA/clear/clear/0003.jpg",
    )
    found = scan_paired_folder(str(root), "ots", "ots")
    targets = {Path(p.input).name: p.target for p in found.pairs}
    assert targets == {
        "0001_0.8_0.2.jpg": str(root / "OTS/clear/0001.jpg"),
        "0001_0.95_0.16.jpg": str(root / "OTS/clear/0001.jpg"),
        "0002_0.8_0.2.jpg": str(root / "SOTS/outdoor/gt/0002.png"),
        "0003_1_0.2.jpg": str(root / "OTS_BETA/clear/clear/0003.jpg"),
    }
    assert {p.weather for p in found.pairs} == {"haze"} and not found.unmatched


def test_snow100k_ignores_masks_but_counts_them(tmp_path):
    root = make(
        tmp_path / "Snow100K-training",
        "all/synthetic/beach_1.jpg",
        "all/gt/beach_1.jpg",
        "all/gt/beach_2.jpg",  # no synthetic image for it
        "all/mask/beach_1.jpg",
    )
    found = scan_paired_folder(str(root), "snow100k", "snow100k")
    assert [p.pair_id for p in found.pairs] == ["snow100k/all/synthetic/beach_1"]
    assert found.pairs[0].weather == "snow" and found.pairs[0].split in (
        "train",
        "val",
    )  # "-training" in the root
    assert (found.other_files, found.unused_targets) == (1, 1)


def test_generic_layout_needs_a_weather_and_arguments_are_checked(tmp_path):
    root = make(tmp_path / "mine", "input/x.png", "target/x.png")
    with pytest.raises(
        PairedFolderError,
        match=r"does not say the pairs' weather: give it with --weather \(rain \| haze \| snow\)$",
    ):
        scan_paired_folder(str(root), "generic", "mine")
    assert scan_paired_folder(str(root), "generic", "mine", weather="haze").pairs[0].weather == "haze"
    with pytest.raises(PairedFolderError, match="unknown layout 'nope'"):
        scan_paired_folder(str(root), "nope", "mine")
    with pytest.raises(PairedFolderError, match="sum below 1"):
        scan_paired_folder(str(root), "generic", "mine", weather="rain", val_fraction=0.5, test_fraction=0.5)
    for generated in ("synth", "synth-photo"):
        with pytest.raises(PairedFolderError, match="not 'synth' or 'synth-photo' \\(the generated pairs\\)"):
            scan_paired_folder(str(root), "generic", generated, weather="rain")
    with pytest.raises(PairedFolderError, match=r"no images below an input folder \(in/, input/\)"):
        scan_paired_folder(str(root / "target"), "outdoor_rain", "x")
    assert set(LAYOUTS) == {"outdoor_rain", "raindrop", "spa", "ots", "snow100k", "generic"}


def test_unreadable_and_mismatched_pairs_are_reported_not_dropped(tmp_path):
    root = make(tmp_path / "set", "input/ok.png", "target/ok.png", "input/big.png")
    image(root / "target/big.png", size=(20, 8))
    (root / "input/broken.png").write_bytes(b"not an image")
    image(root / "target/broken.png")
    image(root / "input/ok.jpg")  # same name as ok.png: one pair_id
    found = scan_paired_folder(str(root), "generic", "set", weather="rain")
    assert [p.pair_id for p in found.pairs] == ["set/input/ok"]
    assert found.size_mismatch == (f"{root / 'input/big.png'}: 12x8 vs target 20x8",)
    assert found.unreadable == (
        f"{root / 'input/broken.png'}: not an image format PIL can read (or a damaged header)",
    )
    # The listing is sorted, so ok.jpg makes the pair and ok.png is the repeat.
    assert found.pairs[0].input.endswith("ok.jpg") and found.duplicates == (str(root / "input/ok.png"),)


def test_sizes_are_compared_upright_as_training_decodes_them(tmp_path):
    """A camera JPEG stored 12x8 with EXIF orientation 6 (turn 90°) decodes 8x12: it pairs with an 8x12 target,
    and not with a 12x8 one, which training would fail to crop with it."""
    root = tmp_path / "set"
    turned = Image.Exif()
    turned[0x0112] = 6
    (root / "input").mkdir(parents=True)
    for name in ("upright", "sideways"):
        Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(
            root / f"input/{name}.jpg", exif=turned.tobytes()
        )
    image(root / "target/upright.png", size=(8, 12))
    image(root / "target/sideways.png", size=(12, 8))
    found = scan_paired_folder(str(root), "generic", "set", weather="rain")
    assert [p.pair_id for p in found.pairs] == ["set/input/upright"]
    assert found.size_mismatch == (f"{root / 'input/sideways.jpg'}: 8x12 vs target 12x8",)


def test_an_unreadable_target_is_named_itself_without_pythons_file_object(tmp_path, capsys):
    root = make(tmp_path / "set", "input/ok.png", "target/ok.png", "input/bad.png")
    (root / "target/bad.png").write_bytes(b"not an image")
    found = scan_paired_folder(str(root), "generic", "set", weather="rain")
    assert [p.pair_id for p in found.pairs] == ["set/input/ok"]
    assert found.unreadable == (
        f"{root / 'target/bad.png'} (target of {root / 'input/bad.png'}): not an image format PIL can read "
        "(or a damaged header)",
    )
    cfg = load_config("smoke", [f"data.tables={tmp_path / 'tables'}"])
    run_import_pairs(cfg, str(root), "generic", "set", weather="rain")
    out = capsys.readouterr().out
    assert "1 unreadable images, skipped: " in out and "NativeFile" not in out and "target/bad.png" in out


def test_hash_splits_are_stable_when_the_folder_grows(tmp_path):
    root = tmp_path / "set"
    for i in range(200):
        make(root, f"input/{i:04d}.png", f"target/{i:04d}.png")
    before = {
        p.pair_id: p.split for p in scan_paired_folder(str(root), "generic", "set", weather="snow").pairs
    }
    for i in range(200, 260):
        make(root, f"input/{i:04d}.png", f"target/{i:04d}.png")
    after = {
        p.pair_id: p.split for p in scan_paired_folder(str(root), "generic", "set", weather="snow").pairs
    }
    assert len(after) == 260 and all(after[k] == v for k, v in before.items())
    counts = Counter(after.values())
    assert 10 <= counts["val"] <= 45 and 10 <= counts["test"] <= 45  # ~26 each at 10 %


def test_import_stage_writes_relative_rows_once_and_reports_problems(tmp_path, capsys):
    root = make(
        tmp_path / "RainDrop", "train/data/0_rain.png", "train/gt/0_clean.png", "train/data/1_rain.png"
    )
    cfg = load_config("smoke", [f"data.tables={tmp_path / 'tables'}"])
    summary = run_import_pairs(cfg, str(root), "raindrop", "raindrop")
    out = capsys.readouterr().out
    assert summary.rows_written == 1 and "1 rain pairs" in out
    assert "1 inputs without a target" in out and "1_rain.png" in out
    store = TableStore(str(tmp_path / "tables"))
    row = store.read("paired").to_pylist()[0]
    assert row["input_uri"] == "../RainDrop/train/data/0_rain.png"
    assert Path(resolve_uri(store.root, row["target_uri"])) == root / "train/gt/0_clean.png"
    assert run_import_pairs(cfg, str(root), "raindrop", "raindrop").rows_written == 0
    with pytest.raises(PairedFolderError, match="no pairs found"):
        run_import_pairs(cfg, str(make(tmp_path / "lonely", "data/9_rain.png")), "raindrop", "lonely")


# The layouts real releases ship, copied as tiny fakes (the names and folders of MFDNet, MSPFN, Syn2Real,
# Removing_Rain, AirNet, O-HAZE, GridDehazeNet and DDN as their repositories store them).
REAL_LAYOUTS = {
    "mfdnet": (("Datasets/test/Rain100L/input/1.png", "Datasets/test/Rain100L/target/1.png"), "test"),
    "mspfn": (("test_data/R100H/inputcrop/1.png", "test_data/R100H/cleancrop/1.png"), None),
    "syn2real": (("SIRR_test/rain/input1.png", "SIRR_test/norain/input1.png"), None),
    "removing_rain": (("image/synthetic/1rain.jpg", "image/synthetic/1ground_truth.jpg"), None),
    "airnet_sots": (("test/dehaze/input/0001_0.8_0.2.jpg", "test/dehaze/target/0001.png"), "test"),
    "o_haze": (("SimpleDeHaze/dataset/35_outdoor_hazy.jpg", "SimpleDeHaze/hazefree/35_outdoor_GT.jpg"), None),
    "o_haze_release": (("hazy/01_outdoor_hazy.jpg", "GT/01_outdoor_GT.jpg"), None),
    "griddehaze": (("data/test/SOTS/indoor/hazy/1400_1.png", "data/test/SOTS/indoor/clear/1400.png"), "test"),
    "ddn": (("rainy_image/1_1.jpg", "ground_truth/1.jpg"), None),
    "rain100l_release": (("rain/X2/norain-1x2.png", "norain/norain-1.png"), None),
    "rainy_clean": (("rainy/a.png", "clean/a.png"), None),
    "hazy_clear": (("hazy/b.png", "clear/b.png"), None),
}


@pytest.mark.parametrize("name", sorted(REAL_LAYOUTS))
def test_generic_reads_the_layouts_real_releases_ship(tmp_path, name):
    (input_name, target_name), split = REAL_LAYOUTS[name]
    root = make(tmp_path / name, input_name, target_name, "README/notes.png")
    found = scan_paired_folder(str(root), "generic", name, weather="rain")
    assert [(p.input, p.target) for p in found.pairs] == [(str(root / input_name), str(root / target_name))]
    assert not found.unmatched and found.unused_targets == 0 and found.other_files == 1
    if split:
        assert found.pairs[0].split == split


def test_generic_name_pairs_stay_in_their_folder_and_clean_words_are_targets(tmp_path):
    root = make(
        tmp_path / "set",
        "a/1rain.jpg",
        "a/1ground_truth.jpg",
        "b/1rain.jpg",
        "b/1norain.jpg",  # "norain" ends in "rain" but is a target
        "c/2_hazy.png",  # no target anywhere
    )
    found = scan_paired_folder(str(root), "generic", "set", weather="rain")
    assert {Path(p.input).relative_to(root).as_posix(): Path(p.target).name for p in found.pairs} == {
        "a/1rain.jpg": "1ground_truth.jpg",
        "b/1rain.jpg": "1norain.jpg",
    }
    assert found.unmatched == (str(root / "c/2_hazy.png"),)


def test_split_argument_overrides_folder_names_and_the_hash(tmp_path, capsys):
    root = make(tmp_path / "set", "train/input/a.png", "train/target/a.png", "input/b.png", "target/b.png")
    found = scan_paired_folder(str(root), "generic", "set", weather="haze", split="test")
    assert {p.split for p in found.pairs} == {"test"} and len(found.pairs) == 2
    with pytest.raises(PairedFolderError, match="split must be one of"):
        scan_paired_folder(str(root), "generic", "set", weather="haze", split="dev")
    cfg = load_config("smoke", [f"data.tables={tmp_path / 'tables'}"])
    summary = run_import_pairs(cfg, str(root), "generic", "set", weather="haze", split="val")
    assert summary.splits == {"train": 0, "val": 2, "test": 0}
    assert "split by a hash" not in capsys.readouterr().out
    run_import_pairs(cfg, str(root), "generic", "other", weather="haze")  # b is in no train/test folder
    assert "1 pair(s) split by a hash of their target" in capsys.readouterr().out


def _linked_pairs(tmp_path: Path) -> Path:
    """A folder of links to pairs stored elsewhere (how a user assembles a set without copying it)."""
    store = make(tmp_path / "store", "a_rain.png", "a_clean.png", "b_rain.png", "b_clean.png")
    links = tmp_path / "links"
    for folder, suffix in (("input", "rain"), ("target", "clean")):
        (links / folder).mkdir(parents=True)
        for key in ("a", "b"):
            (links / folder / f"{key}.png").symlink_to(store / f"{key}_{suffix}.png")
    (links / ".hidden.png").write_bytes(b"")
    return links


def test_symlinked_pairs_are_imported_with_follow_links_out(tmp_path):
    links = _linked_pairs(tmp_path)
    cfg = load_config("smoke", [f"data.tables={tmp_path / 'tables'}", "data.follow_links_out=true"])
    summary = run_import_pairs(cfg, str(links), "generic", "linked", weather="rain")
    assert summary.num_pairs == 2
    rows = TableStore(str(tmp_path / "tables")).read("paired").to_pylist()
    assert sorted(Path(r["input_uri"]).name for r in rows) == ["a.png", "b.png"]  # the links' own names


def test_refused_links_are_named_with_counts_and_the_key_that_follows_them(tmp_path, capsys):
    links = _linked_pairs(tmp_path)
    cfg = load_config("smoke", [f"data.tables={tmp_path / 'tables'}"])
    with pytest.raises(PairedFolderError) as err:
        run_import_pairs(cfg, str(links), "generic", "linked", weather="rain")
    message = str(err.value)
    assert "4 link_outside_root (set data.follow_links_out=true to follow them)" in message
    assert "1 hidden" in message
    # Some pairs found, the rest skipped: the import prints the skipped entries by reason with their counts.
    make(links, "input/c.png", "target/c.png")
    assert run_import_pairs(cfg, str(links), "generic", "linked", weather="rain").num_pairs == 1
    assert "4 link_outside_root (set data.follow_links_out=true to follow them) listing entries skipped" in (
        capsys.readouterr().out
    )
    lonely = make(tmp_path / "lonely", "input/x.png")
    with pytest.raises(PairedFolderError, match=r"no pairs found .* \(1 inputs without a target\)"):
        run_import_pairs(cfg, str(lonely), "generic", "x", weather="rain")
