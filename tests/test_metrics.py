"""The scorer interface: known answers of the weight-free metrics, NIQE with basicsr's parameters, VLM-Vis through
the tiny VLM, missing weights at start-up, and the registry checked against pyiqa's own tables and source."""

from __future__ import annotations

import csv
import math
import os
import re
import time
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image

from fairweather.contracts.config.evaluate import MetricName, ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.metrics import METRICS, MissingWeightsError, build_scorer, build_scorers, missing_weights
from fairweather.tiny import resolve_model_ref
from fairweather.vlm import build_backend, rate_images

pyiqa = pytest.importorskip("pyiqa")
PYIQA_DIR = Path(pyiqa.__file__).parent


def noisy_gradient(size: int = 96, seed: int = 0) -> torch.Tensor:
    """``(1, 3, size, size)`` in [0, 1]: colour ramps plus Gaussian noise (sigma 0.1), fixed by ``seed``."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    ramps = torch.stack([xx, yy, (xx + yy) / 2])[None]
    noise = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return (ramps + 0.1 * noise).clamp(0, 1)


def test_registry_names_the_config_metrics_and_agrees_with_pyiqa():
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    assert set(METRICS) == set(get_args(MetricName))
    for spec in METRICS.values():
        if spec.pyiqa_name is None:
            continue
        pyiqa_cfg = DEFAULT_CONFIGS[spec.pyiqa_name]
        assert spec.higher_better == (not pyiqa_cfg.get("lower_better", False)), spec.name
        assert spec.reference == (pyiqa_cfg["metric_mode"] == "FR"), spec.name
        assert spec.needs_weights == bool(spec.files) and spec.licence.startswith("pyiqa"), spec.name
    assert {n for n, s in METRICS.items() if not s.needs_weights} == {"piqe", "psnr", "ssim"}


def test_pyiqa_files_are_those_pyiqa_itself_loads():
    """Each pyiqa weight file name appears in the metric's arch source (``default_model_urls``), so the start-up
    check looks for the very file pyiqa 0.1.16 would load (NIQE's parameters are ours, converted from basicsr)."""
    arch = {"nima": "nima", "musiq": "musiq", "liqe": "liqe", "brisque": "brisque", "lpips": "lpips"}
    for name, module in arch.items():
        source = (PYIQA_DIR / "archs" / f"{module}_arch.py").read_text()
        for file in METRICS[name].files:
            if file.store == "pyiqa":
                assert f"'{file.name}'" in source, (name, file.name)
    clip_source = (PYIQA_DIR / "archs" / "clip_model.py").read_text()
    for name in ("clipiqa", "liqe"):
        clip_files = [f for f in METRICS[name].files if f.name.startswith("clip/")]
        assert clip_files and all(f.url in clip_source for f in clip_files), name


def test_psnr_of_a_constant_offset_is_known():
    base = noisy_gradient() * 0.8 + 0.1  # in [0.1, 0.9]: the offset never clips
    psnr = build_scorer("psnr", ScorerConfig())
    # MSE = 0.05**2 on every pixel -> 10 log10(1 / 0.0025) = 26.0206 dB
    assert psnr(base, base + 0.05).item() == pytest.approx(10 * math.log10(1 / 0.05**2), abs=1e-3)
    assert psnr.spec.higher_better and psnr.spec.reference


def test_ssim_is_rgb_and_has_known_answers():
    ssim = build_scorer("ssim", ScorerConfig())
    image = noisy_gradient()
    assert ssim(image, image).item() == pytest.approx(1.0, abs=1e-6)
    # Two flat images a, b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.01^2.
    a, b = 102 / 255, 153 / 255
    flat_a, flat_b = torch.full((1, 3, 64, 64), a), torch.full((1, 3, 64, 64), b)
    assert ssim(flat_a, flat_b).item() == pytest.approx((2 * a * b + 1e-4) / (a * a + b * b + 1e-4), abs=1e-6)
    # RGB, not Y: a change of hue at equal luma still lowers SSIM.
    swapped = image[:, [2, 0, 1]]
    assert ssim(image, swapped).item() < 0.9


def test_piqe_known_values():
    piqe = build_scorer("piqe", ScorerConfig())
    # No active block in a flat image: PIQE = (0 + C1) / (0 + C1) * 100 = 100 by its definition.
    assert piqe(torch.full((1, 3, 96, 96), 0.5)).item() == pytest.approx(100.0)
    # Pinned with pyiqa 0.1.16, which reproduces pyiqa's published calibration (see test_calibration_values).
    assert piqe(noisy_gradient()).item() == pytest.approx(71.0116, abs=1e-3)
    assert not piqe.spec.higher_better and not piqe.spec.reference


def test_batches_score_like_single_images():
    images = torch.cat([noisy_gradient(64, seed) for seed in range(5)])
    targets = torch.cat([noisy_gradient(64, 10 + seed) for seed in range(5)])
    batched = build_scorer("psnr", ScorerConfig(batch_size=2))(images, targets)
    single = torch.cat(
        [build_scorer("psnr", ScorerConfig())(images[i : i + 1], targets[i : i + 1]) for i in range(5)]
    )
    assert batched.shape == (5,) and batched.dtype == torch.float32
    assert torch.allclose(batched, single, atol=1e-4)
    piqe = build_scorer("piqe", ScorerConfig(batch_size=3))(images)
    assert piqe.shape == (5,) and piqe.device.type == "cpu"


def test_full_reference_metric_needs_targets_and_no_reference_ignores_them():
    image = noisy_gradient(48)
    with pytest.raises(ValueError, match="full-reference"):
        build_scorer("psnr", ScorerConfig())(image)
    with pytest.raises(ValueError, match="must match"):
        build_scorer("ssim", ScorerConfig())(image, image[..., :32, :32])
    piqe = build_scorer("piqe", ScorerConfig())
    assert piqe(image, image).item() == piqe(image).item()


def test_missing_weights_fail_at_construction_with_the_prefetch_command(tmp_path):
    cfg = ScorerConfig(weights_dir=str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as err:
        build_scorer("musiq", cfg)
    message = str(err.value)
    assert str(tmp_path / "musiq_koniq_ckpt-e95806b9.pth") in message
    assert "fairweather prefetch" in message and "evaluate.metrics=[musiq]" in message
    assert time.perf_counter() - start < 5  # checked before loading anything: no download attempt, no retries
    assert missing_weights("musiq", cfg) == message and missing_weights("psnr", cfg) is None
    # Several metrics at once: every missing one is named in one error.
    with pytest.raises(MissingWeightsError) as err:
        build_scorers(["psnr", "brisque", "lpips"], cfg)
    assert "brisque_svm_weights.pth" in str(err.value) and "LPIPS_v0.1_alex-df73285e.pth" in str(err.value)


def test_an_uncached_vlm_is_reported_missing(tmp_path):
    reason = missing_weights("vlm_vis", ScorerConfig(), vlm=VLMConfig(model_id="nobody/no-such-vlm"))
    assert reason and "nobody/no-such-vlm" in reason and "fairweather prefetch" in reason
    assert missing_weights("vlm_vis", ScorerConfig(), vlm=VLMConfig(model_id="tiny:llava")) is None
    assert missing_weights("vlm_vis", ScorerConfig(), vlm=VLMConfig(model_id=str(tmp_path))) is None


def test_vlm_vis_is_the_labeling_rating(model_cache):
    vlm = VLMConfig(model_id="tiny:llava", dtype="float32", device="cpu")
    scorer = build_scorer("vlm_vis", ScorerConfig(batch_size=2), vlm=vlm, model_cache_dir=model_cache)
    images = torch.cat([noisy_gradient(64, seed) for seed in range(3)])
    scores = scorer(images)
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 1)).all())
    # The same numbers as labeling's rating of the uint8 images: VLM-Vis = (r_vlm - 1) / 4.
    backend = build_backend(vlm, resolve_model_ref(vlm.model_id, model_cache))
    arrays = [(im.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for im in images]
    expected = [(r.r_vlm - 1) / 4 for r in rate_images(backend, arrays, vlm)]
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)
    assert scorer.spec.higher_better and not scorer.spec.reference


