"""Every image-quality metric by our name: what it measures against, its direction, the files it loads, its licence.

One place for these facts: the scorers (:mod:`fairweather.metrics.scorers`), ``fairweather prefetch`` and the
evaluation report all read :data:`METRICS`. The weight files are those pyiqa 0.1.16 loads for the metric's default
variant (``pyiqa.archs.<metric>_arch.default_model_urls``; a test checks the names against pyiqa's source). They live
in three caches: pyiqa's own files (``ScorerConfig.weights_dir``, default ``$TORCH_HOME/hub/pyiqa``, handed to pyiqa
as ``pretrained_model_path`` so it never downloads), torch hub files (OpenAI CLIP, torchvision AlexNet, read from
``$TORCH_HOME/hub``) and Hugging Face repositories (timm backbones, Q-Align, read from the HF cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.tiny import is_tiny

#: pyiqa itself (code of every pyiqa metric, including PSNR/SSIM/PIQE/NIQE/BRISQUE implementations).
PYIQA_LICENCE = "pyiqa 0.1.16: PolyForm Noncommercial 1.0.0 (NTU S-Lab License 1.0 for some components)"
#: Hugging Face repository of pyiqa's weight files (where pyiqa downloads them from by default).
PYIQA_WEIGHTS_REPO = "chaofengc/IQA-PyTorch-Weights"
OPENAI_CLIP_URL = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class WeightFile:
    """One file (or Hugging Face repository) a metric loads.

    store: ``pyiqa`` (a file in ``ScorerConfig.weights_dir``), ``torch_hub`` (a path under ``torch.hub.get_dir()``)
    or ``hf`` (a Hugging Face repository in the HF cache; ``name`` is the repo id, ``file`` one file of it to
    check, or ``None`` for the whole snapshot). ``url``: where ``fairweather prefetch`` gets a torch_hub file
    (pyiqa files come from :data:`PYIQA_WEIGHTS_REPO`, except NIQE's parameters, extracted from basicsr's source).
    """

    store: Literal["pyiqa", "torch_hub", "hf"]
    name: str
    url: str | None = None
    file: str | None = None


def _pyiqa_file(name: str) -> WeightFile:
    return WeightFile("pyiqa", name)


def _clip_file(name: str, digest: str) -> WeightFile:
    return WeightFile("torch_hub", f"clip/{name}", f"{OPENAI_CLIP_URL}/{digest}/{name}")


#: NIQE's pristine-model parameters (mu, cov of the natural-scene features), converted by prefetch from basicsr
#: 1.4.2's ``niqe_pris_params.npz`` to the ``.mat`` keys pyiqa reads: pyiqa's published values within 2e-3.
NIQE_PARAMS = WeightFile("pyiqa", "niqe_pris_params_basicsr.mat")


@dataclass(frozen=True)
class MetricSpec:
    """One metric. ``pyiqa_name`` is pyiqa's ``create_metric`` name (``ssim`` -> ``ssimc``: SSIM on RGB, not Y);
    ``None`` for ``vlm_vis``, which goes through the labeling VLM backend."""

    name: str
    pyiqa_name: str | None
    #: True: full-reference (needs the clean target): psnr, ssim, lpips.
    reference: bool
    higher_better: bool
    #: ``(low, high)``: the scale of the metric's scores (pyiqa's ``score_range``; ``~`` bounds taken as given),
    #: which pseudo-labeling normalises to [0, 1] by.
    range: tuple[float, float]
    needs_weights: bool
    licence: str
    #: What the metric loads; empty when it needs nothing (``vlm_vis``: the configured VLM, checked separately).
    files: tuple[WeightFile, ...] = ()
    #: The file of :attr:`files` handed to pyiqa as ``pretrained_model_path`` (so pyiqa never downloads it).
    model_file: WeightFile | None = None


def _spec(
    name: str,
    pyiqa_name: str | None,
    *,
    licence: str,
    score_range: tuple[float, float],
    reference: bool = False,
    higher: bool = True,
    files: tuple[WeightFile, ...] = (),
    model_file: WeightFile | None = None,
) -> MetricSpec:
    return MetricSpec(
        name=name,
        pyiqa_name=pyiqa_name,
        reference=reference,
        higher_better=higher,
        range=score_range,
        needs_weights=bool(files) or pyiqa_name is None,
        licence=licence,
        files=files,
        model_file=model_file,
    )


_NIMA = _pyiqa_file("NIMA_InceptionV2_ava-b0c77c00.pth")
_MUSIQ = _pyiqa_file("musiq_koniq_ckpt-e95806b9.pth")
_LIQE = _pyiqa_file("liqe_koniq.pt")
_BRISQUE = _pyiqa_file("brisque_svm_weights.pth")
_LPIPS = _pyiqa_file("LPIPS_v0.1_alex-df73285e.pth")
_CLIP_RN50 = _clip_file("RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762")
_CLIP_B32 = _clip_file("ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af")
_ALEXNET = WeightFile(
    "torch_hub",
    "checkpoints/alexnet-owt-7be5be79.pth",
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
)

#: PSNR, SSIM and PIQE: pyiqa's definitions computed by fairweather.metrics.tiled (no pyiqa code runs).
_OWN = "pyiqa 0.1.16's definition, computed by fairweather's own code (fairweather.metrics.tiled, Apache-2.0); no weights"

#: Our name -> spec, in the order of the paper's tables (then the extra columns).
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "nima",
            "nima",
            score_range=(0, 10),
            licence=f"{PYIQA_LICENCE}; NIMA weights trained by pyiqa's author on AVA (terms not stated "
            "separately; AVA images: research use); timm inception_resnet_v2 ImageNet weights: Apache-2.0",
            files=(_NIMA, WeightFile("hf", "timm/inception_resnet_v2.tf_in1k", file="model.safetensors")),
            model_file=_NIMA,
        ),
        _spec(
            "musiq",
            "musiq",
            score_range=(0, 100),
            licence=f"{PYIQA_LICENCE}; MUSIQ-KonIQ weights converted from google-research/musiq (code "
            "Apache-2.0; terms of the checkpoints not verified here)",
            files=(_MUSIQ,),
            model_file=_MUSIQ,
        ),
        _spec(
            "clipiqa",
            "clipiqa",
            score_range=(0, 1),
            licence=f"{PYIQA_LICENCE}; CLIP-IQA (IceClear/CLIP-IQA: S-Lab License 1.0, non-commercial); "
            "OpenAI CLIP RN50 weights: MIT",
            files=(_CLIP_RN50,),
        ),
        _spec(
            "liqe",
            "liqe",
            score_range=(1, 5),
            licence=f"{PYIQA_LICENCE}; LIQE-KonIQ weights (zwx8981/LIQE: no licence verified here); "
            "OpenAI CLIP ViT-B/32 weights: MIT",
            files=(_LIQE, _CLIP_B32),
            model_file=_LIQE,
        ),
        _spec(
            "qalign",
            "qalign",
            score_range=(1, 5),
            licence=f"{PYIQA_LICENCE}; Q-Align (q-future/one-align, mPLUG-Owl2 7B): see its model card, "
            "not verified here",
            files=(WeightFile("hf", "q-future/one-align"),),
        ),
        _spec(
            "vlm_vis",
            None,
            score_range=(0, 1),
            licence="the configured VLM's licence (paper: LLaVA-1.5-7B, Llama 2 Community Licence); "
            "no pyiqa code involved",
        ),
        _spec(
            "niqe",
            "niqe",
            score_range=(0, 100),
            higher=False,
            licence=f"{PYIQA_LICENCE}; pristine parameters from basicsr 1.4.2 (Apache-2.0)",
            files=(NIQE_PARAMS,),
            model_file=NIQE_PARAMS,
        ),
        _spec(
            "brisque",
            "brisque",
            score_range=(0, 150),
            higher=False,
            licence=f"{PYIQA_LICENCE}; BRISQUE SVM weights from the original BRISQUE release (terms not "
            "verified here)",
            files=(_BRISQUE,),
            model_file=_BRISQUE,
        ),
        _spec("piqe", "piqe", score_range=(0, 100), higher=False, licence=_OWN),
        _spec("psnr", "psnr", score_range=(0, 40), reference=True, licence=_OWN),
        _spec("ssim", "ssimc", score_range=(0, 1), reference=True, licence=_OWN),
        _spec(
            "lpips",
            "lpips",
            score_range=(0, 1),
            reference=True,
            higher=False,
            licence=f"{PYIQA_LICENCE}; LPIPS v0.1 linear weights: BSD-2-Clause (richzhang/PerceptualSimilarity); "
            "torchvision AlexNet ImageNet weights: BSD-3-Clause",
            files=(_LPIPS, _ALEXNET),
            model_file=_LPIPS,
        ),
    )
}


class MissingWeightsError(FairweatherError):
    """A metric cannot run because a file it loads is not on this machine; the message names the file and the
    ``fairweather prefetch`` command that gets it."""


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` by its documented rule, ``$TORCH_HOME/hub`` (``$TORCH_HOME`` defaults to
    ``$XDG_CACHE_HOME/torch``, that to ``~/.cache``), without importing torch: a driver checks its metrics' files
    in a process that never loads torch (nothing here calls ``torch.hub.set_dir``)."""
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))).expanduser() / "hub"


