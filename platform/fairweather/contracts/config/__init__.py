"""Typed configuration: frozen dataclasses loaded from YAML with dotted overrides."""

from .loader import ConfigError, build, flatten, to_dict, to_yaml
from .root import CONFIG_DIR, FairweatherConfig, load_config, resolve_profile
from .sweep import SweepSpace, load_sweep_space

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "FairweatherConfig",
    "SweepSpace",
    "build",
    "flatten",
    "load_config",
    "load_sweep_space",
    "resolve_profile",
    "to_dict",
    "to_yaml",
]
