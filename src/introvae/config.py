"""The typed configuration: the single source of truth for a run.

The CLI builds a :class:`Config`, the run directory stores it as ``config.json``,
checkpoints carry it, and presets are named instances of it. A bad value fails
when the config is built, with a message naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .precision import PRECISIONS

# The paper's channel schedule at 1024 px, from full resolution down to 4x4
# (Appendix B). Smaller images drop the highest-resolution stages.
PAPER_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512, 512, 512)

OBJECTIVES = ("introvae", "vae")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True)
class Config:
    """Every hyper-parameter of a run. Names follow the paper (Eq. 9-12, Algorithm 1)."""

    # --- data -------------------------------------------------------------
    data: str = "faces"  # "faces", "fashion-mnist", or a path (folder, zip, IDX directory)
    image_size: int = 32  # power of two, 16..1024; images are centre-cropped and resized
    in_channels: int = 1  # 1 (grayscale) or 3 (RGB)
    holdout_fraction: float = 0.1  # deterministic held-out split for evaluation

    # --- networks (Appendix B) ----------------------------------------------
    latent_dim: int = 128  # M, size of z
    # Channels per resolution, from image_size down to 4x4. A longer list is allowed:
    # its high-resolution end is dropped, as the paper does for smaller images.
    channels: tuple[int, ...] = PAPER_CHANNELS

    # --- objective (Eq. 11-12) ---------------------------------------------
    objective: str = "introvae"  # "introvae", or "vae" (alpha = 0 throughout)
    margin: float = 110.0  # m: the hinge margin on the KL of generated images
    alpha: float = 0.25  # weight of the adversarial (introspective) terms
    beta: float = 0.5  # weight of the reconstruction error L_AE

    # --- optimisation (Section 4.1) ------------------------------------------
    lr: float = 2e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    batch_size: int = 8
    steps: int | None = None  # total optimisation steps (one step = one Algorithm 1 iteration)
    epochs: float | None = None  # or total passes over the training split
    vae_steps: int = 0  # warm-up: alpha = 0 (plain VAE) for the first N steps ...
    vae_epochs: float = 0.0  # ... or the first N epochs (the larger of the two wins)
    seed: int = 0

    # --- speed (numerics of the losses are unaffected: their sums are fp32 throughout) ----------
    device: str = "auto"  # "auto" (the GPU if there is one), "cpu", "cuda", "cuda:1", ...
    precision: str = "fp32"  # "fp32", "bf16" (CPU and GPU) or "fp16" (with a gradient scaler)
    channels_last: bool = False  # NHWC memory layout for the convolutions
    sync_bn: bool = False  # several processes (torchrun): BatchNorm statistics over the global batch
    compile: bool = False  # torch.compile the encoder and the generator
    checkpoint_activations: bool = False  # recompute residual stages in backward (memory for 1024 px)
    ema: float = 0.0  # decay of an exponential moving average of the generator for sampling (0: none)
    loader_workers: int = 0  # processes that decode/collate batches (0: in the training process)

    # --- logging and snapshots ------------------------------------------------
    log_every: int = 50  # steps between stats.jsonl lines
    image_every: int = 500  # steps between image grids and KL plots
    checkpoint_every: int = 1000  # steps between checkpoints
    keep_checkpoints: int = 3  # how many checkpoints to keep
    max_bad_steps: int = 5  # consecutive non-finite steps before rolling back to the last checkpoint
    rollback_lr_factor: float = 0.5  # the learning rate is multiplied by this at each rollback
    grid_size: int = 8  # images per row in grids
    eval_every: int = 0  # steps between FID measurements during training (0: none)
    eval_samples: int = 2000  # generated and real images for those (FID over training is comparable only with itself)

    # ------------------------------------------------------------------------
    def __post_init__(self) -> None:
        # Coerce JSON lists to tuples so configs compare equal after a round trip.
        if isinstance(self.channels, list):
            object.__setattr__(self, "channels", tuple(self.channels))
        _validate(self)

    # --- derived values ---------------------------------------------------
    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels for each resolution from ``image_size`` down to 4 (the used tail of ``channels``)."""
        n = int(math.log2(self.image_size)) - 1
        return tuple(self.channels[-n:])

    def total_steps(self, num_train: int, processes: int = 1) -> int:
        """Number of optimisation steps for a training split of ``num_train`` images (``batch_size`` is
        per process: with several, a step takes ``processes * batch_size`` images)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is None:
            raise ConfigError("steps: give the training length as steps or epochs")
        return max(1, math.ceil(self.epochs * steps_per_epoch(num_train, self.batch_size * processes)))

    def warmup_steps(self, num_train: int, processes: int = 1) -> int:
        """Steps trained as a plain VAE (alpha = 0) before the introspective game starts."""
        by_epochs = math.ceil(self.vae_epochs * steps_per_epoch(num_train, self.batch_size * processes))
        return max(self.vae_steps, by_epochs)

    # --- (de)serialisation ------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build from a plain dict, rejecting unknown fields and mistyped values by name."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping of field names to values, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)} (known: {', '.join(known)})")
        return cls(**{k: _coerce(known[k], v) for k, v in d.items()})

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some fields changed (validated, coerced like ``from_dict``)."""
        d = self.to_dict()
        d.update({k: v for k, v in overrides.items()})
        return Config.from_dict(d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Read a config file (JSON, or YAML by extension ``.yaml``/``.yml``)."""
        return cls.from_dict(read_config_file(path))


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
        raise ConfigError(f"cannot parse config file {p}: {e}") from None
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p}: expected a mapping of field names to values")
    return d


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    # Incomplete last batches are dropped (BatchNorm dislikes a batch of 1).
    return max(1, num_train // batch_size)


_FIELD_TYPES = {
    "int": int,
    "float": float,
    "str": str,
}


def _coerce(f: dataclasses.Field, v: Any) -> Any:
    """Coerce a value from JSON/YAML/CLI text to the field's type; fail naming the field."""
    t = str(f.type)
    if v is None:
        if "None" in t:
            return None
        raise ConfigError(f"{f.name}: must not be empty")
    if f.name == "channels":
        if isinstance(v, str):
            v = [s for s in v.replace(",", " ").split() if s]
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"channels: expected a list of integers, got {v!r}")
        try:
            return tuple(_to_int(x) for x in v)
        except (TypeError, ValueError):
            raise ConfigError(f"channels: expected a list of integers, got {v!r}") from None
    base = t.split("|")[0].strip()
    if base == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return v.strip().lower() in ("true", "1", "yes")
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise ConfigError(f"{f.name}: expected true or false, got {v!r}")
    try:
        if base == "int":
            return _to_int(v)
        if base == "float":
            if isinstance(v, bool):
                raise ValueError
            return float(v)
        if base == "str":
            if not isinstance(v, str):
                raise ValueError
            return v
    except (TypeError, ValueError):
        raise ConfigError(f"{f.name}: expected {base}, got {v!r}") from None
    return v


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("bool is not an int")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"{v} is not an integer")
        return int(v)
    if isinstance(v, str):
        return int(v.strip())
    if isinstance(v, int):
        return v
    raise TypeError(type(v).__name__)


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _validate(c: Config) -> None:
    s = c.image_size
    _check(isinstance(s, int) and 16 <= s <= 1024 and s & (s - 1) == 0, "image_size",
           f"must be a power of two from 16 to 1024, got {s!r}")
    _check(c.in_channels in (1, 3), "in_channels", f"must be 1 (grayscale) or 3 (RGB), got {c.in_channels!r}")
    _check(0.0 <= c.holdout_fraction < 1.0, "holdout_fraction", f"must be in [0, 1), got {c.holdout_fraction!r}")
    _check(isinstance(c.data, str) and c.data != "", "data", "must name a data set or a path")
    _check(c.latent_dim >= 1, "latent_dim", f"must be >= 1, got {c.latent_dim!r}")
    n = int(math.log2(s)) - 1
    _check(len(c.channels) >= n, "channels",
           f"image_size {s} needs {n} entries (one per resolution from {s} down to 4), got {len(c.channels)}")
    _check(all(isinstance(ch, int) and ch >= 1 for ch in c.channels), "channels",
           f"every entry must be a positive integer, got {list(c.channels)}")
    _check(c.precision in PRECISIONS, "precision", f"must be fp32, bf16 or fp16, got {c.precision!r}")
    _check(isinstance(c.device, str) and (c.device in ("auto", "cpu") or c.device.startswith(("cuda", "mps"))),
           "device", f"must be auto, cpu, cuda or cuda:N, got {c.device!r}")
    _check(c.objective in OBJECTIVES, "objective", f"must be one of {', '.join(OBJECTIVES)}, got {c.objective!r}")
    for name in ("margin", "alpha", "beta"):
        v = getattr(c, name)
        _check(math.isfinite(v) and v >= 0, name, f"must be a finite number >= 0, got {v!r}")
    _check(c.beta > 0, "beta", "must be > 0 (without the reconstruction term IntroVAE is no autoencoder)")
    _check(math.isfinite(c.lr) and c.lr > 0, "lr", f"must be > 0, got {c.lr!r}")
    for name in ("adam_beta1", "adam_beta2"):
        v = getattr(c, name)
        _check(0.0 <= v < 1.0, name, f"must be in [0, 1), got {v!r}")
    _check(c.batch_size >= 2, "batch_size", f"must be >= 2 (BatchNorm needs more than one image), got {c.batch_size!r}")
    _check(c.steps is None or c.steps >= 1, "steps", f"must be >= 1, got {c.steps!r}")
    _check(c.epochs is None or (math.isfinite(c.epochs) and c.epochs > 0), "epochs", f"must be > 0, got {c.epochs!r}")
    _check(not (c.steps is not None and c.epochs is not None), "steps",
           "give either steps or epochs, not both")
    _check(c.vae_steps >= 0, "vae_steps", f"must be >= 0, got {c.vae_steps!r}")
    _check(math.isfinite(c.vae_epochs) and c.vae_epochs >= 0, "vae_epochs", f"must be >= 0, got {c.vae_epochs!r}")
    _check(c.eval_every >= 0, "eval_every", f"must be >= 0 (0 turns it off), got {c.eval_every!r}")
    _check(c.eval_samples >= 2, "eval_samples", f"must be >= 2, got {c.eval_samples!r}")
    _check(0.0 < c.rollback_lr_factor <= 1.0, "rollback_lr_factor", f"must be in (0, 1], got {c.rollback_lr_factor!r}")
    _check(0.0 <= c.ema < 1.0, "ema",
           f"must be in [0, 1) (0 turns it off; 0.999 is typical), got {c.ema!r}")
    _check(c.loader_workers >= 0, "loader_workers", f"must be >= 0, got {c.loader_workers!r}")
    for name in ("log_every", "image_every", "checkpoint_every", "keep_checkpoints", "grid_size", "max_bad_steps"):
        v = getattr(c, name)
        _check(v >= 1, name, f"must be >= 1, got {v!r}")


