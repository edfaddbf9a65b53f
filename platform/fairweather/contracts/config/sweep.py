"""A Tune sweep as data: the base profile, fixed overrides, a search space over dotted config keys (or named
variants), the objective, the scheduler and the trial budget. ``fairweather sweep --sweep <file>`` runs one.

Every key a sweep names is a key of the fairweather config (checked at load time, like a command-line override);
every trial's config is then built through :func:`load_config` with the trial's values as overrides, so a trial
config is validated exactly like ``fairweather train key=value``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .loader import (
    AT_LEAST_ONE,
    FINITE,
    NON_NEGATIVE,
    ConfigError,
    Range,
    build,
    check_ranges,
    read_yaml,
    to_dict,
)
from .root import check_override_key

#: The Tune config key that holds a trial's variant name (a sweep with ``variants:``).
VARIANT_KEY = "variant"


@dataclass(frozen=True)
class ParamSpace:
    """One sampled key: ``uniform``/``loguniform`` between ``low`` and ``high``, ``choice`` (sampled) or ``grid``
    (every value, each ``num_samples`` times) of ``values``."""

    distribution: Literal["uniform", "loguniform", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_ranges(self, low=FINITE, high=FINITE, values=FINITE)
        if self.distribution in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"a '{self.distribution}' parameter needs 'values'")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"'{self.distribution}' needs low < high")
        elif self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("'loguniform' needs low > 0")

    def extremes(self) -> tuple[float, ...]:
        """The values a trial can take at the edges of the space (every value of a list)."""
        return self.values if self.values else (float(self.low), float(self.high))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Variant:
    """A named set of overrides (one row of an ablation table); a sweep runs every variant."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping. ``asha``: a trial is compared at ``grace_period``, ``grace_period * reduction_factor``, ...
    units of ``time_attr`` (training steps: they survive a restore, unlike Tune's ``training_iteration``) and
    stopped when it is not in the top ``1 / reduction_factor`` of the trials that reached that point."""

    kind: Literal["none", "asha"] = "none"
    grace_period: int = 1
    reduction_factor: float = 2.0
    time_attr: Literal["step"] = "step"

    def __post_init__(self) -> None:
        check_ranges(self, grace_period=AT_LEAST_ONE, reduction_factor=Range(1, low_open=True))


@dataclass(frozen=True)
class SweepConfig:
    #: Objective: a validation metric the training reports with every checkpoint (``val/psnr/overall``, ...).
    metric: str
    mode: Literal["min", "max"]
    #: Name of the sweep (MLflow parent run, Tune experiment); None: the sweep file's name.
    name: str | None = None
    #: Profile (or YAML) every trial starts from; ``fairweather sweep --config`` replaces it.
    base: str = "smoke"
    #: Overrides every trial shares (dotted key -> value), applied before the sampled values.
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Samples of the space (a ``grid`` is repeated this many times, Tune's rule).
    num_samples: int = 1
    #: dotted config key (e.g. ``loss.weights.ps``) -> its distribution.
    params: dict[str, ParamSpace] = field(default_factory=dict)
    #: Named override sets, every one run (crossed with ``params``).
    variants: tuple[Variant, ...] = ()
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    #: Search algorithm: Tune's random/grid generator (Optuna is not installed in this project).
    search: Literal["random"] = "random"
    #: Trials running at once; 0: as many as the cluster's CPUs (GPUs) hold trainers of ``train.scaling``.
    max_concurrent_trials: int = 0
    #: Seed of the search algorithm's sampling: the same sweep file samples the same trials, and a resumed sweep
    #: the ones an uninterrupted run would have (a changed seed is a new sweep).
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, num_samples=AT_LEAST_ONE, max_concurrent_trials=NON_NEGATIVE, seed=NON_NEGATIVE)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")

    def fingerprint(self, base: str, overrides: list[str]) -> str:
        """12 hex of everything that decides the trials: a changed sweep (or base, or override) is a new sweep."""
        data = {**to_dict(self), "base": base, "cli_overrides": list(overrides)}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def as_override(key: str, value: Any) -> str:
    """``key=value`` in the command-line override syntax (values as YAML flow scalars: JSON is valid YAML, except
    that YAML 1.1 reads ``1e-07`` as a string: an exponent needs a dot, ``1.0e-07``)."""
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e")
    return f"{key}={text}"


def trial_overrides(sweep: SweepConfig, sampled: Mapping[str, Any], cli: Sequence[str] = ()) -> list[str]:
    """A trial's overrides in the order they apply: the sweep's fixed ones, the command line's, its variant's,
    its sampled values (so a sampled value always wins)."""
    variant = next((v for v in sweep.variants if v.name == sampled.get(VARIANT_KEY)), None)
    items = [
        *(variant.overrides.items() if variant else ()),
        *((k, v) for k, v in sampled.items() if k != VARIANT_KEY),
    ]
    return [
        *(as_override(k, v) for k, v in sweep.fixed.items()),
        *cli,
        *(as_override(k, v) for k, v in items),
    ]


def load_sweep(path: str | Path) -> SweepConfig:
    """Load and validate a sweep file: every key it names must be a key of the fairweather config."""
    source = str(path)
    sweep = build(SweepConfig, read_yaml(path), source=source)
    if not sweep.params and not sweep.variants:
        raise ConfigError("a sweep needs 'params' or 'variants'", source=source, key="params")
    keys = [("params", k) for k in sweep.params] + [("fixed", k) for k in sweep.fixed]
    keys += [(f"variants[{v.name}]", k) for v in sweep.variants for k in v.overrides]
    for where, key in keys:
        check_override_key(key.split("."), f"{path}: {where}.{key}")
    return sweep if sweep.name else dataclasses.replace(sweep, name=Path(path).stem)
