"""Fetch the files a metric loads into this machine's caches (``fairweather prefetch``; needs the network).

pyiqa's files come from its Hugging Face repository into ``ScorerConfig.weights_dir``, other Hugging Face
repositories into the HF cache (both through ``huggingface_hub``: ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply), torch
hub files from their published URLs (torch's downloader writes a temporary file and moves it into place, so a
broken download never leaves a half file behind). NIQE's pristine parameters come from basicsr 1.4.2's *source* package on the package registry (fetched
with pip, checked against its published sha256), converted to the ``.mat`` keys pyiqa reads.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.io import atomic_write_bytes, read_bytes

from .registry import METRICS, NIQE_PARAMS, PYIQA_WEIGHTS_REPO, WeightFile, local_path

#: The source package that ships NIQE's pristine parameters (Apache-2.0), its sha256 on the registry, the member.
BASICSR_REQUIREMENT = "basicsr==1.4.2"
BASICSR_SDIST = "basicsr-1.4.2.tar.gz"
BASICSR_SHA256 = "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
BASICSR_NIQE_MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"


class WeightFetchError(OSError):
    """A metric's file could not be fetched; ``file`` is the one that failed."""

    def __init__(self, file: WeightFile, reason: str):
        self.file = file
        super().__init__(f"{file.store} file {file.name}: {reason}")


def fetch_weights(name: str, cfg: ScorerConfig) -> list[Path]:
    """Put every file metric ``name`` loads on this machine (files already there are kept); returns their paths.

    Raises :class:`WeightFetchError` naming the file (no network, unknown file, unwritable cache, bad download).
    """
    paths = []
    for file in METRICS[name].files:
        path = local_path(file, cfg)
        if path is None or not path.exists():
            try:
                path = _fetch(file, cfg)
            except (
                OSError,
                ValueError,
                RuntimeError,
            ) as err:  # huggingface_hub's errors are OSError/ValueError
                raise WeightFetchError(file, str(err) or type(err).__name__) from err
        paths.append(path)
    return paths


def _fetch(file: WeightFile, cfg: ScorerConfig) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    if file.store == "hf":
        found = hf_hub_download(file.name, file.file) if file.file else snapshot_download(file.name)
        return Path(found)
    target = local_path(file, cfg)
    assert target is not None  # only Hugging Face repositories have no fixed local path
    target.parent.mkdir(parents=True, exist_ok=True)
    if file == NIQE_PARAMS:
        atomic_write_bytes(target, niqe_params_mat(_basicsr_niqe_npz()))
    elif file.store == "pyiqa":
        hf_hub_download(PYIQA_WEIGHTS_REPO, file.name, local_dir=target.parent)
    else:
        from torch.hub import download_url_to_file

        download_url_to_file(file.url, str(target), progress=False)
    return target


def niqe_params_mat(npz: bytes) -> bytes:
    """basicsr's ``niqe_pris_params.npz`` -> a MATLAB ``.mat`` with the keys pyiqa's NIQE reads.

    basicsr stores ``mu_pris_param`` ``(1, 36)`` and ``cov_pris_param`` ``(36, 36)`` (float64); pyiqa reads
    ``mu_prisparam`` and ``cov_prisparam``. The values are copied unchanged.
    """
    import scipy.io

    with np.load(io.BytesIO(npz)) as params:
        mu, cov = params["mu_pris_param"], params["cov_pris_param"]
    if mu.size != 36 or cov.shape != (36, 36):
        raise ValueError(f"unexpected NIQE parameter shapes: mu {mu.shape}, cov {cov.shape} (want 36, 36x36)")
    out = io.BytesIO()
    scipy.io.savemat(out, {"mu_prisparam": mu.reshape(1, 36), "cov_prisparam": cov})
    return out.getvalue()


def _basicsr_niqe_npz() -> bytes:
    """Download basicsr's source package with pip (no install; pip checks the pinned sha256) and return the NIQE
    parameters file's bytes."""
    with tempfile.TemporaryDirectory(prefix="fairweather-basicsr-") as work:
        requirements = Path(work) / "requirements.txt"
        atomic_write_bytes(requirements, f"{BASICSR_REQUIREMENT} --hash=sha256:{BASICSR_SHA256}\n".encode())
        base = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            "basicsr",
            "--require-hashes",
        ]
        base += ["-d", work, "-r", str(requirements)]
        # Without build isolation pip reads the package's metadata with the tools already installed (about 1 s);
        # with it, pip first installs basicsr's build dependencies (minutes), so that is only the fallback.
        for extra in (["--no-build-isolation"], []):
            done = subprocess.run([*base, *extra], capture_output=True, text=True)
            if done.returncode == 0:
                break
        else:
            raise OSError(f"pip could not download {BASICSR_REQUIREMENT}: {done.stderr.strip()[-500:]}")
        # "r:*": read_bytes may hand back the archive already gunzipped (pyarrow detects the .gz suffix).
        archive = read_bytes(str(Path(work) / BASICSR_SDIST))
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            member = tar.extractfile(BASICSR_NIQE_MEMBER)
            if member is None:
                raise OSError(f"{BASICSR_SDIST} has no {BASICSR_NIQE_MEMBER}")
            return member.read()
