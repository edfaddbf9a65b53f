"""A Tune search space as data: which dotted config keys to sample, from which distribution."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .loader import AT_LEAST_ONE, FINITE, ConfigError, build, check_ranges, read_yaml
from .root import check_override_key


@dataclass(frozen=True)
class ParamSpace:
    distribution: Literal["uniform", "loguniform", "choice"]
    low: float | None = None
    high: float | None = None
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_ranges(self, low=FINITE, high=FINITE, values=FINITE)
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("a 'choice' parameter needs 'values'")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"'{self.distribution}' needs low < high")
        elif self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("'loguniform' needs low > 0")


@dataclass(frozen=True)
class SweepSpace:
    #: Metric the sweep optimises (as logged by the training stage) and its direction.
    metric: str
    mode: Literal["min", "max"]
    num_samples: int
    #: dotted config key (e.g. ``loss.weights.ps``) -> its distribution.
    params: dict[str, ParamSpace] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ranges(self, num_samples=AT_LEAST_ONE)


def load_sweep_space(path: str | Path) -> SweepSpace:
    """Load a search space; every parameter must be an existing key of the fairweather config."""
    space = build(SweepSpace, read_yaml(path), source=str(path))
    if not space.params:
        raise ConfigError("a sweep needs at least one parameter", source=str(path), key="params")
    for key in space.params:
        check_override_key(key.split("."), f"{path}: params.{key}")
    return space
