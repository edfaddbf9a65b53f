"""Typed configuration: frozen dataclasses loaded from YAML with dotted overrides."""

from .loader import ConfigError, build, flatten, to_dict
from .root import CONFIG_DIR, FairweatherConfig, load_config, resolve_profile

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "FairweatherConfig",
    "build",
    "flatten",
    "load_config",
    "resolve_profile",
    "to_dict",
]
