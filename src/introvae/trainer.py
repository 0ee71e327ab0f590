"""The training loop: run directory, stats, snapshots, checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import __version__, checkpoint
from . import distributed as dist_
from .config import Config
from .data import ImageSet, batches, load, to_float
from .ema import make_ema, update_ema
from .grids import interleave_rows, save_grid
from .losses import load_optimizer_state, make_optimizers, train_step
from .model import IntroVAE, describe, load_state_strict
from .plots import plot_kl
from .precision import make_precision, resolve_device


# Options of torch.compile for --compile (the tests swap in a backend that compiles in seconds).
COMPILE_OPTIONS: dict = {}


class RunError(ValueError):
    """The run directory cannot be used as asked (exists already, nothing to resume, ...)."""


def new_run_dir(root: str | Path, label: str) -> Path:
    """``root/NNNNN-label``, numbered after the runs already there."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    nums = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    return root / f"{max(nums, default=-1) + 1:05d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"


class Trainer:
    """Trains an :class:`IntroVAE` from a :class:`Config` into a run directory.

    The run directory holds ``config.json``, ``stats.jsonl``, ``bad_images.txt`` (when any were
    skipped), image grids (``samples-*.png``, ``reconstructions-*.png``), ``kl.png`` and ``checkpoints/``.

    Under ``torchrun`` (``world``: by default read from the environment) every process trains on its
    slice of each global batch of ``processes * batch_size`` images through DistributedDataParallel,
    and only rank 0 writes the run directory and prints.
    """

    def __init__(self, config: Config, run_dir: str | Path, *, data: ImageSet | None = None,
                 show_progress: bool = True, log: Callable[[str], None] = print,
                 world: dist_.World | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.world = world if world is not None else dist_.world_from_env()
        main = self.world.is_main
        self.show_progress = show_progress and main
        self.log = log if main else (lambda _msg: None)
        self.device = dist_.setup(self.world, resolve_device(config.device))
        self.data = data if data is not None else load(
            config.data, image_size=config.image_size, in_channels=config.in_channels,
            holdout_fraction=config.holdout_fraction, show_progress=self.show_progress)
        self.precision = make_precision(config.precision, self.device)
        torch.manual_seed(config.seed)  # network initialisation and the z / eps draws: the same on every process
        self.model = IntroVAE(config).to(self.device)
        if config.sync_bn and self.world.enabled:
            dist_.convert_sync_batchnorm(self.model, self.device)
        elif config.sync_bn:
            self.log("note: sync_bn has no effect in a single process (it applies under torchrun)")
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.replicas = dist_.replicate(self.model, self.world, self.device)
        if config.compile:  # the training passes only; sampling and evaluation stay eager
            nets = self.replicas or (self.model.encoder, self.model.decoder)
            self.replicas = tuple(torch.compile(m, **COMPILE_OPTIONS) for m in nets)
        self.ema = make_ema(self.model.decoder) if config.ema > 0 else None
        self.opt_e, self.opt_g = make_optimizers(self.model, lr=config.lr,
                                                 betas=(config.adam_beta1, config.adam_beta2))
        self.step = 0
        self.bad_in_a_row = 0  # consecutive steps skipped by the divergence guard (as last read)
        self.rollbacks = 0
        self._reset_guard()
        n = len(self.data.train)
        procs = self.world.size
        self.global_batch = config.batch_size * procs
        self.total_steps = config.total_steps(n, procs)
        self.warmup_steps = config.warmup_steps(n, procs) if config.objective == "introvae" else 0
        self.steps_per_epoch = max(1, n // self.global_batch)
        self.epoch, self.epoch_images = 0, 0  # the data cursor: epoch, and images of it used
        if n < self.global_batch:
            what = f"{procs} processes x batch_size {config.batch_size}" if procs > 1 else \
                f"batch_size: {config.batch_size}"
            raise RunError(f"{what} is larger than the {n} training images")
        # Fixed inputs for the snapshots, so that grids are comparable across time.
        ref = self.data.test if len(self.data.test) >= config.grid_size else self.data.train
        self.fixed_real = to_float(ref[: config.grid_size * 4])
        self.fixed_z = torch.randn(config.grid_size ** 2, config.latent_dim,
                                   generator=torch.Generator().manual_seed(config.seed + 1))
        self._stop_requested = False
        self.feature_fn = None  # FID feature network for --eval-every (default: the Inception of FID)
        self._features = None

    @property
    def sampler(self) -> IntroVAE:
        """The model to sample from: the trained one, or its encoder with the EMA generator."""
        if self.ema is None:
            return self.model
        if getattr(self, "_sampler", None) is None:
            self._sampler = with_generator(self.model, self.ema)
        return self._sampler

    # --- state -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": checkpoint.CHECKPOINT_FORMAT,
            "version": __version__,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "opt_e": self.opt_e.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step,
            "data_epoch": self.epoch,
            "data_epoch_images": self.epoch_images,
            "processes": self.world.size,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "rollbacks": self.rollbacks,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
        }

    def load_state_dict(self, state: dict, *, source: str) -> None:
        saved = Config.from_dict(state["config"])
        if saved.stage_channels != self.config.stage_channels or saved.image_size != self.config.image_size \
                or saved.latent_dim != self.config.latent_dim or saved.in_channels != self.config.in_channels:
            raise checkpoint.CheckpointError(f"{source} was written for another architecture ({describe(saved)})")
        load_state_strict(self.model, state["model"], source=source)
        load_optimizer_state(self.opt_e, state["opt_e"])
        load_optimizer_state(self.opt_g, state["opt_g"])
        if self.ema is not None:
            if state.get("ema") is not None:
                load_state_strict(self.ema, state["ema"], source=f"{source} (EMA generator)")
            else:  # a run that had no EMA so far: start the average here
                self.ema.load_state_dict(self.model.decoder.state_dict())
        self.step = int(state["step"])
        self.rollbacks = int(state.get("rollbacks", 0))
        if "data_epoch" in state:
            self.epoch, self.epoch_images = int(state["data_epoch"]), int(state["data_epoch_images"])
        else:  # written before the cursor was saved: one process, whole batches per step
            epoch, k = divmod(self.step, self.steps_per_epoch)
            self.epoch, self.epoch_images = epoch, k * self.global_batch
        saved_procs = int(state.get("processes", 1))
        if saved_procs != self.world.size and "total_steps" in state:
            # Another number of processes: keep the run's length (and warm-up) in images seen.
            old_gb, new_gb = saved.batch_size * saved_procs, self.global_batch
            rescale = lambda steps: self.step + math.ceil(max(0, steps - self.step) * old_gb / new_gb)  # noqa: E731
            self.total_steps = rescale(int(state["total_steps"]))
            self.warmup_steps = rescale(int(state["warmup_steps"])) if state["warmup_steps"] > self.step else \
                int(state["warmup_steps"])
            self.log(f"resuming with {self.world.size} process(es) instead of {saved_procs}: global batch "
                     f"{old_gb} -> {new_gb}; {self.total_steps - self.step} steps remain, to see as many images")
        elif "total_steps" in state:
            self.total_steps, self.warmup_steps = int(state["total_steps"]), int(state["warmup_steps"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.precision.scaler and state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])

    # --- the loop ----------------------------------------------------------------
    def alpha_at(self, step: int) -> float:
        """alpha, or 0 during the VAE warm-up and for the plain-VAE objective."""
        if self.config.objective == "vae" or step < self.warmup_steps:
            return 0.0
        return self.config.alpha

    def train(self, *, stop_after: int | None = None) -> Path:
        """Train to ``total_steps`` (or until ``stop_after`` steps, for tests); returns the run directory."""
        from tqdm.auto import tqdm

        cfg, world = self.config, self.world
        if world.is_main:
            self._prepare_run_dir()
        dist_.barrier(world)
        if dist_.broadcast_object(checkpoint.latest(self.run_dir) is None, world):
            self.save_checkpoint()  # step 0: even a run killed at once, or diverging at once, has one
        end = self.total_steps if stop_after is None else min(self.total_steps, stop_after)
        self.model.train()
        self._reset_interval()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step",
                   disable=not self.show_progress, dynamic_ncols=True)
        old_handlers = self._install_signal_handlers()
        try:
            while self.step < end and not self._stop_requested:
                epoch = self.epoch
                for used, x in batches(self.data.train, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                       start=self.epoch_images, rank=world.rank, world_size=world.size,
                                       workers=cfg.loader_workers, pin_memory=self.device.type == "cuda"):
                    x = x.to(self.device, non_blocking=True)
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    out = train_step(self.model, self.opt_e, self.opt_g, x, margin=cfg.margin,
                                     alpha=self.alpha_at(self.step), beta=cfg.beta, precision=self.precision,
                                     replicas=self.replicas, world=world)
                    self.step += 1
                    self.epoch_images = used
                    epoch_done = used + self.global_batch > len(self.data.train)
                    if epoch_done:
                        self.epoch, self.epoch_images = epoch + 1, 0
                    bar.update(1)
                    self._images += len(x) * world.size
                    if world.enabled:  # a signal may reach the processes at different steps: agree on it
                        self._stop_requested = dist_.any_true(self._stop_requested, world)
                    self._overflows.append(out.pop("overflow"))
                    # The guard's verdict stays on the device (no sync): counted here, read at the checks.
                    skipped = out.pop("skipped").to(self.device, torch.float32)
                    good = 1.0 - skipped
                    self._skipped = self._skipped + skipped
                    self._bad_run = (self._bad_run + 1.0) * skipped
                    self._worst_run = torch.maximum(self._worst_run, self._bad_run)
                    self._good.append(good)
                    for k, v in out.items():  # the losses of a skipped step may be NaN: left out of the means
                        self._acc.setdefault(k, []).append(torch.where(good > 0, v.float(), 0.0))
                    if self.ema is not None:
                        update_ema(self.ema, self.model.decoder, cfg.ema, weight=good)
                    # Host-side checks (and so a sync) only every max_bad_steps steps and at log lines.
                    if self.step % cfg.max_bad_steps == 0 or self.step % cfg.log_every == 0 or self.step == end:
                        worst, self.bad_in_a_row = int(self._worst_run.item()), int(self._bad_run.item())
                        self._worst_run = self._bad_run.clone()
                        if worst >= cfg.max_bad_steps:
                            self.rollback(worst)
                            bar.n = self.step
                            bar.refresh()
                            break  # restart the epoch loop at the checkpoint's step
                    if self.step % cfg.log_every == 0 or self.step == end:
                        row = self._log_row(epoch)
                        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss_encoder", "loss_generator",
                                                                      "kl_real", "kl_fake") if row[k] is not None})
                    if cfg.eval_every and self.step % cfg.eval_every == 0 and world.is_main:
                        self.evaluate_fid()
                    if (self.step % cfg.image_every == 0 or self.step == self.total_steps) and world.is_main:
                        self.snapshot()
                    if self.step % cfg.checkpoint_every == 0 or epoch_done or self.step == end:
                        self.save_checkpoint(final=self.step == end)
                    if self.step >= end or self._stop_requested:
                        break
            if self._stop_requested and not dist_.broadcast_object(
                    checkpoint_path(self.run_dir, self.step).exists(), world):
                self.save_checkpoint(final=True)
                self.log(f"stopped at step {self.step}; checkpoint written. Resume with: "
                         f"introvae train --resume {self.run_dir}")
            dist_.barrier(world)  # the other processes wait for rank 0's last write
        finally:
            bar.close()
            self._restore_signal_handlers(old_handlers)
        return self.run_dir

    # --- divergence guard and checkpoints ------------------------------------------
    def weights_finite(self) -> bool:
        """Whether every weight and BatchNorm statistic is finite (on every process)."""
        ok = all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values() if t.is_floating_point())
        return dist_.all_true(ok, self.world, self.device)

    def rollback(self, bad: int = 0) -> None:
        """Back to the newest readable checkpoint, with the learning rate lowered (after ``bad`` skipped
        steps in a row, or non-finite weights)."""
        lr = self.opt_e.param_groups[0]["lr"] * self.config.rollback_lr_factor
        path, state = newest_readable_checkpoint(self.run_dir, self.log)
        self.load_state_dict(state, source=str(path))
        for opt in (self.opt_e, self.opt_g):
            for group in opt.param_groups:
                group["lr"] = lr
        self.rollbacks += 1
        self._reset_guard()
        self._truncate_stats()
        self._reset_interval()
        why = f"{bad} steps in a row had non-finite losses or gradients" if bad else "the weights became non-finite"
        self.log(f"\nwarning: {why}; rolled back to {path.name} (step {self.step}) and lowered the learning "
                 f"rate to {lr:.3g}")

    def save_checkpoint(self, *, final: bool = False) -> Path | None:
        """Write a checkpoint of this step; never one with non-finite weights. A failed write (disk full)
        leaves the previous checkpoint intact and is reported; it is an error only for the last one.
        Every process calls it (they agree on the rollback); only rank 0 writes."""
        if not self.weights_finite():
            self.rollback()
            return None
        if not self.world.is_main:
            return None
        try:
            return checkpoint.save(self.state_dict(), checkpoint_path(self.run_dir, self.step),
                                   keep=self.config.keep_checkpoints)
        except OSError as e:
            last = checkpoint.latest(self.run_dir)
            msg = (f"could not write the checkpoint of step {self.step} ({e.strerror or e}); "
                   f"the previous one, {last.name if last else 'none'}, is intact")
            if final:
                raise RunError(msg) from None
            self.log(f"\nwarning: {msg}; training goes on")
            return None

    def _reset_interval(self) -> None:
        self._acc: dict[str, list[torch.Tensor]] = {}
        self._t0 = time.perf_counter()
        self._images = 0
        zero = torch.zeros((), device=self.device)
        self._skipped = zero
        self._overflows: list[torch.Tensor] = []
        self._good: list[torch.Tensor] = []

    def _reset_guard(self) -> None:
        """The guard's counters on the device: skipped steps in a row now, and the longest run since the
        last check. They outlive log intervals, not a rollback."""
        self.bad_in_a_row = 0
        self._bad_run = torch.zeros((), device=self.device)
        self._worst_run = torch.zeros((), device=self.device)

    def _log_row(self, epoch: int) -> dict:
        dt = time.perf_counter() - self._t0
        row = {"step": self.step, "epoch": epoch, "alpha": self.alpha_at(self.step - 1),
               "images_per_s": round(self._images / max(dt, 1e-9), 2)}
        keys = ("loss_encoder", "loss_generator", "reconstruction", "kl_real", "kl_rec", "kl_fake")
        n_good = torch.stack(self._good).sum() if self._good else torch.zeros((), device=self.device)
        skipped = int(self._skipped.item())
        means = {k: torch.stack(self._acc[k]).sum() / n_good.clamp_min(1) for k in keys
                 if self._acc.get(k) and float(n_good) > 0}
        if self.world.enabled and means:  # the mean over all processes' images
            import torch.distributed as dist

            t = torch.stack([means[k] for k in means]).to(self.device)
            dist.all_reduce(t)
            means = dict(zip(means, (t / self.world.size).tolist()))
        for k in keys:
            row[k] = float(means[k]) if k in means else None
        row.update(skipped_steps=skipped, rollbacks=self.rollbacks, lr=self.opt_e.param_groups[0]["lr"])
        if self.precision.scaler:
            row.update(fp16_overflows=int(sum(float(o) for o in self._overflows)),
                       fp16_scale=float(self.precision.scaler.get_scale()))
        self._append_stats(row)
        self._reset_interval()
        return row

    def evaluate_fid(self) -> float:
        """FID of ``eval_samples`` generated images against as many training images; one stats.jsonl row."""
        from .evaluate import generate, image_features, reference_features
        from .metrics import fid as fidlib

        cfg, n = self.config, self.config.eval_samples
        if self._features is None:
            self._features = self.feature_fn or fidlib.load_inception()
        _, ref_f = reference_features(self.data, cfg.data, "train", n, cfg.image_size, cfg.in_channels,
                                      self._features, show_progress=False)
        was_training = self.model.training
        try:
            samples = generate(self.sampler, n, seed=cfg.seed, batch_size=100)
        finally:
            self.model.train(was_training)
        fid = fidlib.fid_from_features(image_features(samples, self._features, show_progress=False), ref_f)
        self._append_stats({"step": self.step, "fid": fid, "fid_samples": n})
        return fid

    def _append_stats(self, row: dict) -> None:
        if not self.world.is_main:
            return
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    @torch.no_grad()
    def snapshot(self) -> None:
        """Write the sample and reconstruction grids of this step and refresh the KL plot."""
        cfg, was_training = self.config, self.model.training
        self.model.eval()
        try:
            samples = self.sampler.sample(len(self.fixed_z), z=self.fixed_z)
            rec = self.model.reconstruct(self.fixed_real)
        finally:
            self.model.train(was_training)
        save_grid(samples, self.run_dir / f"samples-{self.step:09d}.png", cfg.grid_size)
        save_grid(interleave_rows(self.fixed_real, rec, cfg.grid_size),
                  self.run_dir / f"reconstructions-{self.step:09d}.png", cfg.grid_size)
        self.plot()

    def plot(self) -> Path | None:
        rows = read_stats(self.run_dir)
        if not rows:
            return None
        return plot_kl(rows, self.run_dir / "kl.png", margin=self.config.margin, warmup_steps=self.warmup_steps,
                       title=f"{self.data.name}: encoder KL (Fig. 5)")

    # --- run directory, signals ------------------------------------------------
    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        probe = self.run_dir / ".write-test"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunError(f"run directory {self.run_dir} is not writable: {e.strerror}") from None
        self.config.save(self.run_dir / "config.json")
        if self.data.skipped:
            with open(self.run_dir / "bad_images.txt", "w") as f:
                f.writelines(f"{name}\t{reason}\n" for name, reason in self.data.skipped)
        for stale in (self.run_dir / "checkpoints").glob(".tmp-*"):  # left by a kill during a write
            stale.unlink(missing_ok=True)
        self._truncate_stats()

    def _truncate_stats(self) -> None:
        """Drop stats of steps after the current one: after a resume or rollback they are replayed."""
        stats = self.run_dir / "stats.jsonl"
        if stats.exists() and self.world.is_main:
            kept = [ln for ln in stats.read_text().splitlines()
                    if (step := _row_step(ln)) is not None and step <= self.step]
            stats.write_text("".join(ln + "\n" for ln in kept))

    def _install_signal_handlers(self):
        def request_stop(signum, _frame):
            if self._stop_requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop_requested = True
            self.log(f"\n{signal.Signals(signum).name} received: finishing this step and writing a checkpoint "
                     "(press Ctrl-C again to abort without one)")

        old = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                old[s] = signal.signal(s, request_stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return old

    @staticmethod
    def _restore_signal_handlers(old) -> None:
        for s, h in old.items():
            signal.signal(s, h)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint.checkpoint_path(run_dir, step)


def read_stats(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "stats.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if _row_step(ln) is not None]


def resume(run_dir: str | Path, *, show_progress: bool = True, log: Callable[[str], None] = print,
           data: ImageSet | None = None, world: dist_.World | None = None) -> Trainer:
    """A trainer restored from the newest readable checkpoint of ``run_dir``; unreadable ones are reported
    and the previous one is used instead. The number of processes may differ from the run's."""
    run_dir = Path(run_dir)
    world = world if world is not None else dist_.world_from_env()
    if not (run_dir / "config.json").is_file():
        raise RunError(f"--resume: {run_dir} is not a run directory (no config.json)")
    path, state = newest_readable_checkpoint(run_dir, log if world.is_main else (lambda _msg: None))
    config = Config.from_dict(state["config"])
    trainer = Trainer(config, run_dir, data=data, show_progress=show_progress, log=log, world=world)
    log = trainer.log
    trainer.load_state_dict(state, source=str(path))
    log(f"resuming {run_dir} from step {trainer.step} of {trainer.total_steps} ({path.name})")
    return trainer


def newest_readable_checkpoint(run_dir: Path, log: Callable[[str], None]) -> tuple[Path, dict]:
    """The newest checkpoint that loads; each unreadable newer one is reported and passed over."""
    found = checkpoint.list_checkpoints(run_dir)
    if not found:
        raise RunError(f"{run_dir} has no checkpoint yet")
    errors = []
    for path in reversed(found):
        try:
            return path, checkpoint.load(path)
        except checkpoint.CheckpointError as e:
            errors.append(str(e))
            log(f"warning: {e}; trying the previous checkpoint")
    raise RunError(f"no readable checkpoint in {run_dir}: " + "; ".join(errors))


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


def with_generator(model: IntroVAE, decoder: torch.nn.Module) -> IntroVAE:
    """An IntroVAE sharing ``model``'s encoder, with ``decoder`` as its generator (no copies)."""
    other = IntroVAE.__new__(IntroVAE)
    torch.nn.Module.__init__(other)
    other.config = model.config
    other.encoder, other.decoder = model.encoder, decoder
    return other


def load_model(source: str | Path, *, ema: bool = True) -> IntroVAE:
    """An :class:`IntroVAE` in eval mode from a run directory (its newest checkpoint), a checkpoint
    file, or an exported model directory (``config.json`` + ``model.safetensors``). A run trained with
    ``--ema`` gives its averaged generator unless ``ema`` is False; ``model.generator_source`` says
    which one it is ("ema" or "trained")."""
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"model not found: {p}")
    if p.is_dir() and (p / "model.safetensors").is_file():
        model = IntroVAE.from_pretrained(p)
        model.generator_source = "trained"  # an export holds one generator; which it was is not recorded
        return model
    if p.is_dir():
        ckpt = checkpoint.latest(p)
        if ckpt is None:
            raise FileNotFoundError(f"{p} holds neither an exported model (model.safetensors) nor checkpoints/")
        p = ckpt
    state = checkpoint.load(p)
    model = IntroVAE(Config.from_dict(state["config"]))
    load_state_strict(model, state["model"], source=str(p))
    model.generator_source = "trained"
    if ema and state.get("ema") is not None:
        load_state_strict(model.decoder, state["ema"], source=f"{p} (EMA generator)")
        model.generator_source = "ema"
    return model.eval()

