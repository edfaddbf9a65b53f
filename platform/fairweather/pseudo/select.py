"""Pseudo-label selection: normalise each scorer's raw scores, combine them by the configured rule, and decide per
image whether a new candidate replaces the current pseudo-label (METHOD.md: "only if it scores higher").

Pure functions on plain values: no Ray, no I/O; the pseudo-label stage reads and writes the tables around them.

Rules (the paper does not publish its combination, so both are offered and the rule travels with every row):

- ``weighted_mean``: each score is mapped to [0, 1] by its range (``(v - low) / (high - low)``, clipped, flipped
  for lower-is-better metrics so 1 is always best), then averaged with the scorer weights. A candidate's score
  does not depend on the others, so it can be compared with a pseudo-label chosen in an earlier round.
- ``rank_vote``: within one image's candidate set (the current pseudo-label included), each scorer ranks the
  candidates by their normalised score, ties sharing the average rank; ranks are scaled to [0, 1] (best = 1) and
  averaged with the scorer weights (a weighted Borda count). It ignores how far apart scores are, only their
  order, so one scorer's outlier cannot outvote the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fairweather.contracts.config.pseudo import PseudoConfig
from fairweather.metrics import METRICS


@dataclass(frozen=True)
class Rule:
    """A resolved combination rule: every scorer with its weight, range and direction."""

    kind: str  # "weighted_mean" | "rank_vote"
    metrics: tuple[str, ...]
    weights: dict[str, float]
    ranges: dict[str, tuple[float, float]]
    higher_better: dict[str, bool]
    margin: float = 0.0

    @classmethod
    def of(cls, cfg: PseudoConfig) -> Rule:
        """The rule of ``cfg``: its scorers, weights (default 1.0), ranges (default: the metric's known range)."""
        names = cfg.scorer_names
        return cls(
            kind=cfg.combination,
            metrics=names,
            weights={name: float(cfg.weights.get(name, 1.0)) for name in names},
            ranges={name: tuple(map(float, cfg.ranges.get(name, METRICS[name].range))) for name in names},
            higher_better={name: METRICS[name].higher_better for name in names},
            margin=cfg.margin,
        )

    def to_json(self) -> str:
        """The rule as sorted JSON: what every ``pseudo_labels`` row records in ``combination``."""
        data = {
            "kind": self.kind,
            "metrics": list(self.metrics),
            "weights": self.weights,
            "ranges": {name: list(bounds) for name, bounds in self.ranges.items()},
            "higher_better": self.higher_better,
            "margin": self.margin,
        }
        return json.dumps(data, sort_keys=True)


def normalise(value: float, bounds: tuple[float, float], higher_better: bool) -> float:
    """``value`` on its metric's scale -> [0, 1] with 1 the best end; outside the range it is clipped."""
    low, high = bounds
    unit = min(1.0, max(0.0, (value - low) / (high - low)))
    return unit if higher_better else 1.0 - unit


def normalised_scores(scores: Mapping[str, float], rule: Rule) -> dict[str, float]:
    """The rule's scorers of ``scores`` normalised; a scorer missing or non-finite gives NaN."""
    out = {}
    for name in rule.metrics:
        value = scores.get(name, math.nan)
        out[name] = (
            normalise(value, rule.ranges[name], rule.higher_better[name])
            if math.isfinite(value)
            else math.nan
        )
    return out


def _weighted(values: Mapping[str, float], rule: Rule) -> float:
    total = sum(rule.weights[name] for name in rule.metrics)
    return sum(rule.weights[name] * values[name] for name in rule.metrics) / total


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, the smallest value first; equal values share the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def combine(candidates: Sequence[Mapping[str, float]], rule: Rule) -> list[float]:
    """Combined score in [0, 1] of each candidate (raw ``{scorer: value}``) of ONE image under ``rule``.

    A candidate missing a scorer of the rule (or with a non-finite value) gets NaN: it cannot be compared. For
    ``rank_vote`` such candidates are left out of the ranking; a set of one comparable candidate scores 1.
    """
    normalised = [normalised_scores(scores, rule) for scores in candidates]
    comparable = [i for i, values in enumerate(normalised) if not any(map(math.isnan, values.values()))]
    combined = [math.nan] * len(candidates)
    if rule.kind == "weighted_mean":
        for i in comparable:
            combined[i] = _weighted(normalised[i], rule)
        return combined
    if rule.kind != "rank_vote":
        raise ValueError(f"unknown combination {rule.kind!r}")
    span = max(1, len(comparable) - 1)
    scaled = {i: {} for i in comparable}
    for name in rule.metrics:
        ranks = average_ranks([normalised[i][name] for i in comparable])
        for i, rank in zip(comparable, ranks, strict=True):
            scaled[i][name] = (rank - 1) / span if len(comparable) > 1 else 1.0
    for i in comparable:
        combined[i] = _weighted(scaled[i], rule)
    return combined


@dataclass(frozen=True)
class Candidate:
    """One candidate of an image: an id (the stage uses ``"<round>:<source>"``) and its raw scores."""

    key: str
    scores: Mapping[str, float]


@dataclass(frozen=True)
class Decision:
    """The outcome for one image. combined: key -> combined score of every candidate and of the current one;
    winner: the key of the new pseudo-label, ``None`` when the current one stays."""

    combined: dict[str, float]
    normalised: dict[str, dict[str, float]]
    winner: str | None


def select(current: Candidate | None, candidates: Sequence[Candidate], rule: Rule) -> Decision:
    """Replace-if-better for one image: the best new candidate wins if it beats ``current`` by more than the
    rule's margin (any comparable candidate wins when there is no current pseudo-label, or when the current one
    cannot be scored under this rule). Ties go to the current pseudo-label, then to the first listed candidate,
    so deciding twice on the same inputs gives the same answer.
    """
    members = ([current] if current is not None else []) + list(candidates)
    scores = combine([member.scores for member in members], rule)
    combined = {member.key: score for member, score in zip(members, scores, strict=True)}
    normalised = {member.key: normalised_scores(member.scores, rule) for member in members}
    best: Candidate | None = None
    for candidate in candidates:
        value = combined[candidate.key]
        if not math.isnan(value) and (best is None or value > combined[best.key]):
            best = candidate
    if best is None:
        return Decision(combined, normalised, None)
    comparable = current is not None and not math.isnan(combined[current.key])
    if comparable and not combined[best.key] > combined[current.key] + rule.margin:
        return Decision(combined, normalised, None)
    return Decision(combined, normalised, best.key)
