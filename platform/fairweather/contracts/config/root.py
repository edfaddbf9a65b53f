"""The whole configuration tree and the function that loads it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import get_type_hints

from .data import DataConfig
from .encoders import EncodersConfig
from .evaluate import EvaluateConfig
from .loader import ConfigError, apply_overrides, build, parse_override, read_yaml
from .loss import LossConfig
from .model import ModelConfig
from .pseudo import PseudoConfig
from .runtime import RuntimeConfig
from .synth import SynthConfig
from .train import TrainConfig
from .vlm import LabelJobConfig, VLMConfig

#: Folder of the shipped profiles: package data (``fairweather/profiles/*.yaml``), so a wheel install finds them too.
CONFIG_DIR = Path(str(resources.files("fairweather").joinpath("profiles")))


@dataclass(frozen=True)
class FairweatherConfig:
    #: Name of the profile, recorded with every run.
    profile: str = "custom"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    label: LabelJobConfig = field(default_factory=LabelJobConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def check_override_key(path: list[str], text: str) -> None:
    """Reject an override whose dotted key does not exist, naming the override (not the file)."""
    cls: type = FairweatherConfig
    for depth, part in enumerate(path):
        names = {f.name for f in dataclasses.fields(cls)}
        if part not in names:
            raise ConfigError(
                f"unknown key '{part}' (known: {', '.join(sorted(names))})",
                source=f"override {text!r}",
                key=".".join(path[: depth + 1]),
            )
        hint = get_type_hints(cls)[part]
        if depth < len(path) - 1:
            if not dataclasses.is_dataclass(hint):
                raise ConfigError(f"'{part}' is a value, not a section", source=f"override {text!r}")
            cls = hint


def resolve_profile(name_or_path: str | Path) -> Path:
    """A shipped profile name (``smoke``) or a YAML path -> the YAML path.

    A bare name of a shipped profile always means the profile, even when the current folder holds a file or
    folder of that name (``./smoke`` names that one).
    """
    candidate = Path(name_or_path)
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if "/" not in str(name_or_path) and not candidate.suffix and shipped.is_file():
        return shipped
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"no such config file or profile (profiles: {known})", source=str(name_or_path))


def load_config(name_or_path: str | Path = "smoke", overrides: Sequence[str] = ()) -> FairweatherConfig:
    """Load a profile or YAML file, apply dotted ``key=value`` overrides, validate everything."""
    path = resolve_profile(name_or_path)
    for text in overrides:
        check_override_key(parse_override(text)[0], text)
    data = apply_overrides(read_yaml(path), overrides)
    source = f"{path} (with overrides {list(overrides)})" if overrides else str(path)
    return build(FairweatherConfig, data, source=source)
