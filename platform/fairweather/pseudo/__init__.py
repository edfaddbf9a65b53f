"""Pseudo-label selection: normalise, combine by the configured rule, replace-if-better (pure, no Ray, no I/O)."""

from .select import Candidate, Decision, Rule, average_ranks, combine, normalise, normalised_scores, select

__all__ = [
    "Candidate",
    "Decision",
    "Rule",
    "average_ranks",
    "combine",
    "normalise",
    "normalised_scores",
    "select",
]
