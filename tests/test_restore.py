"""``fairweather restore``: a folder with hostile files and an EXIF-rotated photo, tiling, refusals, wrong networks.

Checkpoints are built here from the smoke profile's tiny networks (no training needed to test the plumbing). The
"identity" checkpoint has its last convolution zeroed, so the residual network returns its input exactly: what
comes out is then what went in, which makes orientation, size and format checks exact.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from fairweather.cli import main
from fairweather.contracts.config import load_config, to_dict
from fairweather.data.batches import to_tensor
from fairweather.models import build_model, restore_tiled
from fairweather.models.tlc import StatsPool
from fairweather.training.checkpoint_file import state_path
from fairweather.training.restorer import load_restorer
from fairweather.training.state import FORMAT_VERSION, save_state
from fairweather.training.validate import to_uint8

ORIENTATION, MAKE = 0x0112, 0x010F


def checkpoint_state(
    arch: str = "nafnet", *, identity: bool = False, conditioned: bool = False, **extra: object
) -> dict:
    """A state dict as training writes it (``model.pt`` keys) for the smoke profile's ``arch`` network;
    ``conditioned``: its weather modulation set at random, so each weather restores differently."""
    cfg = load_config("smoke", [f"model.arch={arch}"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():
        if identity:
            model.ending.weight.zero_()
            model.ending.bias.zero_()
        if conditioned:
            for parameter in model.film.parameters():
                parameter.normal_(0, 0.5)
    weights = model.state_dict()
    state = {"format": FORMAT_VERSION, "arch": arch, "model": weights, "teacher": weights}
    return {**state, "prompt_context": None, "step": 7, "config": to_dict(cfg), **extra}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("checkpoints")
    save_state(checkpoint_state(identity=True), root / "identity")
    save_state(checkpoint_state(), root / "random")
    save_state(checkpoint_state(conditioned=True), root / "conditioned")
    torch.save(checkpoint_state("msbdn"), root / "msbdn.pt")
    (root / "artifact").mkdir()
    torch.save(checkpoint_state(), root / "artifact" / "model.pt")  # a training run's model/ artifact
    names = ("identity", "random", "conditioned", "msbdn.pt", "artifact")
    return {name.removesuffix(".pt"): str(root / name) for name in names}


def pattern(height: int, width: int) -> np.ndarray:
    """Large flat colour blocks (JPEG keeps them nearly exact) that show any rotation or flip."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (220, 30, 30)
    rgb[: height // 2, width // 2 :] = (30, 200, 40)
    rgb[height // 2 :, : width // 3] = (20, 40, 210)
    rgb[height // 2 :, width // 3 :] = (230, 230, 60)
    return rgb


def rotated_jpeg() -> bytes:
    """A 48x32 JPEG whose EXIF says "rotate 90 degrees clockwise to show" (orientation 6), plus a Make tag."""
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE] = 6, "fairweather-test"
    buffer = io.BytesIO()
    Image.fromarray(pattern(32, 48)).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def encoded(rgb: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **options)
    return buffer.getvalue()


def hostile_folder(root: Path) -> Path:
    folder = root / "photos"
    good = encoded(pattern(24, 40), "PNG")
    write(folder / "plain.png", good)
    write(folder / "rain" / "rotated.jpg", rotated_jpeg())
    write(folder / "rain" / "lzw.tiff", encoded(pattern(20, 28), "TIFF", compression="tiff_lzw"))
    write(folder / "deep16.png", encoded(np.full((16, 16), 40000, np.uint16), "PNG"))
    write(folder / "bmp_named.jpg", encoded(pattern(16, 20), "BMP"))
    write(folder / "gif_named.jpg", encoded(pattern(16, 20), "GIF"))  # not writable back: a PNG, named so
    write(folder / "truncated.jpg", encoded(pattern(64, 64), "JPEG")[:300])
    write(folder / "bomb.png", encoded(pattern(80, 80), "PNG"))  # over data.max_image_pixels=5000 below
    rgba = np.dstack([pattern(16, 16), np.full((16, 16), 0, np.uint8)])  # fully transparent
    write(folder / "rgba.png", encoded(rgba, "PNG"))
    write(folder / "empty.png", b"")
    write(folder / "text.png", b"this is not an image\n")
    write(folder / ".hidden.png", good)
    write(folder / "notes.txt", b"not listed: wrong suffix")
    return folder


def test_folder_with_hostile_files_and_an_exif_rotated_photo(tmp_path, checkpoints, capsys):
    folder, out = hostile_folder(tmp_path), tmp_path / "out"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    argv = ["restore", "--checkpoint", checkpoints["identity"], "--input", str(folder), "--output", str(out)]
    assert main([*argv, "data.max_image_pixels=5000"]) == 0
    captured = capsys.readouterr()
    assert "11 listed, 2 not listed (1 hidden, 1 suffix); 7 restored" in captured.out
    failed = {Path(uri).name for uri in re.findall(r"restore: skipped (\S+) \(", captured.err)}
    assert failed == {"truncated.jpg", "empty.png", "text.png", "bomb.png"}
    assert "(decode: truncated" in captured.err and "(decode: too_large" in captured.err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # inputs untouched

    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = ["bmp_named.jpg", "deep16.png", "gif_named.jpg.png", "plain.png", "rain/lzw.tiff", "rain/rotated.jpg",
                "rgba.png"]  # fmt: skip
    assert written == expected
    formats = {name: Image.open(out / name).format for name in written}
    assert formats == {"bmp_named.jpg": "BMP", "deep16.png": "PNG", "gif_named.jpg.png": "PNG", "plain.png": "PNG", "rgba.png": "PNG",
                       "rain/lzw.tiff": "TIFF", "rain/rotated.jpg": "JPEG"}  # fmt: skip
    assert Image.open(out / "rain/lzw.tiff").info["compression"] == "tiff_lzw"
    # Lossless formats through the identity network: the very same pixels (16 bits are written in 8).
    assert np.array_equal(np.asarray(Image.open(out / "plain.png")), pattern(24, 40))
    assert np.array_equal(np.asarray(Image.open(out / "rain/lzw.tiff")), pattern(20, 28))
    assert np.asarray(Image.open(out / "deep16.png").convert("RGB")).max() == round(40000 / 65535 * 255)
    assert (np.asarray(Image.open(out / "rgba.png")) == 255).all()  # transparent: flattened onto white

    # The rotated photo comes out upright (as a viewer shows the input), its orientation set to upright.
    result = Image.open(out / "rain/rotated.jpg")
    upright = ImageOps.exif_transpose(Image.open(folder / "rain/rotated.jpg"))
    assert result.size == upright.size == (32, 48)
    assert result.getexif().get(ORIENTATION, 1) == 1 and result.getexif()[MAKE] == "fairweather-test"
    difference = np.abs(np.asarray(result, np.int16) - np.asarray(upright, np.int16))
    assert difference.mean() < 3.0


def test_a_large_image_is_restored_in_tiles(tmp_path, checkpoints):
    restorer = load_restorer(checkpoints["random"], overrides=["model.tile=32", "model.tile_overlap=8"])
    seen: list[tuple[int, int]] = []
    restorer.model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    rgb = pattern(90, 70)
    restored = restorer.restore(rgb)
    assert restored.shape == rgb.shape and restored.dtype == np.uint8
    assert max(max(size) for size in seen) == 32 and len(seen) == 4 * 3  # never more than one tile at a time
    with torch.no_grad():
        expected = to_uint8(restore_tiled(restorer.model, to_tensor([rgb]), 32, 8).clamp(0, 1))
    assert np.array_equal(restored, expected)

    # The command line gives the same result for a single file (and a lossless PNG keeps it exactly).
    write(tmp_path / "big.png", encoded(rgb, "PNG"))
    argv = ["restore", "--checkpoint", checkpoints["random"], "--input", str(tmp_path / "big.png")]
    assert main([*argv, "--output", str(tmp_path / "out"), "model.tile=32", "model.tile_overlap=8"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "big.png")), restored)


def test_the_network_is_told_the_weather_given_or_named_by_the_folder(tmp_path, checkpoints, capsys):
    """--weather for every file; without it, a file's folder (rain/, hazy/) names its weather, else unknown."""
    restorer = load_restorer(checkpoints["conditioned"])
    rgb = pattern(40, 56)
    for folder in ("rain", "hazy", "other"):
        write(tmp_path / "in" / folder / "a.png", encoded(rgb, "PNG"))
    argv = ["restore", "--checkpoint", checkpoints["conditioned"], "--input", str(tmp_path / "in")]
    assert main([*argv, "--output", str(tmp_path / "hinted")]) == 0
    told = "restore: the network was told the weather: haze 1, rain 1, unknown 1 (--weather, else a folder"
    assert told in capsys.readouterr().out
    assert main([*argv, "--output", str(tmp_path / "snow"), "--weather", "snow"]) == 0
    assert "restore: the network was told the weather: snow 3\n" in capsys.readouterr().out
    expected = {weather: restorer.restore(rgb, weather) for weather in ("rain", "haze", "snow", None)}
    assert len({e.tobytes() for e in expected.values()}) == 4  # each weather restores differently
    for folder, weather in (("rain", "rain"), ("hazy", "haze"), ("other", None)):
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "hinted" / folder / "a.png")), expected[weather]
        )
        assert np.array_equal(np.asarray(Image.open(tmp_path / "snow" / folder / "a.png")), expected["snow"])


