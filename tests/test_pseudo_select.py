"""Pseudo-label selection on hand-made scores: normalisation, weighted mean, rank vote with ties, replace-if-better,
and the ``pseudo`` config's checks (pure: no Ray, no files)."""

from __future__ import annotations

import json
import math

import pytest

from fairweather.contracts.config import ConfigError, load_config
from fairweather.contracts.config.pseudo import REFERENCE_METRICS
from fairweather.metrics import METRICS
from fairweather.pseudo import Candidate, Rule, average_ranks, combine, normalise, select


def rule(kind: str = "weighted_mean", **extra: object) -> Rule:
    """MUSIQ (0-100, higher better) + PIQE (0-100, lower better) + VLM-Vis (0-1); scores only (the guards have
    their own tests in ``test_pseudo_guards.py``)."""
    overrides = [f"pseudo.combination={kind}", "pseudo.metrics=[musiq,piqe]", "pseudo.use_vlm=true"]
    overrides.append("pseudo.guards.enabled=false")
    overrides += [f"pseudo.{key}={value}" for key, value in extra.items()]
    return Rule.of(load_config("paper", overrides).pseudo)


def test_normalise_by_range_and_direction_clipped():
    assert normalise(50.0, (0.0, 100.0), True) == 0.5
    assert normalise(3.0, (1.0, 5.0), True) == 0.5  # Q-Align / LIQE scale
    assert normalise(20.0, (0.0, 100.0), False) == pytest.approx(0.8)  # PIQE: lower is better, 1 = best
    assert normalise(130.0, (0.0, 100.0), True) == 1.0 and normalise(-5.0, (0.0, 100.0), False) == 1.0


def test_rule_defaults_overrides_and_json():
    r = rule(**{"weights": "{vlm_vis: 2}", "ranges": "{musiq: [20, 80]}", "margin": 0.05})
    assert r.metrics == ("musiq", "piqe", "vlm_vis")
    assert r.weights == {"musiq": 1.0, "piqe": 1.0, "vlm_vis": 2.0}
    assert r.ranges == {"musiq": (20.0, 80.0), "piqe": (0.0, 100.0), "vlm_vis": (0.0, 1.0)}
    assert r.higher_better == {"musiq": True, "piqe": False, "vlm_vis": True}
    data = json.loads(r.to_json())
    assert (
        data["kind"] == "weighted_mean" and data["margin"] == 0.05 and data["ranges"]["musiq"] == [20.0, 80.0]
    )
    assert data["guards"] == {}  # off in these tests; the limits travel with the rule when on
    assert Rule.of(load_config("paper", ["pseudo.use_vlm=false"]).pseudo).metrics == (
        "musiq",
        "clipiqa",
        "qalign",
    )


def test_weighted_mean():
    r = rule(weights="{vlm_vis: 2}")
    a = {"musiq": 60.0, "piqe": 30.0, "vlm_vis": 0.5}  # normalised 0.6, 0.7, 0.5
    b = {"musiq": 40.0, "piqe": 10.0, "vlm_vis": 0.9}  # normalised 0.4, 0.9, 0.9
    combined = combine([a, b], r)
    assert combined[0] == pytest.approx((0.6 + 0.7 + 2 * 0.5) / 4)
    assert combined[1] == pytest.approx((0.4 + 0.9 + 2 * 0.9) / 4)
    # Independent of the other candidates: the same score alone or in a set.
    assert combine([a], r)[0] == pytest.approx(combined[0])
    # A missing or NaN score makes the candidate incomparable, not zero.
    assert math.isnan(combine([{"musiq": 60.0, "piqe": 30.0}], r)[0])
    assert math.isnan(combine([{**a, "vlm_vis": math.nan}], r)[0])


def test_average_ranks_share_ties():
    assert average_ranks([0.3, 0.1, 0.3, 0.9]) == [2.5, 1.0, 2.5, 4.0]
    assert average_ranks([0.5, 0.5, 0.5]) == [2.0, 2.0, 2.0]


