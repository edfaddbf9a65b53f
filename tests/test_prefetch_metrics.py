"""``fairweather prefetch`` and the metrics' weights: NIQE's parameter conversion, files already present kept
without any download, failures as one line naming the metric and the file. Nothing here touches the network."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.io
import torch

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.metrics import build_scorer
from fairweather.metrics.registry import NIQE_PARAMS
from fairweather.metrics.weights import niqe_params_mat
from fairweather.stages.infra.prefetch import run_prefetch


def basicsr_like_npz(seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """An ``.npz`` with basicsr's keys and shapes; cov is symmetric positive definite like a real covariance."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(1, 36))
    factor = rng.normal(size=(36, 36))
    cov = factor @ factor.T / 36 + np.eye(36)
    out = io.BytesIO()
    np.savez(out, mu_pris_param=mu, cov_pris_param=cov, gaussian_window=np.ones((7, 7)) / 49)
    return out.getvalue(), mu, cov


def test_niqe_parameters_are_converted_to_the_keys_pyiqa_reads(tmp_path):
    npz, mu, cov = basicsr_like_npz()
    mat = scipy.io.loadmat(io.BytesIO(niqe_params_mat(npz)))
    assert np.array_equal(mat["mu_prisparam"], mu) and np.array_equal(mat["cov_prisparam"], cov)
    # pyiqa's NIQE loads the converted file from the weights folder and scores with it.
    (tmp_path / NIQE_PARAMS.name).write_bytes(niqe_params_mat(npz))
    niqe = build_scorer("niqe", ScorerConfig(weights_dir=str(tmp_path)))
    assert torch.isfinite(niqe(torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0)))).all()


def test_niqe_parameters_of_the_wrong_shape_are_refused():
    out = io.BytesIO()
    np.savez(out, mu_pris_param=np.zeros((1, 18)), cov_pris_param=np.eye(18))
    with pytest.raises(ValueError, match="shapes"):
        niqe_params_mat(out.getvalue())


def _cfg(tmp_path, model_cache, *overrides: str):
    return load_config(
        "smoke",
        # PIQE alone: the smoke profile's NIQE parameters come from the package registry (no downloads in tests)
        [
            f"runtime.model_cache_dir={model_cache}",
            f"evaluate.scorer.weights_dir={tmp_path}",
            "pseudo.metrics=[piqe]",
            "evaluate.metrics=[piqe]",
            *overrides,
        ],
    )


def test_piqe_only_prefetch_needs_no_metric_weights(tmp_path, model_cache):
    summary = run_prefetch(_cfg(tmp_path, model_cache))
    assert summary.metrics == {} and list(tmp_path.iterdir()) == []


def test_files_already_present_are_kept_without_a_download(tmp_path, model_cache):
    (tmp_path / "brisque_svm_weights.pth").write_bytes(b"already here")
    summary = run_prefetch(_cfg(tmp_path, model_cache, "evaluate.metrics=[piqe, brisque]"))
    assert summary.metrics == {"brisque": [str(tmp_path / "brisque_svm_weights.pth")]}
    assert (tmp_path / "brisque_svm_weights.pth").read_bytes() == b"already here"


def test_a_metric_that_cannot_be_fetched_is_one_line_naming_it(tmp_path, model_cache, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    overrides = [
        f"runtime.model_cache_dir={model_cache}",
        f"evaluate.scorer.weights_dir={blocker / 'pyiqa'}",
        "evaluate.metrics=[brisque]",
        "pseudo.metrics=[piqe]",
    ]
    assert main(["prefetch", *overrides]) == 2
    err = capsys.readouterr().err
    assert "cannot fetch the weights of metric 'brisque'" in err and "brisque_svm_weights.pth" in err
    assert "Traceback" not in err
