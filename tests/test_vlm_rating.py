"""Rating math (METHOD.md): softmax over the five words, r_vlm = sum w p, VLM-Vis = (r_vlm - 1) / 4; prompts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairweather.contracts.config.vlm import VLMConfig
from fairweather.vlm import (
    DESCRIPTION,
    QUALITY,
    RATING_WORDS,
    VISIBILITY,
    prompt_versions,
    rating_from_logits,
    rating_from_token_scores,
    rating_prompt,
)


def test_uniform_logits_give_middle_rating():
    probs, r_vlm, vlm_vis = rating_from_logits([0.7] * 5)
    np.testing.assert_allclose(probs, [0.2] * 5)
    assert r_vlm == pytest.approx(3.0)
    assert vlm_vis == pytest.approx(0.5)


@pytest.mark.parametrize(("index", "expected"), [(0, 5.0), (1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)])
def test_one_large_logit_gives_that_words_weight(index, expected):
    logits = torch.zeros(5)
    logits[index] = 1e4  # huge: exercises the max-shift that keeps exp() finite
    _, r_vlm, vlm_vis = rating_from_logits(logits)
    assert r_vlm == pytest.approx(expected, abs=1e-9)
    assert vlm_vis == pytest.approx((expected - 1) / 4, abs=1e-9)


def test_hand_computed_vector():
    # exp(logits) = [1, 2, 1, 1, 1] -> p = [1, 2, 1, 1, 1] / 6 -> r = (5 + 8 + 3 + 2 + 1) / 6 = 19 / 6
    probs, r_vlm, vlm_vis = rating_from_logits([0.0, math.log(2.0), 0.0, 0.0, 0.0])
    np.testing.assert_allclose(probs, np.array([1, 2, 1, 1, 1]) / 6)
    assert r_vlm == pytest.approx(19 / 6)
    assert vlm_vis == pytest.approx((19 / 6 - 1) / 4)


def test_logprobs_over_full_vocab_give_the_same_rating_as_logits():
    torch.manual_seed(0)
    vocab_logits = torch.randn(3, 50, dtype=torch.float64) * 3
    ids = [7, 3, 41, 18, 0]
    from_logits = rating_from_logits(vocab_logits[:, ids])
    from_logprobs = rating_from_logits(torch.log_softmax(vocab_logits, dim=-1)[:, ids])
    for a, b in zip(from_logits, from_logprobs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_batched_matches_rows():
    torch.manual_seed(1)
    logits = torch.randn(4, 5)
    probs, r_vlm, vlm_vis = rating_from_logits(logits)
    assert probs.shape == (4, 5) and r_vlm.shape == (4,) and vlm_vis.shape == (4,)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    for row in range(4):
        _, r_row, v_row = rating_from_logits(logits[row].numpy())
        assert r_vlm[row] == pytest.approx(float(r_row))
        assert vlm_vis[row] == pytest.approx(float(v_row))
    assert np.all((r_vlm >= 1) & (r_vlm <= 5))


def test_minus_infinity_is_probability_zero():
    probs, r_vlm, _ = rating_from_logits([0.0, -math.inf, -math.inf, -math.inf, -math.inf])
    np.testing.assert_allclose(probs, [1, 0, 0, 0, 0])
    assert r_vlm == pytest.approx(5.0)


@pytest.mark.parametrize(
    "bad",
    [[0.0] * 4, [[0.0] * 6], np.zeros((2, 2, 5)), [0.0, math.nan, 0.0, 0.0, 0.0], [-math.inf] * 5],
)
def test_bad_logits_raise(bad):
    with pytest.raises(ValueError):
        rating_from_logits(bad)


def test_token_scores_complete_and_incomplete():
    ids = (11, 12, 13, 14, 15)
    rating = rating_from_token_scores({11: 0.0, 12: 0.0, 13: 0.0, 14: 0.0, 15: 0.0, 99: 5.0}, ids)
    assert rating.complete and rating.r_vlm == pytest.approx(3.0) and rating.vlm_vis == pytest.approx(0.5)
    # a missing id is flagged, never counted as probability zero
    missing = rating_from_token_scores({11: 0.0, 12: 0.0, 13: 0.0, 14: 0.0}, ids)
    assert not missing.complete
    assert math.isnan(missing.r_vlm) and all(math.isnan(p) for p in missing.probs)
    with pytest.raises(ValueError, match="5 rating token ids"):
        rating_from_token_scores({}, ids[:4])


def test_prompts_are_methods_text_and_versioned():
    assert VISIBILITY.text == (
        "Rate the visibility of the image against rain, fog, and snow. "
        "Please answer with excellent, good, fair, poor, or bad."
    )
    assert (
        QUALITY.text
        == "Rate the quality of the image. Please answer with excellent, good, fair, poor, or bad."
    )
    assert all(word in DESCRIPTION.text for word in ("clear", "rainy", "hazy", "snowy"))
    assert all(word in VISIBILITY.text for word in RATING_WORDS)
    assert rating_prompt(VLMConfig(rating_prompt="quality")) is QUALITY
    assert prompt_versions(VLMConfig()) == {
        "rating": VISIBILITY.version,
        "description": DESCRIPTION.version,
        "rewrite": "rewrite-rules-v1",
    }
    assert prompt_versions(VLMConfig(rewrite="llm"))["rewrite"] == "rewrite-v1"
    with pytest.raises(ValueError, match="rating_prompt"):
        rating_prompt(VLMConfig(rating_prompt="sharpness"))  # type: ignore[arg-type]