def test_a_model_pt_restores_with_its_own_config(tmp_path, checkpoints, capsys):
    """The msbdn checkpoint restores with no --config although the smoke profile's network is a NAFNet."""
    write(tmp_path / "in" / "a.jpg", encoded(pattern(40, 56), "JPEG"))
    argv = ["restore", "--checkpoint", checkpoints["msbdn"], "--input", str(tmp_path / "in")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "(msbdn network of step 7, cpu)" in out and '"arch"' not in out  # its JSON: with -v only
    assert Image.open(tmp_path / "out" / "a.jpg").size == (56, 40)
    # A run's model/ artifact folder (model.pt inside) is read the same way.
    argv = ["restore", "--checkpoint", checkpoints["artifact"], "--input", str(tmp_path / "in")]
    assert main([*argv, "--output", str(tmp_path / "out2")]) == 0
    assert Image.open(tmp_path / "out2" / "a.jpg").size == (56, 40)


def test_the_tlc_window_follows_the_crop_the_checkpoint_trained_on_not_a_given_config(tmp_path):
    """A network trained on 128-px crops pools over 192-px windows at inference (1.5 x its crop), restored with its
    own config or with a --config whose train.crop_size (the smoke profile's 64) says nothing about it."""
    state = checkpoint_state()
    state["config"]["train"]["crop_size"] = 128
    save_state(state, tmp_path / "crop128")
    for cfg in (None, load_config("smoke")):
        model = load_restorer(str(tmp_path / "crop128"), cfg, device="cpu").model
        assert {m.kernel * m.scale for m in model.modules() if isinstance(m, StatsPool)} == {192}


def test_refuses_to_write_among_the_inputs(tmp_path, checkpoints, capsys):
    folder = hostile_folder(tmp_path)
    write(folder / "photos" / "plain.png", encoded(pattern(24, 40), "PNG"))  # photos/photos/plain.png
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cases = {
        str(folder): "the input folder",
        str(folder / "rain"): "inside the input folder",
        str(tmp_path): "results would land inside the input folder",  # photos/plain.png is an input
    }
    for output, message in cases.items():
        argv = [
            "restore",
            "--checkpoint",
            checkpoints["identity"],
            "--input",
            str(folder),
            "--output",
            output,
        ]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    single = ["--input", str(folder / "plain.png"), "--output", str(folder)]
    assert main(["restore", "--checkpoint", checkpoints["identity"], *single]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_another_network_or_format_is_refused_naming_both(tmp_path, checkpoints, capsys):
    write(tmp_path / "in" / "a.png", encoded(pattern(16, 16), "PNG"))
    io_args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]

    def refused(checkpoint: str, *extra: str) -> str:
        assert main(["restore", "--checkpoint", checkpoint, *io_args, *extra]) == 2
        return capsys.readouterr().err

    err = refused(checkpoints["random"], "--config", "smoke", "model.arch=msbdn")
    assert "holds a 'nafnet' network" in err and "model.arch='msbdn'" in err and "--config smoke" in err
    err = refused(checkpoints["random"], "--config", "smoke", "model.nafnet.width=8")
    assert "model.nafnet.width: 8 vs 16" in err
    err = refused(checkpoints["random"], "model.nafnet.width=8")  # no --config: the stored one, overridden
    assert "model.nafnet.width: 8 vs 16" in err and "the overrides ['model.nafnet.width=8']" in err
    other_format = tmp_path / "format99.pt"
    torch.save(checkpoint_state(format=99), other_format)
    assert "has format 99, this code reads 1" in refused(str(other_format))
    newer = checkpoint_state()
    newer["config"]["model"]["future_key"] = 1
    torch.save(newer, tmp_path / "newer.pt")
    err = refused(str(tmp_path / "newer.pt"))
    assert "future_key" in err and "does not load with this version of fairweather" in err
    (tmp_path / "nothing").mkdir()
    err = main(
        [
            "restore",
            "--checkpoint",
            checkpoints["random"],
            "--input",
            str(tmp_path / "nothing"),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    assert err == 2 and f"--input '{tmp_path / 'nothing'}' lists no image files" in capsys.readouterr().err
    err = refused(str(tmp_path / "missing"))
    assert f"checkpoint {tmp_path / 'missing'} does not exist (a training run's folder" in err
    assert "Errno" not in err  # one line of ours, not pyarrow's
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # The matching explicit config is accepted.
    assert main(["restore", "--checkpoint", checkpoints["random"], *io_args, "--config", "smoke"]) == 0


def test_a_training_runs_folder_means_its_newest_checkpoint(tmp_path, checkpoints, capsys):
    run = tmp_path / "train" / "train-0123456789ab"
    for name, kind in (
        ("checkpoint_2026-12-06_10-00-00.000001", "random"),
        ("checkpoint_2026-12-06_10-05-00.1", "identity"),
    ):
        shutil.copytree(checkpoints[kind], run / name)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray Train's file beside them
    (run / "checkpoint_2026-12-06_10-09-00.2").mkdir()  # one that never got its state: not a checkpoint
    assert state_path(str(run)) == f"{run}/checkpoint_2026-12-06_10-05-00.1/state.pt"
    image = pattern(16, 16)
    write(tmp_path / "in" / "a.png", encoded(image, "PNG"))
    argv = [
        "restore",
        "--checkpoint",
        str(run),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), image)  # the identity network's


def test_every_file_failing_is_an_error(tmp_path, checkpoints, capsys):
    write(tmp_path / "in" / "a.png", b"")
    write(tmp_path / "in" / "b.jpg", b"GIF89a broken")
    argv = ["restore", "--checkpoint", checkpoints["identity"], "--input", str(tmp_path / "in")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert "every one of the 2 listed files failed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_24_megapixel_photo_restores_in_bounded_memory(tmp_path, checkpoints):
    """6000x4000 at the smoke profile's 512-px tiles: the peak memory is the image's few float copies plus one
    tile of activations (a whole-image forward of this NAFNet would need over 10 GB)."""
    write(tmp_path / "in" / "big.jpg", encoded(pattern(4000, 6000), "JPEG", quality=90))
    code = (
        "import resource, sys; from fairweather.cli import main; rc = main(sys.argv[1:]); "
        "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    argv = ["restore", "--checkpoint", checkpoints["random"], "--input", str(tmp_path / "in")]
    argv += ["--output", str(tmp_path / "out"), "model.tile=512", "model.tile_overlap=32"]
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    peak_gib = int(re.search(r"maxrss_kib (\d+)", result.stdout)[1]) / 2**20
    assert peak_gib < 4.0, f"peak memory {peak_gib:.2f} GiB"
    assert Image.open(tmp_path / "out" / "big.jpg").size == (6000, 4000)
