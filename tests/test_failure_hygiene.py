"""Failure hygiene of the science and contracts layers (issue 19): durable atomic checkpoints, a full disk, empty,
truncated and unsafe checkpoint files, masked configs in checkpoints, YAML 1.2 floats, learning-rate bounds,
non-finite parameters after the optimizer step, the single-worker wording, and changed hyperparameters on resume.
"""

from __future__ import annotations

import errno
import fractions
import io
import math
import os
import struct
import zipfile

import pytest
import torch
from torch import nn

from fairweather.contracts.config import ConfigError, load_config, to_dict
from fairweather.contracts.config.loader import build, parse_override, read_yaml
from fairweather.contracts.config.loss import LossConfig, LossWeights
from fairweather.contracts.config.model import ModelConfig, NAFNetConfig
from fairweather.contracts.config.train import TrainConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import DiskFullError, atomic_write_bytes
from fairweather.losses import CompositeLoss, LossContext, build_composite_loss
from fairweather.models import build_model
from fairweather.training.checkpoint_file import peek_state
from fairweather.training.ema import build_teacher
from fairweather.training.optim import build_optimizer, build_scheduler, lr_factor
from fairweather.training.state import (
    STATE_FILE,
    CheckpointError,
    load_state,
    resume_training,
    save_state,
    start_from_weights,
    training_state,
)
from fairweather.training.step import NonFiniteError, NonFiniteLossError, TrainBatch, train_step

NAFNET = ModelConfig(
    arch="nafnet", nafnet=NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,))
)
PIXEL_ONLY = LossConfig(weights=LossWeights(sup=1.0, ps=0.0, wpl=0.0, sem=0.0, feat=0.0, srd=0.0))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def paired_batch(seed: int = 0, size: int = 16) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    return TrainBatch(
        paired_input=torch.rand(2, 3, size, size, generator=gen),
        paired_target=torch.rand(2, 3, size, size, generator=gen),
    )


def checkpoint(step: int, config: dict | None = None, train: TrainConfig | None = None) -> dict:
    train = train or TrainConfig()
    torch.manual_seed(0)
    model = build_model(NAFNET)
    optimizer = build_optimizer(model, train)
    return training_state(
        arch="nafnet",
        model=model,
        teacher=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, train),
        prompt_context=None,
        step=step,
        round_index=1,
        config=config if config is not None else {"model": {"arch": "nafnet"}},
        table_versions={"paired": "1:x"},
    )


# --- 1. checkpoints are never half-written ---------------------------------------------------------------------


def test_a_checkpoint_is_fsynced_before_and_after_its_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    save_state(checkpoint(step=1), tmp_path)
    assert events == ["fsync", "replace", "fsync"]  # file data durable, then renamed, then the rename durable
    assert os.listdir(tmp_path) == [STATE_FILE]
    events.clear()
    atomic_write_bytes(tmp_path / "image.png", b"data")  # bulk outputs: atomic, not fsync'ed (ms each)
    assert events == ["replace"] and (tmp_path / "image.png").read_bytes() == b"data"


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch):
    save_state(checkpoint(step=40), tmp_path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError) as caught:
        save_state(checkpoint(step=50), tmp_path)
    message = str(caught.value)
    path = f"{tmp_path}/{STATE_FILE}"
    assert message == f"disk full while writing {path}: the previous checkpoint is kept"
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [STATE_FILE]  # no staging file left behind
    assert load_state(tmp_path, arch="nafnet")["step"] == 40

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError) as caught:  # any other file: the same error, an OSError with errno 28
        atomic_write_bytes(tmp_path / "other.bin", b"x", durable=True)
    assert isinstance(caught.value, FairweatherError) and caught.value.errno == errno.ENOSPC
    assert "disk full while writing" in str(caught.value) and not (tmp_path / "other.bin").exists()


# --- 2. empty, truncated and unsafe checkpoints: one clear line ---------------------------------------------------


#: The full load (torch) and the driver's check without torch (``fairweather evaluate``): the same errors.
LOADERS = pytest.mark.parametrize("load", [load_state, peek_state], ids=["load_state", "peek_state"])


