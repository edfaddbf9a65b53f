"""Rating math of METHOD.md: five next-token scores -> probabilities, r_vlm in [1, 5] and VLM-Vis in [0, 1].

A softmax over a subset of log-probabilities equals the softmax over the same tokens' logits (the normaliser of
the full-vocabulary softmax cancels), so one function serves raw logits (transformers) and logprobs (vLLM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fairweather.contracts.vocab import RATING_WORDS

if TYPE_CHECKING:  # for the annotation only: a label actor imports no torch for this module
    import torch

#: r_vlm weights of the five words (Q-Align style): excellent=5 ... bad=1.
RATING_WEIGHTS: tuple[float, ...] = (5.0, 4.0, 3.0, 2.0, 1.0)


@dataclass(frozen=True)
class Rating:
    """One image's VLM rating.

    probs: softmax over the five rating tokens, order ``RATING_WORDS``.
    r_vlm: sum of weight * prob, in [1, 5].  vlm_vis: (r_vlm - 1) / 4, in [0, 1].
    complete: False when the backend did not return all five tokens' scores; then probs are NaN, never a
    renormalised guess over fewer words.
    """

    probs: tuple[float, ...]
    r_vlm: float
    vlm_vis: float
    complete: bool


def rating_from_logits(
    logits: torch.Tensor | np.ndarray | Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five logits (or log-probabilities) -> (probs, r_vlm, vlm_vis).

    logits: ``(5,)`` or ``(N, 5)`` in the order excellent, good, fair, poor, bad (a tensor on any device, any
    dtype). Plain NumPy, tensors read by duck typing: a label actor imports no torch for it (2 CPU-s per actor
    process; a vLLM or transformers engine brings its own).
    Returns float64 arrays: probs ``(..., 5)`` summing to 1, r_vlm ``(...)`` in [1, 5], vlm_vis ``(...)`` in [0, 1].
    """
    values = logits.detach().double().cpu().numpy() if hasattr(logits, "detach") else logits
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != len(RATING_WORDS):
        raise ValueError(f"logits must have shape (5,) or (N, 5), got {array.shape}")
    # -inf is a legitimate log-probability (a token the model rules out); NaN, +inf or an all -inf row are not.
    if np.isnan(array).any() or np.isposinf(array).any():
        raise ValueError("logits contain NaN or +inf; a missing token must not be scored")
    if np.isneginf(array).all(axis=-1).any():
        raise ValueError("every rating token has logit -inf; probabilities are undefined")
    # Subtract the row max before exp so large logits (e.g. 1e4) do not overflow.
    shifted = np.exp(array - array.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    r_vlm = probs @ np.asarray(RATING_WEIGHTS)
    vlm_vis = (r_vlm - 1.0) / 4.0
    return probs, r_vlm, vlm_vis


def rating_from_token_scores(scores: Mapping[int, float], token_ids: Sequence[int]) -> Rating:
    """Build a ``Rating`` from a token-id -> logit/logprob map and the five rating ids (order ``RATING_WORDS``).

    A map that lacks any of the five ids gives ``complete=False`` with NaN values, so a top-k that missed a word
    is visible in the tables instead of silently counting that word as probability zero.
    """
    if len(token_ids) != len(RATING_WORDS):
        raise ValueError(f"need {len(RATING_WORDS)} rating token ids, got {len(token_ids)}")
    if any(token_id not in scores for token_id in token_ids):
        nan = float("nan")
        return Rating(probs=(nan,) * len(RATING_WORDS), r_vlm=nan, vlm_vis=nan, complete=False)
    probs, r_vlm, vlm_vis = rating_from_logits([scores[token_id] for token_id in token_ids])
    return Rating(
        probs=tuple(float(p) for p in probs), r_vlm=float(r_vlm), vlm_vis=float(vlm_vis), complete=True
    )
