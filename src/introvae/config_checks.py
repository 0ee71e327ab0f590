"""How a config value is read and checked: text (JSON, YAML, a flag) to the field's type, and the allowed
values of each field. A bad value is a :class:`ConfigError` whose message starts with the field's name."""

from __future__ import annotations

import dataclasses
from dataclasses import field
import json
import math
from pathlib import Path
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

OBJECTIVES = ("introvae", "vae", "soft-introvae")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: precision.resolve
BN_PROTOCOLS = ("eval", "train", "recalibrate", "posterior")  # the generator's BatchNorm statistics when scored
FEATURE_PRECISIONS = ("fp32", "bf16")  # the FID Inception network's arithmetic (metrics.fid)
WORDS_FOR_NUMBERS = {"margin": ("auto",)}  # number fields that also take these words
ENCODER_STATS = ("running", "real")  # which passes update the encoder's BatchNorm running statistics
GENERATED_NORMS = ("batch", "real")  # what the encoder's BatchNorm normalises generated images with in training
LIKELIHOODS = ("gaussian", "bernoulli")  # the decoder's output distribution (objectives.reconstruction_error)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The fields a JSON or YAML config file sets, as a dict (not yet validated)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text()
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise ConfigError(f"cannot parse config file {p}: {str(e).splitlines()[0]}") from None
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p}: expected a mapping of field names to values")
    return d


def coerce(f: dataclasses.Field, v: Any) -> Any:
    """A value from JSON, YAML or command-line text as the field's type; fails naming the field."""
    t = str(f.type)
    if v is None:
        if "None" in t:
            return None
        raise ConfigError(f"{f.name}: must not be empty")
    base = t.split("|")[0].strip()
    try:
        if base.startswith("tuple"):
            items = [s for s in v.replace(",", " ").split() if s] if isinstance(v, str) else v
            if not isinstance(items, (list, tuple)):
                raise ValueError
            return tuple(_to_int(x) for x in items)
        if base == "bool":
            if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return v.strip().lower() in ("true", "1", "yes")
            if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
                return bool(v)
            raise ValueError
        if base == "int":
            return _to_int(v)
        if base == "float":
            if isinstance(v, bool):
                raise ValueError
            if "str" in t and isinstance(v, str) and v.strip() in WORDS_FOR_NUMBERS.get(f.name, ()):
                return v.strip()  # a field that takes a number or a word (margin: auto)
            return float(v)
        if not isinstance(v, str):
            raise ValueError
        return v
    except (TypeError, ValueError):
        kind = {"bool": "true or false", "tuple[int, ...]": "a list of integers"}.get(base, base)
        raise ConfigError(f"{f.name}: expected {kind}, got {v!r}") from None


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("bool is not an int")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"{v} is not an integer")
        return int(v)
    if isinstance(v, (str, int)):
        return int(v.strip()) if isinstance(v, str) else v
    raise TypeError(type(v).__name__)


def check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


# Allowed values of a field: (predicate, what the message says is expected), given to ``param(rule=...)``.
Rule = tuple[Callable[[Any], bool], str]


def rule(predicate: Callable[[Any], bool], expected: str) -> Rule:
    return predicate, expected


def at_least(n: int, note: str = "") -> Rule:
    return (lambda v: v >= n), f"must be >= {n}{note}"


def finite(op: str, n: float, expected: str | None = None) -> Rule:
    """A finite number ``>= n`` or ``> n``."""
    test = (lambda v: v >= n) if op == ">=" else (lambda v: v > n)
    return (lambda v: math.isfinite(v) and test(v)), expected or f"must be a finite number {op} {n:g}"


def one_of(choices: tuple) -> Rule:
    return (lambda v: v in choices), f"must be one of {', '.join(map(str, choices))}"


POWER_OF_TWO_SIZE = rule(lambda s: 16 <= s <= 1024 and s & (s - 1) == 0, "must be a power of two from 16 to 1024")
POSITIVE_ENTRIES = rule(lambda cs: len(cs) > 0 and all(c >= 1 for c in cs), "every entry must be a positive integer")
MARGIN_RULE = rule(lambda v: v == "auto" or (isinstance(v, float) and math.isfinite(v) and v >= 0),
                   "must be auto or a finite number >= 0")
FRACTION = rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
DEVICE_RULE = rule(lambda v: v in ("auto", "cpu", "mps") or v.startswith("cuda"),
                   "must be auto, cpu, cuda, cuda:N or mps")


def validate_fields(cfg) -> None:
    for f in dataclasses.fields(cfg):
        if f.name == "model":
            continue
        value = coerce(f, getattr(cfg, f.name))  # also turns JSON lists into tuples
        object.__setattr__(cfg, f.name, value)
        if f.metadata.get("rule"):  # no rule: any value of the type
            ok, expected = f.metadata["rule"]
            check(ok(value), f.name, f"{expected}, got {value!r}")


def param(default: Any, help: str, *, group: str, choices: tuple | None = None, rule: Rule | None = None,
          calibrate: bool = True) -> Any:
    """A config field: its default, its help text (``--help``), its group, its allowed values (``choices``, or a
    ``rule`` from :mod:`.config_checks`), from which the flags, the help and the checks are all made;
    ``calibrate=False`` for a field ``introvae calibrate`` (a plain VAE run) has no flag for."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "calibrate": calibrate,
                                            "rule": rule or (one_of(choices) if choices else None)})


def plain(v: Any) -> Any:
    """A field's value as JSON holds it (tuples as lists)."""
    return list(v) if isinstance(v, tuple) else v