@LOADERS
def test_an_empty_or_truncated_checkpoint_is_one_clear_line(tmp_path, load):
    save_state(checkpoint(step=3), tmp_path)
    whole = (tmp_path / STATE_FILE).read_bytes()
    for blob, word in ((b"", "empty"), (whole[: len(whole) // 2], "truncated"), (whole[:10], "truncated")):
        (tmp_path / STATE_FILE).write_bytes(blob)
        with pytest.raises(CheckpointError) as caught:
            load(tmp_path)
        message = str(caught.value)
        assert word in message and str(tmp_path / STATE_FILE) in message
        assert "\n" not in message and "miniz" not in message
    (tmp_path / STATE_FILE).write_text('{"checkpoints": []}')  # a JSON where a checkpoint was expected
    with pytest.raises(CheckpointError, match=r"not a torch file \(it begins b'\{\"checkpoints\""):
        load(tmp_path)


@LOADERS
def test_an_unsafe_pickle_is_refused_without_torchs_advice_to_disable_the_check(tmp_path, load):
    target = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": fractions.Fraction(1, 2)}, target)
    with pytest.raises(CheckpointError) as caught:
        load(target)
    message = str(caught.value)
    assert "fractions.Fraction" in message and "refused" in message
    assert "weights_only" not in message and "trust" not in message and "\n" not in message


def test_the_check_without_torch_reads_what_the_full_load_reads_and_the_same_refusals(tmp_path):
    save_state(checkpoint(step=7, config={"model": {"arch": "nafnet"}, "train": {"lr": 0.001}}), tmp_path)
    full, peeked = load_state(tmp_path), peek_state(tmp_path)
    assert peeked.keys() == full.keys()
    for key in ("format", "arch", "step", "round", "config", "table_versions"):
        assert peeked[key] == full[key], key
    with pytest.raises(CheckpointError, match=r"holds a 'nafnet' network, but model\.arch is 'restormer'"):
        peek_state(tmp_path, arch="restormer")
    # A flipped byte inside a tensor's storage: the archive's CRC says so before any network is built.
    whole = bytearray((tmp_path / STATE_FILE).read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(whole))) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    name_length, extra_length = struct.unpack(
        "<HH", whole[member.header_offset + 26 : member.header_offset + 30]
    )
    whole[member.header_offset + 30 + name_length + extra_length] ^= 0xFF  # the storage's first byte
    (tmp_path / STATE_FILE).write_bytes(bytes(whole))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        peek_state(tmp_path)
    torch.save({"format": 99}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="has format 99, this code reads 1"):
        peek_state(tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"nowhere does not exist \(a training run's folder"):
        peek_state(tmp_path / "nowhere")


def test_a_checkpoint_stores_the_masked_config(tmp_path):
    config = {
        "runtime": {"mlflow_tracking_uri": "http://user:hunter2@mlflow:5000"},
        "data": {"roots": ["s3://AKIAKEY:S3CRETVALUE@bucket/x"]},
        "vlm": {"api_token": "tok-123456"},
    }
    save_state(checkpoint(step=1, config=config), tmp_path)
    raw = (tmp_path / STATE_FILE).read_bytes()
    for secret in (b"hunter2", b"S3CRETVALUE", b"AKIAKEY", b"tok-123456"):
        assert secret not in raw
    stored = load_state(tmp_path)["config"]
    assert stored["runtime"]["mlflow_tracking_uri"] == "http://***@mlflow:5000"


# --- 3. and 4. configs: YAML 1.2 floats, bounded learning rates -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e4", 1e4),
        ("1e-4", 1e-4),
        ("3E5", 3e5),
        ("-2e3", -2e3),
        ("1.0e4", 1e4),
        (".5e-3", 5e-4),
        ("+1E+2", 100.0),
    ],
)
def test_exponent_floats_parse_as_numbers_in_overrides_and_files(tmp_path, text, value):
    assert parse_override(f"train.lr={text}") == (["train", "lr"], value)
    (tmp_path / "c.yaml").write_text(f"train:\n  lr: {text}\n")
    parsed = read_yaml(tmp_path / "c.yaml")["train"]["lr"]
    assert isinstance(parsed, float) and parsed == value


