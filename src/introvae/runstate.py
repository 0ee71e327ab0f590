"""A run's state at a step, and its ways to and from disk: checkpoints, resume, rollback.

A checkpoint holds everything an uninterrupted run would still have in memory: both networks, both
optimisers, the EMA generator, the gradient scaler, the step, the data cursor (epoch, and images of it
used), the schedule in steps, the rollbacks so far and the RNG states. A run resumed from it ends with
exactly the weights of one that was never stopped (on a CPU; tested).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from . import distributed as dist_
from .config import TrainConfig, may_change_on_fork, may_change_on_resume, steps_per_epoch
from .ema import make_ema
from .margin import AutoMargin, make_margin
from .errors import UserError
from .model import IntroVAE, load_state_strict
from .precision import make_precision
from .step import load_optimizer_state, make_optimizers
from .runs import newest_readable_checkpoint
from .schedule import Schedule, same_images
from .version import __version__


def epochs_seen(epoch: int, epoch_images: int, num_train: int) -> float:
    """Epochs of training images seen, from the data cursor (whatever batches saw them)."""
    return epoch + epoch_images / num_train


class RunState:
    """The model, its optimisers and the counters of a run, built from its config on ``device``."""

    def __init__(self, config: TrainConfig, *, device: torch.device, world: dist_.World, num_train: int):
        self.config, self.device, self.world = config, device, world
        torch.manual_seed(config.seed)  # initialisation and the z / eps draws: the same on every process
        model = IntroVAE(config.model).to(device).checkpoint_activations(config.checkpoint_activations)
        if config.sync_bn and world.enabled:
            dist_.convert_sync_batchnorm(model, device)
        self.precision = make_precision(config.precision, device, warn=world.is_main)
        # bf16 brings its memory layout: bf16 convolutions run fastest in NHWC, on CPUs (oneDNN) and on GPUs (cuDNN's
        # tensor-core kernels). On a CPU only `auto` implies it, so that runs started with an explicit bf16 resume as
        # they began; on a GPU bf16 always does.
        self.channels_last = config.channels_last or (self.precision.name == "bf16" and (
            config.precision == "auto" or device.type == "cuda"))
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.optimizers = make_optimizers(self.model, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2))
        self.ema = make_ema(self.model.decoder) if config.ema > 0 else None
        self.margin = make_margin(config.margin, device, world=world)  # a number, or margin.AutoMargin
        self.num_train, self.global_batch = num_train, config.batch_size * world.size
        self.total_steps = config.total_steps(num_train, world.size)
        self.schedule = Schedule.of(config, num_train, world.size)  # warm-up -> alpha_early -> alpha, in steps
        self.step, self.rollbacks = 0, 0
        self.epoch, self.epoch_images = 0, 0  # the data cursor: epoch, and images of it used
        self.step_epoch = 0  # the epoch the last step's batch came from

    @property
    def warmup_steps(self) -> int:
        return self.schedule.warmup_steps

    @property
    def alpha_early_steps(self) -> int:
        return self.schedule.alpha_early_steps

    @property
    def precision_words(self) -> str:
        """The precision and layout the run trains with, as the start line says it: "bf16, channels-last (auto)"."""
        from .devices import tf32_words

        words = self.precision.name + tf32_words(self.device, self.precision.name)
        words += ", channels-last" if self.channels_last else ""
        return words + (" (auto)" if self.config.precision == "auto" else "")

    @property
    def generator_model(self) -> IntroVAE:
        """The model to sample from: the trained one, or its encoder with the EMA generator."""
        return self.model if self.ema is None else self.model.with_generator(self.ema)

    @property
    def lr(self) -> float:
        return self.optimizers["encoder"].param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def scheduled_lr(self) -> float:
        """The learning rate for the next step: ``lr``, times ``rollback_lr_factor`` per rollback, halved every
        ``lr_half_life`` epochs of images seen after the first ``lr_decay_start`` (by the data cursor, so a resume
        with another batch keeps it)."""
        cfg = self.config
        lr = cfg.lr * cfg.rollback_lr_factor ** self.rollbacks
        if cfg.lr_half_life > 0:
            seen = epochs_seen(self.epoch, self.epoch_images, self.num_train)
            lr *= 0.5 ** (max(0.0, seen - cfg.lr_decay_start) / cfg.lr_half_life)
        return lr

    def steps_to_reach(self, config: TrainConfig) -> int:
        """The step at which the run ends when ``config`` gives its length: ``steps`` as it is, ``epochs`` from the
        data cursor, so that a run whose global batch changed on the way (other processes, or a fork with another
        batch) still ends after that many epochs of images; for a run that kept its batch, the same
        ``config.total_steps``."""
        if config.steps is not None or config.epochs is None:
            return config.total_steps(self.num_train, self.world.size)
        per_epoch = steps_per_epoch(self.num_train, self.global_batch)
        done = self.epoch * per_epoch + self.epoch_images / self.global_batch  # in this batch's steps
        return max(1, self.step + math.ceil(config.epochs * per_epoch - done))

    def advance(self, images_used: int) -> None:
        """One step done; ``images_used`` images of the current epoch are used so far (the data cursor)."""
        self.step += 1
        self.step_epoch, self.epoch_images = self.epoch, images_used
        self._next_epoch_if_spent()

    def _next_epoch_if_spent(self) -> None:
        """The data cursor to the next epoch's start when no whole (global) batch is left in this one."""
        if self.epoch_images + self.global_batch > self.num_train:
            self.epoch, self.epoch_images = self.epoch + 1, 0

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": checkpoint.CHECKPOINT_FORMAT, "version": __version__, "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "auto_margin": self.margin.state_dict() if isinstance(self.margin, AutoMargin) else None,
            "step": self.step, "data_epoch": self.epoch, "data_epoch_images": self.epoch_images,
            "num_train": self.num_train,  # for `introvae info`: epochs seen from the data cursor (since 0.7.18)
            "processes": self.world.size, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "alpha_early_steps": self.alpha_early_steps, "rollbacks": self.rollbacks,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict, *, source: str, log: Callable[[str], None] = print) -> None:
        load_state_strict(self.model, state["model"], source=source)
        for name, opt in self.optimizers.items():
            load_optimizer_state(opt, state["optimizers"][name])
        if self.ema is not None:
            if state.get("ema") is not None:
                load_state_strict(self.ema, state["ema"], source=f"{source} (EMA generator)")
            else:  # a run that had no EMA so far: start the average here
                self.ema.load_state_dict(self.model.decoder.state_dict())
        if self.precision.scaler and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        if isinstance(self.margin, AutoMargin) and state.get("auto_margin") is not None:
            self.margin.load_state_dict(state["auto_margin"])
        self.step, self.rollbacks = int(state["step"]), int(state["rollbacks"])
        self.epoch, self.epoch_images = int(state["data_epoch"]), int(state["data_epoch_images"])
        self.total_steps = int(state["total_steps"])
        # alpha_early_steps 0: a checkpoint from before the field
        self.schedule = Schedule(int(state["warmup_steps"]), int(state.get("alpha_early_steps", 0)))
        saved_procs = int(state["processes"])
        old_gb = TrainConfig.from_dict(state["config"]).batch_size * saved_procs
        if old_gb != self.global_batch:
            # Another number of processes, or a fork with another batch: keep the run's length (and warm-up) in
            # images seen. The data cursor counts images, and the lr schedule reads it, so both carry over.
            self.total_steps = same_images(self.total_steps, self.step, old_gb, self.global_batch)
            self.schedule = self.schedule.rescaled(self.step, old_gb, self.global_batch)
            self._next_epoch_if_spent()  # a larger batch may no longer fit this epoch's rest
            if saved_procs != self.world.size:
                log(f"resuming with {self.world.size} process(es) instead of {saved_procs}: global batch {old_gb} -> "
                    f"{self.global_batch}; {self.total_steps - self.step} steps remain, to see as many images")
            else:  # a fork (whose --epochs, if given, then sets the length: its own line says the steps)
                log(f"a batch of {self.config.batch_size} instead of {old_gb // saved_procs}: the run's length, "
                    f"warm-up and rate schedule stay where they were in images seen")
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def resume(self, plan: "Resumption", *, log: Callable[[str], None]) -> None:
        """Continue from ``plan``'s checkpoint: its state, the longer schedule it asks for, its changes recorded."""
        self.load_state_dict(plan.state, source=str(plan.path), log=log)
        names = [name for name, _, _ in plan.changes]
        if "steps" in names or "epochs" in names:
            self.total_steps = self.steps_to_reach(self.config)
            if self.total_steps < self.step:
                raise UserError(f"steps: the run is at step {self.step} already; give more steps to extend it")
        if plan.forked and self.total_steps <= self.step:
            raise UserError(f"steps: the source is at step {self.step} of its {self.total_steps}; give --steps or "
                            f"--epochs beyond it for the fork to train")
        if {"lr", "lr_half_life", "lr_decay_start"} & set(names):
            self.set_lr(self.scheduled_lr())  # a fork's rate: the optimisers' states carry the source's
        # the source as an absolute path, so the fork finds it (its training time) from any working folder
        changes = ([("forked_from", None, str(plan.path.resolve()))] if plan.forked else []) + plan.changes
        if changes and self.world.is_main:
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            with open(plan.run_dir / "changes.jsonl", "a") as f:
                for name, old, new in changes:
                    f.write(json.dumps({"step": self.step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                        "field": name, "from": old, "to": new}) + "\n")
        log(plan.summary(f"{self.step} of {self.total_steps}"))

    def weights_finite(self) -> bool:
        """Whether every weight and BatchNorm statistic is finite (on every process)."""
        t = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        ok = torch.stack([torch.isfinite(v).all() for v in t]).all()
        return dist_.all_true(ok, self.world, self.device)

    def save(self, run_dir: Path, *, keep: int, every: int = 0) -> Path | None:
        """Write this step's checkpoint (rank 0; every process calls it), keeping ``keep`` (see
        :func:`checkpoint.prune`). Raises OSError when the write fails; the previous checkpoint is then intact."""
        if not self.world.is_main:
            return None
        return checkpoint.save(self.state_dict(), checkpoint.checkpoint_path(run_dir, self.step), keep=keep,
                               every=every)

    def rollback(self, run_dir: Path, *, factor: float, log: Callable[[str], None]) -> Path:
        """Back to the newest readable checkpoint, with the learning rate multiplied by ``factor``."""
        lr = self.lr * factor
        path, state = newest_readable_checkpoint(run_dir, log)
        self.load_state_dict(state, source=str(path), log=log)
        self.set_lr(lr)
        self.rollbacks += 1
        return path


