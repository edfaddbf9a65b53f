"""Transformers backend on the tiny LLaVA (built once per module), request rendering, and label_images."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fairweather.contracts.config.vlm import VLMConfig
from fairweather.tiny import llava, resolve_model_ref
from fairweather.vlm import (
    CLEAR_PREFIX,
    DESCRIPTION,
    QUALITY,
    RATING_WORDS,
    WEATHER_CLASSES,
    VLMBackend,
    build_backend,
    label_images,
    rating_prompt,
)
from fairweather.vlm.requests import render_prompt, to_pil

CFG = VLMConfig(model_id="tiny:llava", device="cpu", max_new_tokens=6)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def backend(cache_dir):
    torch.manual_seed(0)
    return build_backend(CFG, resolve_model_ref(CFG.model_id, cache_dir))


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # different sizes on purpose: the image processor resizes them all to the model's input size
    return [rng.integers(0, 256, (24 + 9 * i, 40, 3), dtype=np.uint8) for i in range(count)]


def test_loads_through_the_auto_classes(backend):
    assert isinstance(backend, VLMBackend)
    assert type(backend.processor).__name__ == "LlavaProcessor"
    assert type(backend.model).__name__ == "LlavaForConditionalGeneration"
    assert backend.processor.tokenizer.padding_side == "left"


def test_rating_ids_are_the_words(backend):
    ids = backend.rating_token_ids(rating_prompt(CFG).text)
    assert [backend.processor.tokenizer.decode([i]).strip() for i in ids] == list(RATING_WORDS)


def test_render_prompt_contains_the_exact_prompt(backend):
    rendered = render_prompt(backend.processor, QUALITY.text, with_image=True)
    assert rendered == f"USER: <image>\n{QUALITY.text} ASSISTANT:"
    text_only = render_prompt(backend.processor, "Rewrite this.", with_image=False)
    assert "<image>" not in text_only and "Rewrite this." in text_only
    with pytest.raises(ValueError, match="non-empty"):
        render_prompt(backend.processor, "  ", with_image=False)


def test_rating_logprobs_are_the_models_next_token_logits(backend):
    images = _images(3)
    prompt = rating_prompt(CFG).text
    ids = backend.rating_token_ids(prompt)
    scores = backend.rating_logprobs(images, prompt)
    assert len(scores) == 3 and all(set(s) == set(ids) for s in scores)
    # independent forward pass of image 1 alone
    rendered = render_prompt(backend.processor, prompt, with_image=True)
    pil = backend.processor(images=[to_pil(images[1])], text=[rendered], return_tensors="pt")
    with torch.no_grad():
        logits = backend.model(**pil).logits[0, -1]
    np.testing.assert_allclose([scores[1][i] for i in ids], logits[list(ids)].numpy(), rtol=1e-4, atol=1e-5)
    # batching (left padding) does not change a row's result
    single = backend.rating_logprobs([images[2]], prompt)[0]
    np.testing.assert_allclose([single[i] for i in ids], [scores[2][i] for i in ids], rtol=1e-4, atol=1e-5)
    # different images give different scores (the image reaches the model)
    assert not np.allclose([scores[0][i] for i in ids], [scores[1][i] for i in ids])


def test_generate_with_and_without_images(backend):
    images = _images(2, seed=1)
    answers = backend.generate(images, [DESCRIPTION.text, "Describe the sky."], max_new_tokens=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    texts = backend.generate(
        None, ["Rewrite: rain.", "A much longer text prompt to force left padding here."], 5
    )
    assert len(texts) == 2
    # left padding keeps a short prompt's greedy answer the same as alone
    assert backend.generate(None, ["Rewrite: rain."], 5)[0] == texts[0]
    with pytest.raises(ValueError, match="one image per prompt"):
        backend.generate(images, ["only one"], 5)


def test_label_images_end_to_end(backend):
    labels = label_images(backend, _images(2, seed=2), CFG)
    assert len(labels) == 2
    for label in labels:
        assert label.rating.complete
        assert 1.0 <= label.rating.r_vlm <= 5.0 and 0.0 <= label.rating.vlm_vis <= 1.0
        assert sum(label.rating.probs) == pytest.approx(1.0)
        assert label.d_pos.startswith(CLEAR_PREFIX)
        assert label.weather in WEATHER_CLASSES
    llm_labels = label_images(backend, _images(1, seed=3), replace(CFG, rewrite="llm"))
    assert llm_labels[0].d_pos.startswith(CLEAR_PREFIX)


def test_bad_images_raise_naming_the_culprit(backend):
    images = _images(2)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        label_images(backend, [images[0], images[1].astype(np.float32)], CFG)
    with pytest.raises(TypeError, match=r"images\[0\]"):
        label_images(backend, [[[0, 0, 0]]], CFG)  # type: ignore[list-item]


class _IncompleteBackend:
    """A backend whose engine 'forgot' one rating id (as a top-k could)."""

    model_id = "fake"

    def rating_token_ids(self, prompt: str) -> tuple[int, ...]:
        return (1, 2, 3, 4, 5)

    def rating_logprobs(self, images, prompt):
        return [{1: -1.0, 2: -2.0, 3: -3.0, 4: -4.0} for _ in images]

    def generate(self, images, prompts, max_new_tokens):
        return ["A snowy road." for _ in prompts]


def test_missing_rating_id_is_flagged_not_zero():
    (label,) = label_images(_IncompleteBackend(), _images(1), CFG)
    assert not label.rating.complete
    assert label.weather == "snow" and label.d_pos.startswith(CLEAR_PREFIX)


def test_tiny_build_is_deterministic(tmp_path, cache_dir):
    llava.build(tmp_path)
    first = Path(resolve_model_ref("tiny:llava", cache_dir))  # already built by the backend fixture: cached
    for name in ("model.safetensors", "tokenizer.json"):
        digest = [hashlib.sha256((folder / name).read_bytes()).hexdigest() for folder in (tmp_path, first)]
        assert digest[0] == digest[1], name
    assert (tmp_path / "chat_template.jinja").exists() or (tmp_path / "chat_template.json").exists()


def test_unknown_backend_raises(cache_dir):
    with pytest.raises(ValueError, match="unknown VLM backend"):
        build_backend(replace(CFG, backend="onnx"), resolve_model_ref(CFG.model_id, cache_dir))  # type: ignore[arg-type]
