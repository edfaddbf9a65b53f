"""Training data and state without Ray: per-rank sampling, seeded crops, checkpoint dicts, the pinned smoke loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairweather.data.batches import crop_flip
from fairweather.data.sampling import ShardSampler


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 2), (11, 2), (7, 3)])
def test_ranks_cover_every_epoch_exactly_once(n, world):
    samplers = [ShardSampler(n, rank, world, batch_size=3, seed=5) for rank in range(world)]
    for epoch in range(3):
        seen = []
        for sampler in samplers:
            picks = [p for step in range(40) for p in sampler.batch(step) if p.epoch == epoch]
            seen += [p.index for p in picks]
        assert sorted(seen) == list(range(n))


def test_the_stream_is_a_pure_function_of_the_step_and_epochs_reshuffle():
    sampler = ShardSampler(20, 1, 2, batch_size=4, seed=0)
    assert sampler.batch(7) == ShardSampler(20, 1, 2, batch_size=4, seed=0).batch(7)
    first, second = sampler.batch(0) + sampler.batch(1), sampler.batch(3) + sampler.batch(4)
    assert [p.epoch for p in first] == [0] * 8 and [p.epoch for p in second][-1] == 1
    assert [p.index for p in sampler.batch(0)] != [
        p.index for p in ShardSampler(20, 1, 2, 4, seed=1).batch(0)
    ]


def test_fewer_images_than_workers_is_refused():
    with pytest.raises(ValueError, match="num_workers"):
        ShardSampler(1, 0, 2, batch_size=1, seed=0)


def test_one_crop_and_flip_for_all_images_of_a_sample_seeded():
    rng_image = np.random.default_rng(0)
    a = rng_image.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    b = a.copy()
    out1 = crop_flip([a, b], 32, np.random.default_rng([0, 1, 2]))
    out2 = crop_flip([a, b], 32, np.random.default_rng([0, 1, 2]))
    assert out1[0].shape == (32, 32, 3) and np.array_equal(out1[0], out1[1])
    assert np.array_equal(out1[0], out2[0])
    small = crop_flip([a[:20, :20]], 32, np.random.default_rng(0))[0]
    assert small.shape == (32, 32, 3)  # reflect-padded up to the crop
    with pytest.raises(ValueError, match="one size"):
        crop_flip([a, a[:10]], 8, np.random.default_rng(0))


def test_a_checkpoint_of_another_architecture_is_refused_naming_both(tmp_path):
    from fairweather.contracts.config.model import ModelConfig
    from fairweather.contracts.config.train import TrainConfig
    from fairweather.models import build_model
    from fairweather.training.optim import build_optimizer, build_scheduler
    from fairweather.training.state import CheckpointError, load_state, save_state, training_state

    model = build_model(ModelConfig(arch="nafnet"))
    optimizer = build_optimizer(model, TrainConfig())
    state = training_state(
        arch="nafnet",
        model=model,
        teacher=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, TrainConfig()),
        prompt_context=None,
        step=3,
        round_index=0,
        config={"model": {"arch": "nafnet"}},
        table_versions={"paired": "1:x"},
    )
    save_state(state, tmp_path)
    assert load_state(tmp_path, arch="nafnet")["step"] == 3
    with pytest.raises(CheckpointError, match=r"'nafnet'.*'msbdn'"):
        load_state(tmp_path, arch="msbdn")
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state(tmp_path)


def test_warmup_then_cosine_to_the_floor():
    from fairweather.contracts.config.train import TrainConfig
    from fairweather.training.optim import ema_decay_at, lr_factor

    cfg = TrainConfig(rounds=1, iterations_per_round=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(100, cfg) == pytest.approx(0.1)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999


def test_smoke_objective_is_pinned(clip, model_cache):
    """Three steps of the full objective on the smoke profile's network (every term, tiny encoders, a tenth of the
    paper's w2-w4) from a fixed seed."""
    from fairweather.contracts.config import load_config
    from fairweather.training.optim import build_optimizer, build_scheduler
    from fairweather.training.setup import build_training_parts
    from fairweather.training.step import TrainBatch, train_step

    every_term = ["loss.weights.wpl=0.02", "loss.weights.sem=0.005", "loss.weights.feat=0.02"]
    cfg = load_config(
        "smoke", [f"runtime.model_cache_dir={model_cache}", "encoders.depth.input_size=28", *every_term]
    )
    torch.manual_seed(0)
    context = 0.02 * torch.randn(
        4, cfg.loss.prompt_context_len, clip.token_embeddings(clip.tokenize(["x"])).shape[-1]
    )
    parts = build_training_parts(cfg, torch.device("cpu"), context)
    assert parts.prompts is not None and not parts.prompts.context.requires_grad
    # train.channels_last (on by default, CPU too): the student and its EMA teacher train and restore in it
    assert parts.model.memory_format == parts.teacher.memory_format == torch.channels_last
    optimizer = build_optimizer(parts.model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(3):
        images = torch.rand(6, 3, 32, 32, generator=generator)
        batch = TrainBatch(
            paired_input=images[:2],
            paired_target=images[2:4],
            real_input=images[4:],
            real_pseudo=images[4:].flip(-1),
            real_has_pseudo=torch.tensor([True, False]),
            d_pos=["The weather looks good. a road.", "The weather looks good. a field."],
            d_neg=["A rainy road.", "A hazy field."],
        )
        result = train_step(
            parts.model, parts.loss, optimizer, batch, step=step, grad_clip=1.0, scheduler=scheduler
        )
        assert bool(result.applied.all()), dict(zip(parts.loss.names, result.applied.tolist(), strict=True))
        losses.append(result.loss)
    assert losses == pytest.approx(PINNED_SMOKE_LOSSES, rel=1e-4)


#: Measured once on CPU (torch 2.13); a change here means the objective, the model or its init changed.
# The weather-conditioned network (model.nafnet.weather_film) starts as the unconditioned one: its first loss is the
# one pinned before conditioning, the next two moved by the modulation's first updates.
PINNED_SMOKE_LOSSES = [0.5626377463340759, 0.5699324011802673, 0.5596422553062439]


def test_validation_subsets_cover_every_weather():
    from fairweather.training.validate import balanced_subset

    rows = [{"weather": w, "i": i} for w in ("haze", "rain", "snow") for i in range(5)]
    assert [r["weather"] for r in balanced_subset(rows, 4)] == ["haze", "rain", "snow", "haze"]
    assert len(balanced_subset(rows, 0)) == 15


def test_clean_pair_fraction_and_weather_dropout_leave_crops_alone(tmp_path):
    """train.clean_pair_fraction: that share of pairs trains on (target, target); train.weather_dropout: that share
    is told "unknown" weather; a fraction of 0 draws nothing, so every crop stays what it was."""
    from PIL import Image

    from fairweather.data.batches import PairedBatches

    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        for role in ("in", "out"):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                tmp_path / f"{role}{i}.png"
            )
        rows.append(
            {
                "pair_id": str(i),
                "weather": "snow",
                "input_uri": str(tmp_path / f"in{i}.png"),
                "target_uri": str(tmp_path / f"out{i}.png"),
            }
        )
    sampler = ShardSampler(40, 0, 1, batch_size=40, seed=3)
    plain = PairedBatches(rows, sampler, 16, 10_000)(0)
    mixed = PairedBatches(rows, sampler, 16, 10_000, clean_fraction=0.5)(0)
    assert torch.equal(plain["paired_target"], mixed["paired_target"])
    same = [torch.equal(x, y) for x, y in zip(mixed["paired_input"], mixed["paired_target"], strict=True)]
    kept = [torch.equal(x, y) for x, y in zip(mixed["paired_input"], plain["paired_input"], strict=True)]
    assert 8 <= sum(same) <= 32 and all(s != k for s, k in zip(same, kept, strict=True))
    assert plain["paired_weather"] == mixed["paired_weather"] == ["snow"] * 40
    dropped = PairedBatches(rows, sampler, 16, 10_000, clean_fraction=0.5, weather_dropout=0.5)(0)
    for key in ("paired_input", "paired_target"):
        assert torch.equal(dropped[key], mixed[key])
    assert set(dropped["paired_weather"]) == {"snow", "unknown"}
    assert 8 <= dropped["paired_weather"].count("unknown") <= 32