def test_rank_vote_with_ties_and_weights():
    r = rule("rank_vote")
    a = {"musiq": 70.0, "piqe": 30.0, "vlm_vis": 0.2}
    b = {"musiq": 50.0, "piqe": 30.0, "vlm_vis": 0.6}
    c = {"musiq": 60.0, "piqe": 50.0, "vlm_vis": 0.6}
    # musiq ranks a 3, c 2, b 1; piqe (lower better) a, b tie at 2.5, c 1; vlm b, c tie at 2.5, a 1.
    # Scaled (rank - 1) / 2: a (1, .75, 0), b (0, .75, .75), c (.5, 0, .75).
    combined = combine([a, b, c], r)
    assert combined == pytest.approx([1.75 / 3, 1.5 / 3, 1.25 / 3])
    heavy = combine([a, b, c], rule("rank_vote", weights="{vlm_vis: 4}"))
    assert heavy == pytest.approx([1.75 / 6, 3.75 / 6, 3.5 / 6])  # the VLM's vote now decides
    # Identical candidates tie exactly; one comparable candidate scores 1.
    assert combine([a, a], r) == pytest.approx([0.5, 0.5])
    assert combine([a, {"musiq": 1.0}], r) == [1.0, pytest.approx(math.nan, nan_ok=True)]


def test_select_replaces_only_improvements_with_margin():
    r = rule()
    current = Candidate("0:input", {"musiq": 40.0, "piqe": 40.0, "vlm_vis": 0.4})
    worse = Candidate("1:ema@round-1", {"musiq": 30.0, "piqe": 40.0, "vlm_vis": 0.4})
    better = Candidate("1:other", {"musiq": 60.0, "piqe": 40.0, "vlm_vis": 0.4})
    decision = select(current, [worse, better], r)
    assert decision.winner == "1:other" and set(decision.combined) == {"0:input", "1:ema@round-1", "1:other"}
    assert select(current, [worse], r).winner is None
    assert select(current, [current.__class__("1:same", current.scores)], r).winner is None  # a tie keeps
    # better is ahead by (0.6 - 0.4) / 3 = 0.067: enough for a margin of 0.05, not for 0.1.
    assert select(current, [better], rule(margin=0.05)).winner == "1:other"
    assert select(current, [better], rule(margin=0.1)).winner is None
    # No current pseudo-label: the best comparable candidate wins; none comparable: nothing is chosen.
    assert select(None, [worse, better], r).winner == "1:other"
    assert select(None, [Candidate("x", {"musiq": 1.0})], r).winner is None
    # A current pseudo-label scored without one of this rule's scorers cannot be compared: it is replaced.
    assert select(Candidate("0:old", {"musiq": 99.0}), [worse], r).winner == "1:ema@round-1"


def test_select_rank_vote_compares_within_the_set_and_is_stable():
    r = rule("rank_vote")
    current = Candidate("0:input", {"musiq": 40.0, "piqe": 40.0, "vlm_vis": 0.4})
    better = Candidate("1:ema", {"musiq": 45.0, "piqe": 35.0, "vlm_vis": 0.5})
    decision = select(current, [better], r)
    assert decision.winner == "1:ema" and decision.combined == {"0:input": 0.0, "1:ema": 1.0}
    assert select(better, [current], r).winner is None  # deciding again with the winner as current keeps it


def test_config_refuses_what_cannot_select():
    for override, words in (
        ("pseudo.metrics=[psnr]", "clean target"),
        ("pseudo.metrics=[vlm_vis]", "use_vlm"),
        ("pseudo.weights={musiq: -1}", ">= 0"),
        ("pseudo.weights={bogus: 1}", "unknown scorer"),
        ("pseudo.ranges={musiq: [5, 1]}", "low < high"),
        ("pseudo.init_folders=[/no/name]", "name=path"),
        ("pseudo.margin=-0.1", ">= 0"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_config("paper", [override])
    with pytest.raises(ConfigError, match="weighs 0"):
        load_config("paper", ["pseudo.use_vlm=false", "pseudo.metrics=[musiq]", "pseudo.weights={musiq: 0}"])


def test_reference_metrics_agree_with_the_registry():
    assert {name for name, spec in METRICS.items() if spec.reference} == REFERENCE_METRICS
    assert all(spec.range[0] < spec.range[1] for spec in METRICS.values())