# ---------------------------------------------------------------------------
# Presets: the paper's (Section 4.1, Appendix D) and small CPU ones of ours.
# The CPU presets' margins were calibrated with `introvae calibrate` (see README).
# ---------------------------------------------------------------------------
PRESETS: dict[str, Config] = {
    "celeba128": Config(image_size=128, in_channels=3, latent_dim=256, margin=110.0, alpha=0.25, beta=0.5,
                        batch_size=64),
    "lsun256": Config(image_size=256, in_channels=3, latent_dim=512, margin=120.0, alpha=0.25, beta=0.05,
                      batch_size=32),
    "celebahq256": Config(image_size=256, in_channels=3, latent_dim=512, margin=120.0, alpha=0.25, beta=0.05,
                          batch_size=32),
    # The 1024 px margin is the one value of the table that could not be read back from
    # the paper's text (EQUATIONS.md marks it unverified); calibrate before trusting it.
    "celebahq1024": Config(image_size=1024, in_channels=3, latent_dim=512, margin=90.0, alpha=0.25, beta=0.0025,
                           batch_size=8),
}


# Small CPU presets. Margins from `introvae calibrate` (1.5x the plain-VAE KL; see calibrate.py and README).
PRESETS.update({
    # The 100 built-in LFW faces (25x25 grayscale, shown at 32 px).
    "faces": Config(data="faces", image_size=32, in_channels=1, latent_dim=64, channels=(32, 64, 128, 128),
                    margin=35.0, alpha=0.25, beta=10.0, batch_size=16, log_every=25, image_every=250,
                    checkpoint_every=500),
    # Fashion-MNIST at 32 px.
    "fashion-mnist": Config(data="fashion-mnist", image_size=32, in_channels=1, latent_dim=128,
                            channels=(32, 64, 128, 256), margin=42.0, alpha=0.25, beta=10.0,
                            batch_size=32, log_every=50, image_every=500, checkpoint_every=1000),
    # A starting point for a folder of your own RGB photographs. Not calibrated (no RGB data set
    # ships offline): run `introvae calibrate` on your data before trusting m and beta.
    "rgb64": Config(data="faces", image_size=64, in_channels=3, latent_dim=128, channels=(32, 64, 128, 256, 256),
                    margin=60.0, alpha=0.25, beta=5.0, batch_size=16, log_every=25,
                    image_every=250, checkpoint_every=500),
})


def register_preset(name: str, cfg: Config) -> None:
    PRESETS[name] = cfg


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name]