def test_loader_conversion_is_torchs_to_the_bit_and_leaves_no_openmp_team_in_the_loader_thread():
    """A parallel torch op in a loader thread leaves that thread an OpenMP team of its own, which halves a small
    network's step on 2 cores (benchmarks/bench_loader_threads.py): to_tensor must not make one."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from fairweather.data.batches import to_tensor

    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    reference = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    converted = to_tensor(images)
    assert torch.equal(converted, reference) and converted.stride() == reference.stride()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.rand(256, 256).add_(1)  # this thread's own team exists first

        def threads() -> int:
            return len(os.listdir("/proc/self/task"))

        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: None).result()
            start = threads()
            pool.submit(to_tensor, images).result()
            assert threads() == start
            # The check can see a team: the old conversion makes one.
            pool.submit(lambda: torch.from_numpy(np.stack(images)).float().div_(255.0)).result()
            assert threads() > start
    finally:
        torch.set_num_threads(before)


def test_weather_repeats_put_each_weathers_pairs_that_many_times_in_an_epoch(tmp_path):
    """train.weather_repeats: with rain 2 / haze 1 / snow 3, one epoch of the batch stream holds every rain pair
    twice, every haze pair once and every snow pair three times (the smoke profile halves haze against rain)."""
    from collections import Counter

    from PIL import Image

    from fairweather.contracts.config import load_config
    from fairweather.training.loop import batch_stream

    rows = []
    for i, weather in enumerate(["rain", "haze", "snow"] * 2):
        Image.fromarray(np.full((16, 16, 3), i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(
            {
                "pair_id": str(i),
                "weather": weather,
                "input_uri": str(tmp_path / f"{i}.png"),
                "target_uri": str(tmp_path / f"{i}.png"),
            }
        )
    cfg = load_config(
        "smoke",
        [
            "train.batch_size=12",
            "train.crop_size=8",
            "train.clean_pair_fraction=0",
            "train.loader_threads=1",
            "train.weather_repeats.rain=2",
            "train.weather_repeats.snow=3",
        ],
    )
    loader = batch_stream(cfg, rows, [], rank=0, world=1, start=0)
    try:
        batch, _ = next(loader)
    finally:
        loader.close()
    assert Counter(batch["paired_ids"]) == {"0": 2, "3": 2, "1": 1, "4": 1, "2": 3, "5": 3}
    assert load_config("smoke", []).train.weather_repeats.of("haze") == 1
    assert load_config("smoke", []).train.weather_repeats.of("fog") == 1  # an imported pair's own label
