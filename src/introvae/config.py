"""The typed configuration: a model's, and a run's that contains it.

:class:`ModelConfig` is what builds the networks and all that an export stores. :class:`TrainConfig`
holds a model config plus the objective, optimiser, data, schedule and runtime of a run; the run
directory stores it as ``config.json`` and every checkpoint carries it. Each field's help text and
group live in its metadata: the command line's flags are generated from them (one list of fields).
A bad value fails when the config is built, with a message that starts with the field's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .config_checks import (DEVICE_RULE, ENCODER_STATS, FRACTION, GENERATED_NORMS, MARGIN_RULE, OBJECTIVES, PRECISIONS,
                            at_least, check, coerce, finite, param, plain, read_config_file, rule, validate_fields)
from .data.imageset import HOLDOUT_FRACTION
from .devices import DEVICE_HELP
from .errors import ConfigError
from .model_config import ModelConfig

# Groups whose fields may change when a run is resumed (with steps and epochs, to extend it).
RESUMABLE_GROUPS = ("runtime", "logging")
RESUMABLE_FIELDS = ("steps", "epochs")
# What a fork (`train --fork`: a new run from another's checkpoint) may change besides: the game's weights, the
# margin and the learning rate, which act step by step, and the batch (the run's length, the warm-up's end and
# the rate's schedule stay where they were in images seen). The networks, data, seed, optimiser's form, warm-up
# and alpha's early phase stay the source's.
FORKABLE_FIELDS = ("alpha", "beta", "beta_rec", "beta_kl", "beta_neg", "gamma_r", "margin", "lr", "lr_half_life",
                   "lr_decay_start", "generated_norm", "batch_size")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Names follow the paper (Eq. 9-12, Algorithm 1)."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"group": "model"})

    data: str | None = param(None, "faces (built in), fashion-mnist, or a path: a folder of images (searched "
                                   "recursively), a zip of images, an LMDB database or a directory of IDX files",
                             rule=rule(lambda v: v is None or v != "", "must name a data set or a path"), group="data")
    holdout_fraction: float = param(HOLDOUT_FRACTION, "fraction of the images held out for reconstructions and "
                                                      "evaluation (a fixed split; IDX data uses its own test file)",
                                    rule=FRACTION, group="data")
    mirror: bool = param(True, "flip each training image left-right with probability 1/2 (the authors' is_mirror); "
                               "the flips follow the seed and epoch, so a resumed run sees the same ones. Turn off "
                               "(--no-mirror) for data that a flip makes unreal: text, digits, asymmetric layouts",
                         group="data")

    objective: str = param("introvae", "introvae (Algorithm 1), vae (the same networks as a plain VAE) or "
                                       "soft-introvae (Daniel & Tamar 2021: no margin; see --beta-neg)",
                           calibrate=False, group="objective", choices=OBJECTIVES)
    margin: float | str = param("auto", "m, the hinge margin of Eq. 11: the encoder pushes the KL of generated "
                                        "images up to m. auto: 1.5x the KL of real images that the VAE warm-up "
                                        "(--vae-steps) reaches (a moving average over about 50 steps), kept from "
                                        "then on and raised only if kl_real climbs within 10%% of it, so kl_real "
                                        "stays below m (the paper's rule for stability); or a number (the paper's "
                                        "presets; `introvae calibrate` helps choose one)",
                                rule=MARGIN_RULE, calibrate=False, group="objective")
    alpha: float = param(0.25, "weight of the introspective (adversarial) terms of Eq. 11-12 (paper: 0.25)",
                         rule=finite(">=", 0), calibrate=False, group="objective")
    alpha_early: float = param(0.5, "alpha for the first --alpha-early-epochs epochs of training (the VAE warm-up "
                                    "counted in them), --alpha from then on: a stronger game while the samples are "
                                    "still blurry (not in the paper; see the fashion-mnist preset)",
                               rule=finite(">=", 0), group="objective")
    alpha_early_epochs: float = param(0.0, "epochs trained with --alpha-early before --alpha takes over (0: --alpha "
                                           "throughout, as the paper)",
                                      rule=finite(">=", 0, "must be >= 0"), group="objective")
    beta: float = param(0.5, "weight of the reconstruction error L_AE in Eq. 11-12; larger improves "
                             "reconstructions, may reduce diversity and needs a larger margin",
                        rule=finite(">=", 0), group="objective")
    beta_rec: float = param(1.0, "soft-introvae: weight of the reconstruction error (a plain sum of squares) in "
                                 "both phases", rule=finite(">", 0), calibrate=False, group="objective")
    beta_kl: float = param(1.0, "soft-introvae: weight of the KL of real images (encoder phase) and of "
                                "reconstructed and sampled images (generator phase)",
                           rule=finite(">", 0), calibrate=False, group="objective")
    beta_neg: float = param(256.0, "soft-introvae: weight of the KL in the ELBO of generated images inside the "
                                   "encoder's exp(-2 s ELBO) term: the knob; of the order of the latent size (too "
                                   "small and kl_fake falls below kl_real)", rule=finite(">=", 0), calibrate=False,
                            group="objective")
    gamma_r: float = param(1e-8, "soft-introvae: weight of the generated images' own reconstruction in the "
                                 "generator phase (authors: 1e-8)", rule=finite(">=", 0), calibrate=False,
                           group="objective")
    target_grad: bool = param(False, "soft-introvae: in the encoder phase, let the reconstruction x_r, as the target "
                                     "of its own re-reconstruction, pass its gradient on into E, as the authors' "
                                     "code does (off: ng(x_r) throughout, as the paper)", calibrate=False,
                              group="objective")
    vae_steps: int = param(0, "VAE warm-up: train as a plain VAE (alpha = 0) for the first N steps, as the paper "
                              "advises (Soft-IntroVAE's is weighed as its authors' code: on images its game's "
                              "gradients then start s = 1/(C*H*W) times smaller and Adam's steps stay small for "
                              "thousands of steps, so its image presets have none)", rule=at_least(0),
                           calibrate=False, group="objective")
    vae_epochs: float = param(0.0, "VAE warm-up in epochs (the longer of the two warm-ups wins)",
                              rule=finite(">=", 0, "must be >= 0"), calibrate=False, group="objective")
    encoder_stats: str = param("real", "the encoder's BatchNorm running statistics: real (its passes over "
                                       "generated images leave them to the real images, so that eval mode "
                                       "normalises real images as training did; measured better, see README) or "
                                       "running (every pass updates them, as before 0.2)",
                               group="objective", choices=ENCODER_STATS)
    # Algorithm 1 encodes real, reconstructed and sampled images in separate passes; with BatchNorm in the encoder
    # (the authors' networks) each pass is normalised by its own batch, so the encoder can tell a batch of generated
    # images from a batch of real ones by the batch's statistics alone. Measured on Fashion-MNIST (seed 2 at epochs
    # 5, 8 and 14): in training mode samples' KL 67.0, 41.4, 68.6 against real images' 47.7, 32.4, 36.2; in eval mode
    # (every image normalised by the real images' running statistics) 39.0, 36.5, 35.4 against 37.9, 36.7, 34.6;
    # in batches half real, half generated within 2. "real" judges generated images image by image, in the
    # coordinates eval mode uses for every image, and the generator collapses to one image (measured from scratch and
    # forked: docs/defaults-fashion-mnist.md): the batch statistics are what keeps the samples diverse, as minibatch
    # discrimination in a GAN. An ablation.
    generated_norm: str = param("batch", "what the encoder's BatchNorm normalises generated images (x_r, x_p) with "
                                         "in training, in both phases: batch (each pass its own batch's statistics, "
                                         "as Algorithm 1 run on the authors' networks does) or real (the real images' "
                                         "running statistics, as eval mode: the encoder judges each image alone; an "
                                         "ablation: the generator collapses to one image; needs encoder_stats real)",
                                group="objective", choices=GENERATED_NORMS)

    lr: float = param(2e-4, "Adam learning rate of both networks (paper: 2e-4, fixed)",
                      rule=finite(">", 0, "must be > 0"), group="optimisation")
    lr_half_life: float = param(0.0, "epochs of images over which both learning rates halve, continuously from the "
                                "start (0: a fixed rate, as the paper); a run's rate depends only on the images seen, "
                                "so a longer run passes through the shorter one's checkpoints",
                                rule=finite(">=", 0, "must be >= 0 (0: a fixed rate)"), group="optimisation")
    lr_decay_start: float = param(0.0, "epochs of images after which the halving of --lr-half-life begins (0: from "
                                  "the start); a fork of a late checkpoint with both decays only from there on",
                                  rule=finite(">=", 0, "must be >= 0 (0: from the start)"), group="optimisation")
    adam_beta1: float = param(0.9, "Adam's beta1 (paper: 0.9)", rule=FRACTION, group="optimisation")
    adam_beta2: float = param(0.999, "Adam's beta2 (paper: 0.999)", rule=FRACTION, group="optimisation")
    batch_size: int = param(8, "images per step and process (paper: 8; 64/32/12/8 at 128/256/512/1024 px in its "
                               "speed table)",
                            rule=at_least(2, " (BatchNorm needs more than one image)"), group="optimisation")
    seed: int = param(0, "random seed: initialisation, batch order, z draws (same seed, same run on a CPU)",
                      group="optimisation")

    steps: int | None = param(None, "total training steps; a step is one iteration of Algorithm 1 (an encoder and "
                                    "a generator update)",
                              rule=rule(lambda v: v is None or v >= 1, "must be >= 1"), group="schedule")
    epochs: float | None = param(None, "total passes over the training split (instead of --steps)",
                                 rule=rule(lambda v: v is None or (math.isfinite(v) and v > 0), "must be > 0"),
                                 group="schedule")

    device: str = param("auto", DEVICE_HELP, rule=DEVICE_RULE, group="runtime")
    precision: str = param("auto", "auto (bf16 with channels-last on a CPU with AVX512-BF16 or AMX, else fp32), fp32, "
                                   "bf16 (autocast; CPU and GPU) or fp16 (autocast and a gradient scaler); the KL, "
                                   "hinge and reconstruction sums stay fp32", group="runtime",
                           choices=PRECISIONS)
    channels_last: bool = param(False, "NHWC memory layout for the convolutions (faster with bf16 on CPUs with AMX, "
                                       "and on GPUs)", group="runtime")
    sync_bn: bool = param(False, "several processes (torchrun): BatchNorm statistics over the global batch",
                          calibrate=False, group="runtime")
    compile: bool = param(False, "torch.compile the training passes (slow first steps; mostly for GPUs)",
                          group="runtime")
    checkpoint_activations: bool = param(False, "recompute the residual blocks in the backward pass: less memory "
                                                "(1024 px), about a third more compute", group="runtime")
    ema: float = param(0.0, "decay of an exponential moving average of the generator to sample from (e.g. 0.999; "
                            "0: none)",
                       rule=rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1) (0 turns it off; 0.999 is typical)"),
                       calibrate=False, group="runtime")
    loader_workers: int = param(-1, "processes that prepare batches (decoding, for streamed data); 0: the training "
                                    "process; -1: auto (on a GPU with streamed data, from the cores; otherwise none)",
                                rule=rule(lambda v: v >= -1, "must be >= 0, or -1 for auto"), group="runtime")

    log_every: int = param(50, "steps between lines of stats.jsonl", rule=at_least(1), group="logging")
    image_every: int = param(500, "steps between image grids and KL plots", rule=at_least(1), calibrate=False,
                             group="logging")
    checkpoint_every: int = param(0, "steps between checkpoints (0: by time only, see --checkpoint-minutes)",
                                  rule=at_least(0, " (0: by time only)"), group="logging")
    checkpoint_minutes: float = param(5.0, "minutes of training between checkpoints (0: by steps only); the "
                                           "end, Ctrl-C and SIGTERM always write one",
                                      rule=finite(">=", 0, "must be >= 0 (0: by steps only)"), group="logging")
    keep_checkpoints: int = param(3, "how many checkpoints to keep; with --checkpoint-every, how many of those, and "
                                     "the ones written between them until a newer one exists",
                                  rule=at_least(1), group="logging")
    max_bad_steps: int = param(5, "non-finite steps in a row before rolling back to the last checkpoint",
                               rule=at_least(1), group="logging")
    rollback_lr_factor: float = param(0.5, "the learning rate is multiplied by this at each rollback",
                                      rule=rule(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"), group="logging")
    grid_size: int = param(8, "images per row of the image grids", rule=at_least(1), group="logging")
    logger: str = param("auto", "also log the curves, grids and evaluations to TensorBoard (RUN/tensorboard; the "
                                "tensorboard extra) or Weights & Biases (wandb: project $WANDB_PROJECT or introvae; "
                                "the wandb extra): tensorboard, wandb, none, or auto (TensorBoard when the package "
                                "is installed; the first line says which)",
                        group="logging", choices=("auto", "tensorboard", "wandb", "none"))
    eval_every: int = param(0, "steps between FID measurements during training (0: none)",
                            rule=at_least(0, " (0 turns it off)"), calibrate=False, group="logging")
    eval_samples: int = param(10_000, "generated and real images per FID measurement during training (10,000: the "
                                      "literature's protocol; fewer are faster but biased upwards)",
                              rule=at_least(2), calibrate=False, group="logging")

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        validate_fields(self)
        check(self.beta > 0, "beta", "must be > 0 (without the reconstruction term IntroVAE is no autoencoder)")
        check(not (self.objective == "soft-introvae" and self.model.likelihood != "gaussian"), "likelihood",
              "soft-introvae scores generated images with its own squared error: use --likelihood gaussian")
        check(not (self.steps is not None and self.epochs is not None), "steps",
               "give either steps or epochs, not both")
        check(self.generated_norm == "batch" or self.encoder_stats == "real", "generated_norm",
              "real normalises generated images with the real images' running statistics: it needs encoder_stats real")

    # --- derived values ---------------------------------------------------
    def epochs_to_steps(self, epochs: float, num_train: int, processes: int = 1) -> int:
        """Optimisation steps that see ``epochs`` epochs of ``num_train`` images (rounded up)."""
        return math.ceil(epochs * steps_per_epoch(num_train, self.batch_size * processes))

    def total_steps(self, num_train: int, processes: int = 1) -> int:
        """Optimisation steps for ``num_train`` training images (``batch_size`` per process)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is None:
            raise ConfigError("steps: give the training length as steps or epochs")
        return max(1, self.epochs_to_steps(self.epochs, num_train, processes))

    @property
    def likelihood(self) -> str:
        """The decoder's likelihood (:attr:`ModelConfig.likelihood`), which the objectives read."""
        return self.model.likelihood

    def warmup_steps(self, num_train: int, processes: int = 1) -> int:
        """Steps trained as a plain VAE (alpha = 0) before the introspective game starts."""
        if self.objective == "vae":
            return 0
        return max(self.vae_steps, self.epochs_to_steps(self.vae_epochs, num_train, processes))

    def alpha_words(self) -> str:
        """alpha as a person reads it: "0.25", or "0.5 for 1 epoch(s), then 0.25"."""
        if self.alpha_early_epochs > 0:
            return f"{self.alpha_early:g} for {self.alpha_early_epochs:g} epoch(s), then {self.alpha:g}"
        return f"{self.alpha:g}"

    def weights_words(self) -> str:
        """The objective's weights as a person reads them: "margin auto, alpha 0.25, beta 10" for IntroVAE."""
        if self.objective == "soft-introvae":
            return f"beta_rec {self.beta_rec:g}, beta_kl {self.beta_kl:g}, beta_neg {self.beta_neg:g}"
        if self.objective == "vae":
            return f"beta {self.beta:g}"
        margin = self.margin if self.margin == "auto" else f"{self.margin:g}"
        return f"margin {margin}, alpha {self.alpha_words()}, beta {self.beta:g}"

    def alpha_early_steps(self, num_train: int, processes: int = 1) -> int:
        """The step at which ``alpha`` takes over from ``alpha_early`` (0: never early)."""
        if self.objective != "introvae":
            return 0
        return self.epochs_to_steps(self.alpha_early_epochs, num_train, processes)

    # --- (de)serialisation ------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "model"}
        return {"model": self.model.to_dict(), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From a mapping, nested (``{"model": {...}, ...}``, as ``config.json`` is written) or flat (model
        fields beside the others, as in a config file or on the command line); unknown fields are named."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping of field names to values, got {type(d).__name__}")
        d = dict(d)
        nested = d.pop("model", None) or {}
        if not isinstance(nested, dict):
            raise ConfigError(f"model: expected a mapping of model fields, got {nested!r}")
        model_names = {f.name for f in fields(ModelConfig)}
        model = {**nested, **{k: d.pop(k) for k in list(d) if k in model_names}}
        return cls(model=ModelConfig.from_dict(model), **_coerced(cls, d))

    def replace(self, **overrides: Any) -> "TrainConfig":
        """A copy with some fields changed (flat names; validated and coerced like ``from_dict``). A length
        given as ``steps`` replaces one in ``epochs`` and the other way round."""
        nested = overrides.pop("model", None) or {}
        if not isinstance(nested, dict):
            raise ConfigError(f"model: expected a mapping of model fields, got {nested!r}")
        overrides = {**nested, **overrides}
        for given, other in (("steps", "epochs"), ("epochs", "steps")):
            if overrides.get(given) is not None and other not in overrides:
                overrides[other] = None
        return TrainConfig.from_dict({**flat_dict(self), **overrides})

    def changes(self, other: "TrainConfig") -> list[tuple[str, Any, Any]]:
        """(field, this value, other value) for every flat field in which ``other`` differs."""
        a, b = flat_dict(self), flat_dict(other)
        return [(k, a[k], b[k]) for k in a if a[k] != b[k]]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a config file (JSON, or YAML by extension ``.yaml``/``.yml``)."""
        return cls.from_dict(read_config_file(path))


def flat_fields() -> list[dataclasses.Field]:
    """Every setting as one flat list: the model's fields, then the run's. The CLI's flags come from it."""
    return [*fields(ModelConfig), *(f for f in fields(TrainConfig) if f.name != "model")]


