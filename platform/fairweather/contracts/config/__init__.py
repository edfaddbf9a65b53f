"""Typed configuration: frozen dataclasses loaded from YAML with dotted overrides."""

from .loader import ConfigError, build, flatten, to_dict, to_yaml
from .root import CONFIG_DIR, FairweatherConfig, load_config, resolve_profile
from .sweep import SweepConfig, load_sweep

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "FairweatherConfig",
    "SweepConfig",
    "build",
    "flatten",
    "load_config",
    "load_sweep",
    "resolve_profile",
    "to_dict",
    "to_yaml",
]