@dataclass
class Resumption:
    """What resuming a run starts from: its newest readable checkpoint, and the config with the changes asked."""

    run_dir: Path
    path: Path
    state: dict
    config: TrainConfig
    changes: list[tuple[str, Any, Any]]
    forked: bool = False  # a new run (run_dir) started from another's checkpoint (path)

    def summary(self, steps: str, *, would: bool = False) -> str:
        """One line: what continues from where (``steps``: the step, and of how many), with the changes asked."""
        if self.forked:
            what = f"{'would fork' if would else 'forking'} {self.path} into {self.run_dir}"
        else:
            what = f"{'would resume' if would else 'resuming'} {self.run_dir} ({self.path.name})"
        return f"{what} from step {steps}" + "".join(f"; {name}: {old!r} -> {new!r}" for name, old, new in self.changes)


def plan_resume(run_dir: str | Path, overrides: dict | None = None, *,
                log: Callable[[str], None] = print) -> Resumption:
    """The newest readable checkpoint of ``run_dir`` (an unreadable newer one is reported and passed over), and
    its config with ``overrides``. Runtime and logging settings (device, precision, loader workers, cadences, ...)
    may change, and ``steps`` or ``epochs`` may extend the run, a finished one too; the model, objective, data
    and optimiser fields may not. The changes are recorded in the run's ``changes.jsonl``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"--resume: {run_dir} is not a run directory (no config.json)")
    path, state = newest_readable_checkpoint(run_dir, log)
    config, changes = _changed(state, overrides, may_change_on_resume, lambda name, old, new: (
        f"{name}: a resumed run keeps its value ({old!r}); only runtime and logging settings, --steps and --epochs "
        f"may change (start a new run for {name} = {new!r})"))
    return Resumption(run_dir, path, state, config, changes)


def _changed(state: dict, overrides: dict | None, may_change: Callable[[str], bool],
             refusal: Callable[[str, Any, Any], str]) -> tuple[TrainConfig, list[tuple[str, Any, Any]]]:
    """A checkpoint's config with ``overrides``, and the changes; the first that may not change is refused."""
    saved = TrainConfig.from_dict(state["config"])
    config = saved.replace(**(overrides or {}))
    changes = saved.changes(config)
    for name, old, new in changes:
        if not may_change(name):
            raise UserError(refusal(name, old, new))
    return config, changes