def pyiqa_weights_dir(cfg: ScorerConfig) -> Path:
    """``cfg.weights_dir``, or pyiqa's own default ``$TORCH_HOME/hub/pyiqa``."""
    if cfg.weights_dir:
        return Path(cfg.weights_dir).expanduser()
    return torch_hub_dir() / "pyiqa"


def local_path(file: WeightFile, cfg: ScorerConfig) -> Path | None:
    """Where ``file`` is (or would be) on this machine; ``None`` for a Hugging Face repository not cached here."""
    if file.store == "pyiqa":
        return pyiqa_weights_dir(cfg) / file.name
    if file.store == "torch_hub":
        return torch_hub_dir() / file.name
    return _hf_cached(file)


def _hf_cached(file: WeightFile) -> Path | None:
    """The cached file (or snapshot folder) of a Hugging Face repository, without touching the network."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    if file.file is not None:
        found = try_to_load_from_cache(file.name, file.file)
        return Path(found) if isinstance(found, str) else None
    try:
        return Path(snapshot_download(file.name, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def prefetch_command(name: str) -> str:
    """The command that puts ``name``'s files on this machine (run where the network is reachable)."""
    return f"fairweather prefetch --config <your config> evaluate.metrics=[{name}]"


def _vlm_missing(vlm: VLMConfig) -> str | None:
    """Why the configured VLM cannot load here: neither ``tiny:`` (built locally), a folder, nor in the HF cache."""
    ref = vlm.model_id
    if is_tiny(ref) or Path(ref).expanduser().is_dir() or _hf_cached(WeightFile("hf", ref)) is not None:
        return None
    return (
        f"metric 'vlm_vis' needs the VLM {ref!r} in the HF cache ({_hf_cache_dir()}), which is not on this machine; "
        "run `fairweather prefetch --config <your config>`"
    )


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def missing_weights(name: str, cfg: ScorerConfig, *, vlm: VLMConfig | None = None) -> str | None:
    """Why metric ``name`` cannot run here (the first missing file and the command that fetches it); ``None``: it can.

    ``vlm_vis`` is checked against ``vlm`` (the config's VLM); without it there is nothing to check.
    """
    spec = METRICS[name]
    if spec.name == "vlm_vis":
        return _vlm_missing(vlm) if vlm is not None else None
    for file in spec.files:
        path = local_path(file, cfg)
        if path is None or not path.exists():
            if file.store == "hf":
                part = f" (file {file.file})" if file.file else ""
                where = f"the Hugging Face repository {file.name!r}{part} in the HF cache ({_hf_cache_dir()})"
            else:
                where = str(path)
            return (
                f"metric {name!r} needs {where}, which is not on this machine; run `{prefetch_command(name)}`"
            )
    return None
