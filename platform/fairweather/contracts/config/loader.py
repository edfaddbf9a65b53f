"""Typed YAML configs: frozen dataclasses, strict validation, dotted ``key=value`` overrides.

A config file is parsed into a tree of frozen dataclasses. Every key must exist in the dataclass it lands in
and every value must have the field's type; otherwise a :class:`ConfigError` names the key and the file.
Overrides use the same dotted paths as the YAML (``loss.weights.ps=0.3``); their values are parsed as YAML
scalars/lists, so ``model.arch=nafnet`` and ``synth.size=[64,64]`` both work. Files and overrides are read by one
YAML loader (:func:`load_yaml`) that also takes YAML 1.2 exponent floats: PyYAML follows YAML 1.1, where ``1e-4``,
``3E5`` and ``1.0e4`` (no dot, or no exponent sign) are strings.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from fairweather.contracts.errors import FairweatherError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2 floats with an exponent: ``1e4``, ``1e-4``, ``3E5``, ``1.0e4``, ``.5e3``."""


# Tried after PyYAML's own resolvers (bool, float, int, ...), so it only adds what YAML 1.1 leaves a string.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text safely (no tags that build objects), with exponent floats as numbers."""
    return yaml.load(text, Loader=_Loader)


class ConfigError(FairweatherError, ValueError):
    """A config could not be loaded; the message names the file and the dotted key."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source, self.key = source, key
        where = " ".join(
            part for part in (f"in {source}" if source else "", f"at '{key}'" if key else "") if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class FieldRangeError(ValueError):
    """A section's field lies outside its valid range; :func:`build` reports it at the field's dotted key."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Range:
    """A valid numeric range; ``None`` leaves a side unbounded, ``*_open`` excludes the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        # NaN and infinities are never valid settings (every comparison with NaN is False anyway).
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


FINITE = Range()
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
UNIT_INTERVAL = Range(0, 1)
#: Every learning rate (``train.lr``, ``loss.prompt_fit_lr``): finite, > 0 and at most 1. Adam-type optimisers
#: step each weight by about the learning rate, so more than 1 only destroys the weights (3e38 overflows inside
#: Adam); the shipped profiles use 1e-4 to 5e-3.
LEARNING_RATE = Range(0, 1, low_open=True)


def check_ranges(config: Any, **ranges: Range) -> None:
    """Call from a config section's ``__post_init__``: every named field must lie in its range.

    A ``None`` value (an optional field left unset) passes; a tuple is checked element by element. Raises
    :class:`FieldRangeError`, which :func:`build` reports at the field's dotted key with the file or override,
    e.g. ``in smoke.yaml at 'vlm.max_new_tokens': must be >= 1, got 0``, or ``in override
    'vlm.max_new_tokens=0' at ...`` when an override gave it.
    """
    for name, valid in ranges.items():
        value = getattr(config, name)
        for item in value if isinstance(value, tuple) else (value,):
            if item is not None and item not in valid:
                raise FieldRangeError(name, f"must be {valid}, got {value!r}")


def check_ordered_pairs(config: Any, *names: str) -> None:
    """Each named ``(low, high)`` field must have ``low <= high`` (sampling ranges)."""
    for name in names:
        low, high = getattr(config, name)
        if low > high:
            raise FieldRangeError(name, f"must be a (low, high) pair with low <= high, got {(low, high)!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise a ConfigError naming ``key``."""
    origin, args = get_origin(tp), get_args(tp)

    def fail(expected: str) -> typing.NoReturn:
        raise ConfigError(
            f"expected {expected}, got {value!r} ({type(value).__name__})", source=source, key=key
        )

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, source)
            except ConfigError as err:
                errors.append(err)
        fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        fail("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            fail(f"a mapping for {tp.__name__}")
        return build(tp, value, source=source, prefix=key)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            fail(f"a list of {len(args)} items")
        return tuple(
            _coerce(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            fail("a mapping")
        kt, vt = args or (str, Any)
        return {_coerce(kt, k, key, source): _coerce(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        fail("a string")
    raise ConfigError(f"unsupported field type {tp!r}", source=source, key=key)


def build(cls: type[T], data: Mapping[str, Any], *, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"unknown key (known: {', '.join(sorted(fields))})", source=source, key=key)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, key, source)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError("required key is missing", source=source, key=key)
    try:
        return cls(**kwargs)
    except FieldRangeError as err:  # a range check of one field: report it at that field's key
        key = f"{prefix}.{err.field}" if prefix else err.field
        raise ConfigError(str(err), source=source, key=key) from err
    except (TypeError, ValueError) as err:  # __post_init__ checks of the section itself
        raise ConfigError(str(err), source=source, key=prefix or None) from err


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def to_yaml(config: Any) -> str:
    """The config as YAML text in field order; :func:`read_yaml` + :func:`build` give the same config back."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted ``key -> value`` pairs of every leaf, e.g. for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in to_dict(config).items() if prefix == "" else config.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1). Values are parsed as YAML (numbers, booleans, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value", source="command line")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of raw config data with dotted overrides applied (validation happens in :func:`build`)."""
    import copy

    merged = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"'{part}' is a value, not a section", source="command line", key=".".join(path)
                )
            node = child
        node[path[-1]] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping or raise a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file ({err.strerror or err})", source=str(path)) from err
    except UnicodeDecodeError as err:
        raise ConfigError("not a YAML text file (it is not UTF-8 text)", source=str(path)) from err
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML: {err}", source=str(path)) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", source=str(path))
    return data