NIQE_MISSING = missing_weights("niqe", ScorerConfig())


@pytest.mark.skipif(
    NIQE_MISSING is not None, reason=f"NIQE parameters absent ({NIQE_MISSING}); tests never download"
)
def test_niqe_with_basicsr_parameters():
    niqe = build_scorer("niqe", ScorerConfig())
    # Pinned with the basicsr-derived parameters, which give pyiqa's published NIQE values within 2e-3
    # (test_calibration_values); lower is better, and noise scores worse than the same ramps smoothed.
    noisy = niqe(noisy_gradient()).item()
    assert noisy == pytest.approx(25.3864, abs=1e-3)
    assert not niqe.spec.higher_better


CALIBRA = os.environ.get("FAIRWEATHER_IQA_CALIBRA")


@pytest.mark.skipif(
    not CALIBRA,
    reason="set FAIRWEATHER_IQA_CALIBRA to a checkout of pyiqa's ResultsCalibra folder (dist_dir/, ref_dir/, "
    "calibration_summary.csv) to compare with pyiqa's published values",
)
def test_calibration_values():
    """Our scorers on pyiqa's five calibration pairs (TID2013) give pyiqa's published "(ours)" values; metrics
    whose weights are absent here are skipped one by one (NIQE: basicsr's parameters, within 2e-3)."""
    root = Path(CALIBRA)
    with open(root / "calibration_summary.csv", newline="") as handle:
        rows = {row[0]: row[1:] for row in csv.reader(handle)}
    names = rows["Method"]

    def load(folder: str, name: str) -> torch.Tensor:
        array = np.array(Image.open(root / folder / name).convert("RGB"))
        return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255

    checked = []
    for ours, published, tolerance in (
        ("psnr", "psnr(ours)", 1e-3),
        ("piqe", "piqe(ours)", 1e-3),
        ("niqe", "niqe(ours)", 2.5e-3),
        ("brisque", "brisque(ours)", 1e-3),
        ("lpips", "lpips(ours)", 1e-3),
        ("musiq", "musiq(ours)", 1e-2),
    ):
        if missing_weights(ours, ScorerConfig()):
            continue
        scorer = build_scorer(ours, ScorerConfig())
        got = [scorer(load("dist_dir", n), load("ref_dir", n)).item() for n in names]
        assert got == pytest.approx([float(v) for v in rows[published]], abs=tolerance), ours
        checked.append(ours)
    assert {"psnr", "piqe"} <= set(checked)


def test_no_scorer_module_imports_pyiqa_at_import_time():
    for module in ("registry", "scorers", "weights"):
        source = (Path(__file__).parents[1] / "platform/fairweather/metrics" / f"{module}.py").read_text()
        assert not re.search(r"^(import|from) pyiqa", source, re.MULTILINE), module


@pytest.mark.parametrize(
    "env",
    [{}, {"XDG_CACHE_HOME": "/xdg"}, {"TORCH_HOME": "~/th"}, {"TORCH_HOME": "/th", "XDG_CACHE_HOME": "/xdg"}],
    ids=["default", "xdg", "torch-home-user", "torch-home-wins"],
)
def test_the_torch_hub_folder_is_torchs_own_without_importing_torch(monkeypatch, env):
    """pyiqa's and torch hub's files are looked up where torch would put them (the driver checks them without
    torch: ``registry.torch_hub_dir``)."""
    import torch.hub

    from fairweather.metrics.registry import torch_hub_dir

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert torch_hub_dir() == Path(torch.hub.get_dir())
