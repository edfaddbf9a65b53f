"""Stage 1's weather prompts are learned once for every run that would learn the same ones (a sweep's trials):
the second run reuses the first's context; new image bytes or a new fitting setting learn again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairweather.contracts.config import load_config
from fairweather.contracts.metric_logger import NullLogger
from fairweather.stages.train import prompts as stage1


def _image(path: Path, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def setup(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """(cfg overrides, rows of one pair per weather, the storage folder, the list of learn calls)."""
    rows = [
        {
            "input_uri": _image(tmp_path / f"{weather}_in.png", 2 * i),
            "target_uri": _image(tmp_path / f"{weather}_gt.png", 2 * i + 1),
            "weather": weather,
        }
        for i, weather in enumerate(["rain", "haze", "snow"])
    ]
    calls: list[int] = []
    learn = stage1.learn_prompt_context

    def counting(cfg, clip, examples):
        calls.append(len(examples))
        return learn(cfg, clip, examples)

    monkeypatch.setattr(stage1, "learn_prompt_context", counting)
    overrides = [f"runtime.model_cache_dir={model_cache}", "loss.weights.wpl=0.02", "loss.prompt_fit_steps=2"]
    return overrides, {"train": rows, "real": []}, tmp_path / "train", calls


def test_a_second_run_reuses_the_first_runs_prompts_and_new_inputs_learn_again(setup) -> None:
    overrides, rows, storage, calls = setup
    cfg = load_config("smoke", overrides)
    first = stage1.learn_prompts(cfg, rows, f"{storage}/trial-a", NullLogger())
    second = stage1.learn_prompts(cfg, rows, f"{storage}/trial-b", NullLogger())
    assert calls == [6] and torch.equal(first, second)  # 3 weathers + 3 clear targets, learned once
    assert (storage / "trial-b" / stage1.PROMPTS_FILE).is_file()  # a rerun of trial-b reads its own copy
    assert len(list((storage / stage1.SHARED_FOLDER).glob("*.pt"))) == 1

    # Another fitting setting, then other bytes under the same image name: learned again, not reused.
    longer = load_config("smoke", [*overrides[:2], "loss.prompt_fit_steps=3"])
    stage1.learn_prompts(longer, rows, f"{storage}/trial-c", NullLogger())
    _image(Path(rows["train"][0]["input_uri"]), seed=99)
    stage1.learn_prompts(cfg, rows, f"{storage}/trial-d", NullLogger())
    assert calls == [6, 6, 6]
    assert len(list((storage / stage1.SHARED_FOLDER).glob("*.pt"))) == 3
    # A run that has its own file never looks further (its rerun keeps what it trained with).
    stage1.learn_prompts(longer, rows, f"{storage}/trial-a", NullLogger())
    assert calls == [6, 6, 6]


def test_a_damaged_shared_entry_is_learned_again_and_replaced(setup) -> None:
    overrides, rows, storage, calls = setup
    cfg = load_config("smoke", overrides)
    first = stage1.learn_prompts(cfg, rows, f"{storage}/trial-a", NullLogger())
    (entry,) = (storage / stage1.SHARED_FOLDER).glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:40])  # cut short outside the platform
    again = stage1.learn_prompts(cfg, rows, f"{storage}/trial-b", NullLogger())
    assert calls == [6, 6] and torch.equal(first, again)  # the same inputs and seed: the same context
    assert torch.equal(torch.load(entry, weights_only=True), first)  # the entry is whole again
