"""Pseudo-label selection: normalise each scorer's raw scores, combine them by the configured rule, and decide per
image whether a new candidate replaces the current pseudo-label (METHOD.md: "only if it scores higher").

Guarded (issue 20): no-reference scores are easily fooled, so a candidate must also pass every fidelity and
artifact guard of :mod:`fairweather.pseudo.guards` (values precomputed against the input, stored with its scores;
a missing value fails: nothing is accepted unchecked), and the input itself is always in the comparison: an image
without a pseudo-label takes a candidate only if it beats the input. :func:`pairwise_agreement` measures, on images
with a clean target, how often a rule (or one scorer, or one guard) picks the candidate with the higher PSNR.

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

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fairweather.contracts.config.pseudo import GuardConfig, PseudoConfig
from fairweather.metrics import METRICS

from .guards import GUARD_NAMES


@dataclass(frozen=True)
class Rule:
    """A resolved combination rule: every scorer with its weight, range and direction."""

    kind: str  # "weighted_mean" | "rank_vote"
    metrics: tuple[str, ...]
    weights: dict[str, float]
    ranges: dict[str, tuple[float, float]]
    higher_better: dict[str, bool]
    margin: float = 0.0
    #: guard name (:data:`~fairweather.pseudo.guards.GUARD_NAMES`) -> its limit (a maximum, or for
    #: ``guard_structure`` a minimum); empty: no guards.
    guards: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: PseudoConfig) -> Rule:
        """The rule of ``cfg``: its scorers, weights (default 1.0), ranges (default: the metric's known range)
        and guard limits (none when ``pseudo.guards.enabled`` is off)."""
        names = cfg.scorer_names
        return cls(
            kind=cfg.combination,
            metrics=names,
            weights={name: float(cfg.weights.get(name, 1.0)) for name in names},
            ranges={name: tuple(map(float, cfg.ranges.get(name, METRICS[name].range))) for name in names},
            higher_better={name: METRICS[name].higher_better for name in names},
            margin=cfg.margin,
            guards=guard_limits(cfg.guards),
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
            "guards": self.guards,
        }
        return json.dumps(data, sort_keys=True)


def guard_limits(cfg: GuardConfig) -> dict[str, float]:
    """``pseudo.guards`` as ``{guard name: limit}``; empty when the guards are off."""
    if not cfg.enabled:
        return {}
    return {
        "guard_colour": cfg.max_colour,
        "guard_texture": cfg.max_texture,
        "guard_grid": cfg.max_grid,
        "guard_structure": cfg.min_structure,
    }


def failed_guards(scores: Mapping[str, float], rule: Rule) -> tuple[str, ...]:
    """The guards of ``rule`` that a candidate with ``scores`` (its guard values among them) fails: over a
    maximum, under a minimum, or ``"<name>:unchecked"`` when the value is missing or not finite."""
    failed = []
    for name, limit in rule.guards.items():
        value = scores.get(name, math.nan)
        if not math.isfinite(value):
            failed.append(f"{name}:unchecked")
        elif (value > limit) if GUARD_NAMES[name] else (value < limit):
            failed.append(name)
    return tuple(failed)


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
    """The outcome for one image.

    combined: key -> combined score of every candidate, of the current one and of the input;
    winner: the key of the new pseudo-label (the input's when a label that lost its standing is deselected),
    ``None`` when nothing changes;
    rejected: key -> the guards it failed (:func:`failed_guards`), for every member that failed one;
    baseline: the key a winner had to beat (the current pseudo-label, else the input), ``None`` if neither.
    """

    combined: dict[str, float]
    winner: str | None
    rejected: dict[str, tuple[str, ...]] = field(default_factory=dict)
    baseline: str | None = None


def select(
    current: Candidate | None,
    candidates: Sequence[Candidate],
    rule: Rule,
    *,
    input: Candidate | None = None,
) -> Decision:
    """Guarded replace-if-better for one image.

    Args:
        current: the image's pseudo-label, if any.
        candidates: the new candidates (the input itself may be one of them, by the same key as ``input``).
        rule: scorers, combination, margin and guard limits.
        input: the input image as a candidate (its no-reference scores; guards do not apply to it). Always pass
            it: an image without a pseudo-label then takes a candidate only if it beats the input.

    A candidate is eligible when it passes every guard of the rule (:func:`failed_guards`; the input always
    is). The best eligible new candidate wins if it beats the baseline by more than the rule's margin: the
    current pseudo-label when it is comparable and still passes the guards, else the input. With no comparable
    baseline (no current label, no input given), any eligible candidate wins. When no other candidate beats it,
    the input is selected if it is itself a new candidate and the image has no usable current label, or if the
    image has a current label that is no longer usable (the label is deselected). Ties go
    to the current pseudo-label, then to the input, then to the first listed candidate, so deciding twice on the
    same inputs gives the same answer.
    """
    members = ([current] if current is not None else []) + list(candidates)
    keys = {member.key for member in members}
    if input is not None and input.key not in keys:
        members.append(input)
    scores = combine([member.scores for member in members], rule)
    combined = {member.key: score for member, score in zip(members, scores, strict=True)}
    input_key = None if input is None else input.key
    rejected = {
        member.key: failed
        for member in members
        if member.key != input_key and (failed := failed_guards(member.scores, rule))
    }

    def usable(key: str) -> bool:
        return not math.isnan(combined[key]) and key not in rejected

    baseline: str | None = None
    if current is not None and usable(current.key):
        baseline = current.key
    elif input_key is not None and usable(input_key):
        baseline = input_key
    best: Candidate | None = None
    for candidate in candidates:
        value = combined[candidate.key]
        if usable(candidate.key) and (best is None or value > combined[best.key]):
            best = candidate
    # What an image without a usable label falls back to: the input, when it is a new candidate (round 0 lists
    # it) or when the current label lost its standing (it fails guards tightened since it was chosen, or cannot
    # be compared under the rule): such a label is deselected, not kept unchecked.
    current_lost = current is not None and baseline != current.key
    listed = any(c.key == input_key for c in candidates)
    fallback = input_key if baseline == input_key and (listed or current_lost) else None
    if best is None:
        return Decision(combined, fallback, rejected, baseline)
    if (
        baseline is not None
        and best.key != baseline
        and not combined[best.key] > combined[baseline] + rule.margin
    ):
        best = None
    if best is None or best.key == baseline:
        return Decision(combined, fallback, rejected, baseline)
    return Decision(combined, best.key, rejected, baseline)


#: ``judge(a, b)`` for two candidates' values (scores and guard values): > 0 when it prefers ``a``, < 0 ``b``,
#: 0 when it cannot tell them apart.
Judge = Callable[[Mapping[str, float], Mapping[str, float]], int]


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def metric_judge(name: str, higher_better: bool) -> Judge:
    """One scorer (or one guard value) alone: the better value wins; missing or equal values: 0."""

    def judge(a: Mapping[str, float], b: Mapping[str, float]) -> int:
        va, vb = a.get(name, math.nan), b.get(name, math.nan)
        if not (math.isfinite(va) and math.isfinite(vb)):
            return 0
        return _sign(va - vb) if higher_better else _sign(vb - va)

    return judge


def rule_judge(rule: Rule) -> Judge:
    """The whole rule between two candidates: one passing the guards and the other not, the first wins; both
    passing, the higher combined score (:func:`combine` of the pair); neither, or equal: 0."""

    def judge(a: Mapping[str, float], b: Mapping[str, float]) -> int:
        ok_a, ok_b = not failed_guards(a, rule), not failed_guards(b, rule)
        if ok_a != ok_b:
            return 1 if ok_a else -1
        if not ok_a:
            return 0
        ca, cb = combine([a, b], rule)
        return 0 if math.isnan(ca) or math.isnan(cb) else _sign(ca - cb)

    return judge


def standard_judges(rule: Rule) -> dict[str, Judge]:
    """The judges that issue 20 reports: each scorer of ``rule`` alone, each guard alone (its value, the better
    side winning), the rule without guards (``"rule:scores"``) and the whole rule (``"rule"``)."""
    judges = {name: metric_judge(name, rule.higher_better[name]) for name in rule.metrics}
    judges.update({name: metric_judge(name, not worse) for name, worse in GUARD_NAMES.items()})
    judges["rule:scores"] = rule_judge(Rule(**{**rule.__dict__, "guards": {}}))
    judges["rule"] = rule_judge(rule)
    return judges


@dataclass(frozen=True)
class Agreement:
    """How often a judge's choice between two candidates of an image agrees with their PSNR against the target.

    pairs: candidate pairs whose PSNRs differ by more than the minimum gap; agree / disagree: the judge picked
    the higher / lower PSNR; ties: it could not tell them apart.
    """

    pairs: int
    agree: int
    disagree: int
    ties: int

    @property
    def rate(self) -> float:
        """``(agree + ties / 2) / pairs``: 1 always right, 0.5 chance, NaN without pairs."""
        return (self.agree + self.ties / 2) / self.pairs if self.pairs else math.nan


def pairwise_agreement(
    images: Mapping[str, Sequence[tuple[Mapping[str, float], float]]],
    judge: Judge,
    *,
    min_gap: float = 0.0,
) -> Agreement:
    """Pairwise agreement of ``judge`` with PSNR on images whose candidates have a clean target.

    Args:
        images: image id -> its candidates as ``(values, psnr)``: precomputed scores and guard values (include
            the input itself as a candidate, with its own values and its PSNR), and the PSNR against the target.
        judge: e.g. one of :func:`standard_judges`.
        min_gap: pairs whose PSNRs differ by at most this many dB are left out (no truth to agree with).
    """
    agree = disagree = ties = 0
    for candidates in images.values():
        for (va, pa), (vb, pb) in itertools.combinations(candidates, 2):
            if not abs(pa - pb) > min_gap:
                continue
            verdict = judge(va, vb)
            if verdict == 0:
                ties += 1
            elif verdict == _sign(pa - pb):
                agree += 1
            else:
                disagree += 1
    return Agreement(agree + disagree + ties, agree, disagree, ties)


def agreement_table(
    images: Mapping[str, Sequence[tuple[Mapping[str, float], float]]], rule: Rule, *, min_gap: float = 0.0
) -> dict[str, Agreement]:
    """:func:`pairwise_agreement` of every judge of :func:`standard_judges`."""
    return {
        name: pairwise_agreement(images, judge, min_gap=min_gap)
        for name, judge in standard_judges(rule).items()
    }