def flat_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {**d.pop("model"), **d}


def field_value(cfg: TrainConfig, name: str) -> Any:
    """A flat field's value: the model's fields by their own name."""
    return getattr(cfg.model, name) if name in {f.name for f in fields(ModelConfig)} else getattr(cfg, name)


def group_of(name: str) -> str:
    return next(f.metadata["group"] for f in flat_fields() if f.name == name)


def may_change_on_resume(name: str) -> bool:
    return name in RESUMABLE_FIELDS or group_of(name) in RESUMABLE_GROUPS


def may_change_on_fork(name: str) -> bool:
    return may_change_on_resume(name) or name in FORKABLE_FIELDS


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    # Incomplete last batches are dropped (BatchNorm dislikes a batch of 1).
    return max(1, num_train // batch_size)


def _coerced(cls, d: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls) if f.name != "model"}
    unknown = sorted(set(d) - set(known))
    if unknown:
        import difflib

        every = [f.name for f in flat_fields()]
        guesses = [f"{k} -> {m[0]}" for k in unknown
                   if (m := difflib.get_close_matches(k.replace("-", "_").lstrip("_"), every, n=1, cutoff=0.6))]
        hint = f"did you mean {', '.join(guesses)}? " if guesses else ""
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)} ({hint}known: {', '.join(every)})")
    return {k: coerce(known[k], v) for k, v in d.items()}