def test_non_numbers_stay_strings_and_integers_stay_integers():
    assert parse_override("x=e4")[1] == "e4" and parse_override("x=1e4x")[1] == "1e4x"
    assert parse_override("x=12")[1] == 12 and isinstance(parse_override("x=12")[1], int)
    assert parse_override("x=1.5")[1] == 1.5


def test_a_small_exponent_lr_loads_and_a_huge_one_is_refused_naming_the_key():
    cfg = load_config("smoke", ["train.lr=1e-4"])
    assert cfg.train.lr == 1e-4
    with pytest.raises(ConfigError, match=r"at 'train\.lr': must be in \(0, 1\], got 10000\.0"):
        load_config("smoke", ["train.lr=1e4"])


@pytest.mark.parametrize("lr", [3e38, 1.5, math.inf, math.nan, 0.0, -1e-4])
def test_learning_rates_are_bounded(lr):
    with pytest.raises(ConfigError, match=r"at 'train\.lr'"):
        build(TrainConfig, {"lr": lr}, prefix="train")
    with pytest.raises(ConfigError, match=r"at 'loss\.prompt_fit_lr'"):
        build(LossConfig, {"prompt_fit_lr": lr}, prefix="loss")
    assert build(TrainConfig, {"lr": 1.0}).lr == 1.0


# --- 5. and 6. non-finite parameters after the step; one worker is not "another rank" ---------------------------


@pytest.mark.parametrize("lr", [1e30, 3e38])
def test_weights_that_blow_up_in_the_optimizer_step_stop_with_a_clear_error(lr):
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    loss = build_composite_loss(PIXEL_ONLY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    with pytest.raises(NonFiniteError) as caught:
        train_step(model, loss, optimizer, paired_batch(), step=7)
    message = str(caught.value)
    assert isinstance(caught.value, FairweatherError)
    assert "step 7" in message and "train.lr" in message and "\n" not in message


def test_a_healthy_step_passes_the_finiteness_check():
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, build_composite_loss(PIXEL_ONLY), optimizer, paired_batch(), step=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


class InfiniteGradient(nn.Module):
    """A finite loss (0) whose gradient is infinite: sqrt at 0."""

    name, needs_aux = "inf_grad", False

    def applies(self, ctx: LossContext) -> bool:
        return True

    def forward(self, ctx: LossContext) -> torch.Tensor:
        return torch.sqrt((ctx.restored - ctx.restored.detach()).abs().sum())


def test_a_single_worker_is_not_told_about_another_rank():
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    loss = CompositeLoss([(InfiniteGradient(), 1.0)], domains={"inf_grad": ("paired",)})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as caught:
        train_step(model, loss, optimizer, paired_batch(), step=2)
    message = str(caught.value)
    assert "gradient norm" in message and "rank" not in message and "step 2" in message
    assert isinstance(caught.value, NonFiniteError)


# --- 7. changed hyperparameters on resume: applied or refused ------------------------------------------------------


def trained(train: TrainConfig, steps: int):
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    teacher = build_teacher(NAFNET, model)
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train)
    loss = build_composite_loss(PIXEL_ONLY)
    for step in range(steps):
        train_step(model, loss, optimizer, paired_batch(step), step=step, scheduler=scheduler)
    return model, teacher, optimizer, scheduler