def plan_fork(source: str | Path, run_dir: str | Path, overrides: dict | None = None, *,
              log: Callable[[str], None] = print) -> Resumption:
    """A new run in ``run_dir`` that starts from ``source`` (a checkpoint file, or a run directory's newest readable
    checkpoint) exactly where it was: both networks, the optimisers' moments, the average, the step, the data
    cursor and the random state, with ``overrides`` of the game's weights, the margin or the learning rate (and of
    anything a resume may change). So a change of, say, alpha after the first epoch is screened from one shared
    first epoch; with no override the fork trains as the source would have. The fork is recorded as the first
    line of the new run's ``changes.jsonl``."""
    source = Path(source)
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise UserError(f"--fork: {source} is neither a run directory (no config.json) nor a checkpoint")
        path, state = newest_readable_checkpoint(source, log)
    elif source.is_file():
        path, state = source, checkpoint.load(source)
    else:
        raise UserError(f"--fork: not found: {source}")
    config, changes = _changed(state, overrides, may_change_on_fork, lambda name, old, new: (
        f"{name}: a fork keeps its source's value ({old!r}); it may change alpha, beta, the margin, the learning "
        f"rate and its half-life, the batch, runtime and logging settings and the length (start a new run for {name} = {new!r})"))
    for name, old, new in changes:
        if name == "margin" and new == "auto":
            raise UserError(f"margin: a fork may fix the margin at a number but not start the automatic one (it is "
                            f"calibrated in a run's own VAE warm-up); keep the source's ({old!r}) or give a number")
    return Resumption(Path(run_dir), path, state, config, changes, forked=True)
