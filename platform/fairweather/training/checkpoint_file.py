"""A checkpoint's file without torch: where it is, what a broken one is called, and its top-level entries read
without building a tensor, so a driver checks the checkpoints it was given before any work in a process that never
imports torch (``fairweather evaluate``: the actors load the networks).

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (the object, each tensor a persistent reference to a
storage) and ``<name>/data/<key>`` (each storage's bytes). :func:`peek_state` checks every member against its CRC
(a truncated or corrupted file fails here, as it would in ``torch.load``), then reads ``data.pkl`` with an unpickler
that stands a placeholder for every tensor, storage and other ``torch`` global and refuses any other global but
plain containers (torch's weights-only loading refuses those too). The real load,
:func:`fairweather.training.state.load_state`, still runs wherever the network is built.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import pyarrow.fs as pafs

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import filesystem_for, read_bytes

#: File name of the state inside a checkpoint folder.
STATE_FILE = "state.pt"
#: File name of a training run's model artifact (``model/model.pt``: the state without optimizer and RNG).
MODEL_FILE = "model.pt"
#: File name of the validation image grid in a training checkpoint's folder (the driver logs it to MLflow).
GRID_FILE = "validation.png"
#: Bumped when the layout of the state dict changes.
FORMAT_VERSION = 1
#: Ray Train's name of each checkpoint folder in a training run's folder: ``checkpoint_<date>_<time>``.
CHECKPOINT_PREFIX = "checkpoint_"
#: What a checkpoint path should name, for the error of a missing one.
EXPECTED = (
    f" (a training run's folder, runs/<profile>/train/<run>, for its newest {CHECKPOINT_PREFIX}* folder; one of "
    f"those folders; or a {STATE_FILE} or {MODEL_FILE} file)"
)


class CheckpointError(FairweatherError):
    """A checkpoint cannot be used here: another architecture or format, or an unreadable file."""


def state_path(path: str) -> str:
    """The state file of a checkpoint: ``<folder>/state.pt`` of a training checkpoint, ``<folder>/model.pt`` of a
    run's ``model`` artifact folder, the newest checkpoint's ``state.pt`` of a training run's folder (Ray Train
    names them ``checkpoint_<date>_<time>``, so the last by name is the last written: the job's final one, with
    its calibration), or ``path`` itself when it names a file."""
    fs, local = filesystem_for(path)
    if fs.get_file_info(local).type != pafs.FileType.Directory:
        return path
    for name in (STATE_FILE, MODEL_FILE):
        if fs.get_file_info(f"{local}/{name}").type == pafs.FileType.File:
            return f"{path.rstrip('/')}/{name}"
    folders = fs.get_file_info(pafs.FileSelector(local))
    saved = sorted(
        info.base_name
        for info in folders
        if info.type == pafs.FileType.Directory
        and info.base_name.startswith(CHECKPOINT_PREFIX)
        and fs.get_file_info(f"{info.path}/{STATE_FILE}").type == pafs.FileType.File
    )
    if saved:
        return f"{path.rstrip('/')}/{saved[-1]}/{STATE_FILE}"
    return f"{path.rstrip('/')}/{STATE_FILE}"  # missing: the error below names what was expected


#: How a file torch.save wrote begins: a zip archive, or a pickle of protocol 2 or later (the legacy format).
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def read_file(path: str, what: str = "checkpoint", expected: str = "") -> bytes:
    """The bytes of the file at ``path``; a missing, unreadable or empty file is one :class:`CheckpointError`
    line (``expected`` says what should have been there)."""
    try:
        data = read_bytes(path)
    except FileNotFoundError as err:  # pyarrow's own text adds nothing to "does not exist"
        raise CheckpointError(f"{what} {path} does not exist{expected}") from err
    except OSError as err:
        raise CheckpointError(f"cannot read {what} {path}{expected}: {err}") from err
    if not data:
        raise CheckpointError(
            f"cannot read {what} {path}: the file is empty (0 bytes; a save that never finished)"
        )
    if not data.startswith(TORCH_MAGIC):  # say so, not "corrupted" or "holds code", of a JSON or an image
        raise CheckpointError(
            f"cannot read {what} {path}: not a torch file (it begins {data[:16]!r}){expected}"
        )
    return data


def corrupted(what: str, path: str, data: bytes) -> str:
    return (
        f"cannot read {what} {path}: the file is truncated or corrupted ({len(data)} bytes, not a complete "
        "torch archive); use an earlier checkpoint"
    )


def refused(what: str, path: str, held: str) -> str:
    return (
        f"cannot read {what} {path}: refused, it holds {held} and loading it could run code "
        "(a fairweather checkpoint holds only tensors, numbers, strings, lists and dicts)"
    )


def check_state(state: Any, path: str, arch: str | None = None) -> dict[str, Any]:
    """``state`` if it is a checkpoint of this code's format (and of network ``arch`` when given)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} has format {found}, this code reads {FORMAT_VERSION}")
    if arch is not None and state["arch"] != arch:
        raise CheckpointError(
            f"checkpoint {path} holds a '{state['arch']}' network, but model.arch is '{arch}'; "
            "train a new run (train.new_run=true) or set model.arch to match"
        )
    return state


class _Placeholder:
    """Stands for a torch object (a tensor, a storage, a dtype) that is not built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return _Placeholder()

    def __setstate__(self, state: Any) -> None:
        pass


#: Plain containers a checkpoint's pickle may name besides torch's own globals.
_PLAIN = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}


class _Refused(Exception):
    """The pickle names a global that is neither torch's nor a plain container; the message is its name."""


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return _Placeholder
        if (module, name) in _PLAIN:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Placeholder:
        return _Placeholder()


def peek_state(path: str, *, arch: str | None = None) -> dict[str, Any]:
    """A checkpoint's state dict (a folder holding ``state.pt`` or ``model.pt``, or such a file) with every
    tensor a placeholder: the same errors as :func:`fairweather.training.state.load_state` for a missing, empty,
    truncated, corrupted or unsafe file, another format or another network ``arch``, without importing torch."""
    path = state_path(str(path))
    data = read_file(path, expected=EXPECTED)
    try:
        state = _unpickle_header(data)
    except _Refused as err:
        raise CheckpointError(refused("checkpoint", path, f"a {err} object")) from None
    except Exception:  # BadZipFile (a CRC too), one data.pkl expected, UnpicklingError, EOFError, ...
        raise CheckpointError(corrupted("checkpoint", path, data)) from None
    return check_state(state, path, arch)


def _unpickle_header(data: bytes) -> Any:
    """The object in torch's archive ``data``, tensors as placeholders; raises on any damage (see the module)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if archive.testzip() is not None:
            raise zipfile.BadZipFile("a member's bytes do not match its CRC")
        (name,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]  # ValueError unless one
        return _HeaderUnpickler(io.BytesIO(archive.read(name))).load()
