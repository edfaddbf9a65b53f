"""Pseudo-label selection: normalise, combine by the configured rule, guard against artifacts, replace-if-better
(pure, no Ray, no I/O)."""

from .guards import GUARD_NAMES, guard_values, input_checks
from .select import (
    Agreement,
    Candidate,
    Decision,
    Judge,
    Rule,
    agreement_table,
    average_ranks,
    combine,
    failed_guards,
    guard_limits,
    metric_judge,
    normalise,
    normalised_scores,
    pairwise_agreement,
    rule_judge,
    select,
    standard_judges,
)

__all__ = [
    "GUARD_NAMES",
    "Agreement",
    "Candidate",
    "Decision",
    "Judge",
    "Rule",
    "agreement_table",
    "average_ranks",
    "combine",
    "failed_guards",
    "guard_limits",
    "guard_values",
    "input_checks",
    "metric_judge",
    "normalise",
    "normalised_scores",
    "pairwise_agreement",
    "rule_judge",
    "select",
    "standard_judges",
]
