"""How a config value is read and checked: text (JSON, YAML, a flag) to the field's type, and the allowed
values of each field. A bad value is a :class:`ConfigError` whose message starts with the field's name."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from .errors import ConfigError

OBJECTIVES = ("introvae", "vae", "soft-introvae")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: precision.resolve
BN_PROTOCOLS = ("eval", "train", "recalibrate")  # the generator's BatchNorm statistics when scored
FEATURE_PRECISIONS = ("fp32", "bf16")  # the FID Inception network's arithmetic (metrics.fid)
WORDS_FOR_NUMBERS = {"margin": ("auto",)}  # number fields that also take these words
ENCODER_STATS = ("running", "real")  # the encoder's


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


# Allowed values per field: (predicate, what the message says is expected).
_RULES: dict[str, tuple[Any, str]] = {
    "image_size": (lambda s: 16 <= s <= 1024 and s & (s - 1) == 0, "must be a power of two from 16 to 1024"),
    "in_channels": (lambda c: c in (1, 3), "must be 1 (grayscale) or 3 (RGB)"),
    "latent_dim": (lambda v: v >= 1, "must be >= 1"),
    "channels": (lambda cs: len(cs) > 0 and all(c >= 1 for c in cs), "every entry must be a positive integer"),
    "data": (lambda v: v is None or v != "", "must name a data set or a path"),
    "holdout_fraction": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "objective": (lambda v: v in OBJECTIVES, f"must be one of {', '.join(OBJECTIVES)}"),
    "encoder_stats": (lambda v: v in ENCODER_STATS, f"must be one of {', '.join(ENCODER_STATS)}"),
    "margin": (lambda v: v == "auto" or (isinstance(v, float) and math.isfinite(v) and v >= 0),
               "must be auto or a finite number >= 0"),
    "alpha": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "alpha_early": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "alpha_early_epochs": (lambda v: math.isfinite(v) and v >= 0, "must be >= 0"),
    "beta": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "beta_rec": (lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0"),
    "beta_kl": (lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0"),
    "beta_neg": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "gamma_r": (lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
    "vae_steps": (lambda v: v >= 0, "must be >= 0"),
    "vae_epochs": (lambda v: math.isfinite(v) and v >= 0, "must be >= 0"),
    "lr": (lambda v: math.isfinite(v) and v > 0, "must be > 0"),
    "adam_beta1": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "adam_beta2": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "batch_size": (lambda v: v >= 2, "must be >= 2 (BatchNorm needs more than one image)"),
    "steps": (lambda v: v is None or v >= 1, "must be >= 1"),
    "epochs": (lambda v: v is None or (math.isfinite(v) and v > 0), "must be > 0"),
    "device": (lambda v: v in ("auto", "cpu", "mps") or v.startswith("cuda"), "must be auto, cpu, cuda, cuda:N or mps"),
    "precision": (lambda v: v in PRECISIONS, "must be auto, fp32, bf16 or fp16"),
    "ema": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1) (0 turns it off; 0.999 is typical)"),
    "loader_workers": (lambda v: v >= -1, "must be >= 0, or -1 for auto"),
    "checkpoint_every": (lambda v: v >= 0, "must be >= 0 (0: by time only)"),
    "checkpoint_minutes": (lambda v: math.isfinite(v) and v >= 0, "must be >= 0 (0: by steps only)"),
    "rollback_lr_factor": (lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
    "eval_every": (lambda v: v >= 0, "must be >= 0 (0 turns it off)"),
    "eval_samples": (lambda v: v >= 2, "must be >= 2"),
    **{name: (lambda v: v >= 1, "must be >= 1")
       for name in ("log_every", "image_every", "keep_checkpoints", "grid_size", "max_bad_steps")},
}


def validate_fields(cfg) -> None:
    for f in dataclasses.fields(cfg):
        if f.name == "model":
            continue
        value = coerce(f, getattr(cfg, f.name))  # also turns JSON lists into tuples
        object.__setattr__(cfg, f.name, value)
        ok, expected = _RULES.get(f.name, (lambda v: True, ""))  # no rule: any value of the type
        check(ok(value), f.name, f"{expected}, got {value!r}")
