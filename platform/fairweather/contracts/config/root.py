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


#: Paths that follow ``runtime.runs_dir`` (or ``synth.out``) unless the file or an override sets them:
#: ``(section, key, (base section, base key), below the base)``, applied in this order.
DERIVED_PATHS: tuple[tuple[str, str, tuple[str, str], str], ...] = (
    ("synth", "out", ("runtime", "runs_dir"), "data"),
    ("data", "pool", ("synth", "out"), "pool"),
    ("data", "paired", ("synth", "out"), "paired"),
    ("data", "tables", ("runtime", "runs_dir"), "tables"),
    ("runtime", "model_cache_dir", ("runtime", "runs_dir"), "models"),
)


_DEFAULTS = {"runtime": RuntimeConfig(), "synth": SynthConfig()}


def derive_paths(data: dict) -> dict:
    """Fill the paths of :data:`DERIVED_PATHS` that ``data`` (a config file's mapping with its overrides) leaves
    unset: ``synth.out`` = ``<runs_dir>/data``, ``data.pool`` / ``data.paired`` = ``<synth.out>/pool`` /
    ``/paired``, ``data.tables`` = ``<runs_dir>/tables``, ``runtime.model_cache_dir`` = ``<runs_dir>/models``.

    So ``runtime.runs_dir=/scratch/x`` alone moves every output of a run; a path set explicitly is kept. With the
    default ``runs_dir`` (``runs``) these are the fields' own defaults.
    """
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for section, key, (base_section, base_key), below in DERIVED_PATHS:
        node = out.setdefault(section, {})
        if not isinstance(node, dict) or key in node:
            continue  # a malformed section is reported by the validation that follows
        base_node = out.get(base_section) or {}
        base = base_node.get(base_key) if isinstance(base_node, dict) else None
        if base is None:
            base = getattr(_DEFAULTS[base_section], base_key)
        if isinstance(base, str):
            node[key] = f"{base.rstrip('/')}/{below}"
    return out


def load_config(name_or_path: str | Path = "smoke", overrides: Sequence[str] = ()) -> FairweatherConfig:
    """Load a profile or YAML file, apply dotted ``key=value`` overrides, derive the paths the file leaves unset
    from ``runtime.runs_dir`` (:func:`derive_paths`), validate everything."""
    path = resolve_profile(name_or_path)
    for text in overrides:
        check_override_key(parse_override(text)[0], text)
    data = derive_paths(apply_overrides(read_yaml(path), overrides))
    source = f"{path} (with overrides {list(overrides)})" if overrides else str(path)
    try:
        return build(FairweatherConfig, data, source=source)
    except ConfigError as err:
        # A bad value given on the command line is the override's fault, not the file's: name the override.
        given = [text for text in overrides if ".".join(parse_override(text)[0]) == err.key]
        if not given:
            raise
        message = str(err).split(f"at '{err.key}': ", 1)[-1]
        raise ConfigError(message, source=f"override {given[-1]!r}", key=err.key) from err