def test_a_changed_lr_is_applied_on_resume_and_reported():
    from fairweather.contracts.config import FairweatherConfig

    old = FairweatherConfig(model=NAFNET, train=TrainConfig(lr=1e-3, weight_decay=1e-4, warmup_steps=2))
    model, teacher, optimizer, scheduler = trained(old.train, 3)
    state = training_state(
        arch="nafnet",
        model=model,
        teacher=teacher,
        optimizer=optimizer,
        scheduler=scheduler,
        prompt_context=None,
        step=3,
        round_index=1,
        config=to_dict(old),
        table_versions={},
    )
    new = FairweatherConfig(model=NAFNET, train=TrainConfig(lr=1e-4, weight_decay=0.05, warmup_steps=2))
    model, teacher, optimizer, scheduler = trained(new.train, 0)
    step, changes = resume_training(
        state, new, model=model, teacher=teacher, optimizer=optimizer, scheduler=scheduler
    )
    assert step == 3
    expected = 1e-4 * lr_factor(3, new.train)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([expected, expected])
    assert scheduler.get_last_lr() == pytest.approx([expected, expected])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    assert any(c.startswith("train.lr: 0.001 -> 0.0001") for c in changes)
    assert any(c.startswith("train.weight_decay: 0.0001 -> 0.05") for c in changes)
    scheduler.step()  # the schedule goes on from the new peak
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * lr_factor(4, new.train))

    unchanged = resume_training(
        state, old, model=model, teacher=teacher, optimizer=optimizer, scheduler=scheduler
    )[1]
    assert unchanged == []


def test_a_changed_architecture_is_refused_on_resume():
    from fairweather.contracts.config import FairweatherConfig

    old = FairweatherConfig(model=NAFNET)
    model, teacher, optimizer, scheduler = trained(old.train, 0)
    state = checkpoint(step=5, config=to_dict(old))
    wider = ModelConfig(
        arch="nafnet",
        nafnet=NAFNetConfig(width=16, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)),
    )
    with pytest.raises(CheckpointError, match=r"model\.nafnet\.width: 8 -> 16"):
        resume_training(
            state,
            FairweatherConfig(model=wider),
            model=model,
            teacher=teacher,
            optimizer=optimizer,
            scheduler=scheduler,
        )


def test_init_weights_start_a_new_run_from_a_trained_network_and_refuse_another():
    """``train.init_weights``: the network and its EMA teacher come from the checkpoint, the optimizer, schedule
    and step stay fresh; a checkpoint of another network is refused in one line."""
    from fairweather.contracts.config import FairweatherConfig

    cfg = FairweatherConfig(model=NAFNET, train=TrainConfig(lr=1e-3, warmup_steps=2, init_weights="warm"))
    model, teacher, _, _ = trained(cfg.train, 3)
    for param in teacher.parameters():  # a teacher that differs from its student, as after an EMA
        param.data.add_(0.5)
    state = checkpoint(step=3, config=to_dict(cfg))
    state["model"], state["teacher"] = model.state_dict(), teacher.state_dict()

    fresh, fresh_teacher, fresh_optimizer, fresh_scheduler = trained(cfg.train, 0)
    start_from_weights(state, cfg, model=fresh, teacher=fresh_teacher)
    for ours, theirs in ((fresh, model), (fresh_teacher, teacher)):
        for key, value in ours.state_dict().items():
            assert torch.equal(value, theirs.state_dict()[key]), key
    assert not fresh_optimizer.state and fresh_scheduler.last_epoch == 0  # fresh: step 0 of its own schedule

    wider = ModelConfig(
        arch="nafnet",
        nafnet=NAFNetConfig(width=16, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)),
    )
    other = FairweatherConfig(model=wider, train=cfg.train)
    with pytest.raises(CheckpointError, match=r"init_weights=warm: .*model\.nafnet\.width: 8 -> 16"):
        start_from_weights(state, other, model=build_model(wider), teacher=build_model(wider))


def test_loading_the_optimizer_alone_silently_keeps_the_old_lr():
    """Why resume_training exists: torch restores the checkpoint's lr with the optimizer and scheduler state."""
    old, new = TrainConfig(lr=1e-3), TrainConfig(lr=1e-4)
    _, _, optimizer, scheduler = trained(old, 1)
    buffer = io.BytesIO()
    torch.save({"o": optimizer.state_dict(), "s": scheduler.state_dict()}, buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    _, _, optimizer, scheduler = trained(new, 0)
    optimizer.load_state_dict(saved["o"])
    scheduler.load_state_dict(saved["s"])
    assert scheduler.base_lrs == [1e-3, 1e-3]
