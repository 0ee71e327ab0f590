"""The training loop: Algorithm 1 over the data, with everything a run does between steps.

Read top to bottom: :meth:`Trainer.train` takes batches from the run's data cursor, gives each to the
objective's step (:mod:`introvae.step`), and then does what is due: the divergence guard's check, a
stats row, an evaluation, image grids, a checkpoint. The run's state and its checkpoints are
:mod:`introvae.runstate`; the statistics :mod:`introvae.stats`; the pictures :mod:`introvae.pictures`.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import checkpoint, devices
from . import distributed as dist_
from .config import TrainConfig, flat_dict
from .data import ImageSet, batches, load
from .data.batches import auto_workers, to_device
from .ema import ema_decay, update_ema
from .eta import TrainingEstimate
from .loggers import make_logger
from .margin import AutoMargin
from .errors import UserError
from .objectives import make_objective
from .runstate import RunState, plan_fork, plan_resume
from .schedule import SEGMENTS, Schedule
from .pictures import TrainingPictures
from .provenance import record_session
from .stats import TrainingStats
from .step import DivergenceGuard, TrainStep
from .stopping import StopRequest
from .wrappers import training_wrappers


class Trainer:
    """Trains an :class:`IntroVAE` from a :class:`TrainConfig` into a run directory (``config.json``,
    ``stats.jsonl``, ``sessions.jsonl``, image grids, ``kl.png``, ``checkpoints/``; ``bad_images.txt`` when images
    were skipped).

    Under ``torchrun`` (``world``: read from the environment by default) every process trains on its slice of
    each global batch through DistributedDataParallel; only rank 0 writes the run directory and prints.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, data: ImageSet | None = None,
                 show_progress: bool = True, log: Callable[[str], None] = print, world: dist_.World | None = None):
        if config.data is None and data is None:
            raise UserError("data: this config names no data set; give --data (a folder of images, ...)")
        self.config, self.run_dir = config, Path(run_dir)
        self.world = world if world is not None else dist_.world_from_env()
        self.show_progress = show_progress and self.world.is_main
        self.log = log if self.world.is_main else (lambda _msg: None)
        self.device = dist_.setup(self.world, devices.resolve_device(config.device))
        devices.training_backends(self.device)  # cudnn.benchmark and TF32 on CUDA (stated in the first line)
        self.data = data if data is not None else load(
            config.data, image_size=config.model.image_size, in_channels=config.model.in_channels,
            holdout_fraction=config.holdout_fraction, show_progress=self.show_progress)
        if len(self.data.train) < config.batch_size * self.world.size:
            what = f"{self.world.size} processes x batch_size {config.batch_size}" if self.world.enabled \
                else f"batch_size: {config.batch_size}"
            raise UserError(f"{what} is larger than the {len(self.data.train)} training images")
        self.run = RunState(config, device=self.device, world=self.world, num_train=len(self.data.train))
        self.loader_workers = auto_workers(config.loader_workers, device=self.device,
                                           streamed=not isinstance(self.data.train, torch.Tensor))
        if self.loader_workers and config.loader_workers < 0:
            self.log(f"note: {self.loader_workers} loader worker processes decode the streamed images "
                     "(--loader-workers N to choose)")
        if config.sync_bn and not self.world.enabled:
            self.log("note: sync_bn has no effect in a single process (it applies under torchrun)")
        updating, frozen = training_wrappers(self.run.model, config, self.world, self.device)
        self.train_step = TrainStep(self.run.model, self.run.optimizers, precision=self.run.precision,
                                    world=self.world, wrappers=updating, frozen_wrappers=frozen,
                                    real_statistics=config.encoder_stats == "real",
                                    generated_norm=config.generated_norm)
        self.guard = DivergenceGuard(self.device)
        self.stats = TrainingStats(self.run_dir, self.device, self.world)
        self.pictures = TrainingPictures(self.run_dir, self.data, config, self.device)
        self.evaluator = None  # made at the first --eval-every measurement (metrics.training)
        self.feature_fn = None  # FID's feature network for those (None: Inception; tests put a small one)
        # Ctrl-C or SIGTERM during train() (or compare's time budget) asks for a stop after the step in progress.
        self.stop = StopRequest(say=lambda name: self.log(
            f"\n{name} received: finishing this step and writing a checkpoint (press Ctrl-C again to abort "
            "without one)"))
        self.logger = None  # TensorBoard or W&B (loggers.make_logger), made when training starts
        # Stopped by something other than its step count (compare's time budget): the bar counts steps with no
        # total, and no time left is estimated from the step count, which is only a cap.
        self.open_ended = False

    @property
    def step(self) -> int:
        """The number of steps trained so far."""
        return self.run.step

    @property
    def stop_requested(self) -> bool:
        """Whether training stops after the step in progress (a signal, or code such as compare's budget)."""
        return self.stop.requested

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.stop.requested = value

    def close(self, *, clean: bool = True) -> None:
        """Leave the process group under torchrun (nothing with one process); the trainer trains no more.

        The DistributedDataParallel wrappers go first: their reducers hold the group, and a group whose last
        holder is freed only at interpreter exit, after ``destroy_process_group``, can leave gloo's destructor
        joining its threads for ever (seen in the two-process test). ``clean``: every process finished
        ``train`` (or stopped by the agreed signal), so they meet at a barrier before the group goes; pass
        False on an error path, where a peer may never come.
        """
        if self.world.enabled:  # one process has no wrappers holding a group, and nothing to collect
            self.train_step.release_wrappers()
            gc.collect()  # in case reference cycles (the wrappers' hooks) still hold a reducer
        dist_.teardown(synchronise=clean)

    # --- the loop ----------------------------------------------------------------------------
    def train(self, *, stop_after: int | None = None) -> Path:
        """Train to the run's last step (or to ``stop_after``, for tests); returns the run directory."""
        from .progress import progress

        cfg, run, world = self.config, self.run, self.world
        if world.is_main:
            self._prepare_run_dir()
            record_session(self.run_dir, step=run.step, device=self.device, precision=run.precision.name,
                           processes=world.size)  # where this stretch trains (provenance)
        self.logger = make_logger(cfg.logger, self.run_dir, start_step=run.step, is_main=world.is_main)
        if self.logger is not None and run.step == 0:
            self.logger.hparams(flat_dict(cfg))
        dist_.barrier(world)
        if dist_.broadcast_object(checkpoint.latest(self.run_dir) is None, world):
            self.save_checkpoint()  # step 0: even a run killed at once, or diverging at once, has one
        end = run.total_steps if stop_after is None else min(run.total_steps, stop_after)
        objectives = {segment: make_objective(cfg, warmup=segment == "warm-up", margin=run.margin,  # by segment
                                              alpha=Schedule.alpha_of(segment, cfg)) for segment in SEGMENTS}
        run.model.train()
        self.stats.reset()
        self.last_checkpoint = time.monotonic()
        bar = progress(total=None if self.open_ended else run.total_steps, initial=run.step, desc="training",
                       unit="step", disable=not self.show_progress, dynamic_ncols=True)
        estimate = TrainingEstimate(end=end, warmup_end=run.warmup_steps,
                                    say=bar.write if self.show_progress and not self.open_ended else lambda _line: None)
        logger = contextlib.closing(self.logger) if self.logger is not None else contextlib.nullcontext()
        with self.stop.on_signals(), bar, logger:  # the bar and the logger close however training ends
            while run.step < end and not self.stop_requested:
                restart = False  # a rollback restarts the batches at the restored data cursor
                waiting_since = time.perf_counter()
                for used, x, flip in batches(self.data.train, cfg.batch_size, seed=cfg.seed, epoch=run.epoch,
                                             start=run.epoch_images, rank=world.rank, world_size=world.size,
                                             workers=self.loader_workers, pin_memory=self.device.type == "cuda",
                                             mirror=cfg.mirror, raw=True):
                    self.stats.waited_for_data(time.perf_counter() - waiting_since)  # gathering, decoding
                    x = to_device(x, flip, self.device, channels_last=run.channels_last)  # uint8 over the bus
                    if cfg.lr_half_life > 0:
                        run.set_lr(run.scheduled_lr())  # a float: no device work
                    logs = self.train_step(objectives[run.schedule.segment(run.step)], x)
                    run.advance(used)
                    self._record(logs, images=len(x) * world.size)
                    bar.update(1)
                    estimate.step_done(run.step)
                    stop, checkpoint_due = self._agreed_flags()
                    # The guard's counters are read on the host only at logging steps (and at the end): a step that
                    # does not log makes no host read. Skipped steps change nothing, so a rollback found later
                    # restores the same state it would have restored at once. A stop logs the steps since the last
                    # row too, so that stats.jsonl counts every step trained (and its time: a time budget's).
                    logs_now = run.step % cfg.log_every == 0 or run.step == end or stop
                    if logs_now:
                        restart = self._check_guard()
                    if not restart and logs_now:
                        row = self._write_stats_row()
                        if self.logger is not None:
                            self.logger.scalars(row)
                        self._advise_on_data_wait(row)
                        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss_encoder", "loss_generator", "kl_real",
                                                                      "kl_fake") if row[k] is not None},
                                       refresh=False)  # drawn with the next update (a log file: every few %)
                    if not restart and cfg.eval_every and run.step % cfg.eval_every == 0 and world.is_main:
                        self.evaluate()
                    if not restart and world.is_main and (run.step % cfg.image_every == 0 or
                                                          run.step == run.total_steps):
                        self.pictures.write(run.step, run.model, run.generator_model, warmup_steps=run.warmup_steps)
                        if self.logger is not None:
                            self.logger.images(run.step, {
                                "samples": self.run_dir / f"samples-{run.step:09d}.png",
                                "reconstructions": self.run_dir / f"reconstructions-{run.step:09d}.png"})
                    if not restart and (checkpoint_due or run.step == end):
                        restart = not self.save_checkpoint(final=run.step == end)
                    if restart:
                        bar.n = run.step
                        bar.refresh()
                    if restart or run.step >= end or stop:
                        self.stop_requested = self.stop_requested or stop  # (a signal may come in meanwhile)
                        break
                    waiting_since = time.perf_counter()
            if self.stop_requested and not dist_.broadcast_object(
                    checkpoint.checkpoint_path(self.run_dir, run.step).exists(), world):
                self.save_checkpoint(final=True)
                self.log(f"stopped at step {run.step}; checkpoint written. Resume with: "
                         f"introvae train --resume {self.run_dir}")
            if self.stop_requested and world.is_main and run.step > 0 and \
                    not (self.run_dir / f"samples-{run.step:09d}.png").exists():
                # Every stop leaves the pictures of where it stopped, not only those of the last image_every.
                self.pictures.write(run.step, run.model, run.generator_model, warmup_steps=run.warmup_steps)
            dist_.barrier(world)  # the other processes wait for rank 0's last write
        return self.run_dir

    # --- between steps -----------------------------------------------------------------------
    def _record(self, logs: dict[str, torch.Tensor], *, images: int) -> None:
        """A step's values into the stats and the guard's counters, its update into the EMA and its kl_real into
        the automatic margin (all on the device)."""
        self.stats.add(logs, images=images)
        self.guard.record(logs["skipped"])
        if isinstance(self.run.margin, AutoMargin):
            self.run.margin.observe(logs["kl_real"], ok=logs["skipped"] == 0)
        if self.run.ema is not None:
            update_ema(self.run.ema, self.run.model.decoder, ema_decay(self.config.ema, self.run.step),
                       weight=1.0 - logs["skipped"])

    def _agreed_flags(self) -> tuple[bool, bool]:
        """(stop, checkpoint due), the same on every process: a signal may reach the processes at different
        steps, and their clocks differ. Under torchrun the processes agree on the host-side flags (a signal, the
        clock) only at log lines and at the end, so that a step that does not log waits for no rendezvous; a
        checkpoint due by steps needs no agreement (every process counts the same steps)."""
        cfg, run = self.config, self.run
        by_steps = cfg.checkpoint_every > 0 and run.step % cfg.checkpoint_every == 0
        by_clock = cfg.checkpoint_minutes > 0 and time.monotonic() - self.last_checkpoint >= 60 * cfg.checkpoint_minutes
        if not self.world.enabled:
            return self.stop_requested, by_steps or by_clock
        if run.step % cfg.log_every != 0 and run.step != run.total_steps:
            return False, by_steps
        stop, by_clock = dist_.any_true([self.stop_requested, by_clock], self.world)
        return stop, by_steps or by_clock

    def _check_guard(self) -> bool:
        """Roll back when ``max_bad_steps`` steps in a row were skipped; True if it did."""
        bad = self.guard.longest_run()
        if bad < self.config.max_bad_steps:
            return False
        self.rollback(f"{bad} steps in a row had non-finite losses or gradients")
        return True

    def _advise_on_data_wait(self, row: dict) -> None:
        """Once per run: a line naming the cure when the steps wait for their batches (over 10 % of the time)."""
        if row.get("data_wait", 0) > 0.1 and not getattr(self, "_advised", False):
            self._advised = True
            self.log(f"\nnote: {100 * row['data_wait']:.0f} % of the time went to waiting for batches; decode once "
                     f"with `introvae prepare {self.config.data} STORE --image-size {self.config.model.image_size}` "
                     f"and train with --data STORE, or give --loader-workers N")

    def _write_stats_row(self) -> dict:
        run = self.run
        fields = {"step": run.step, "epoch": run.step_epoch,
                  "alpha": run.schedule.alpha_at(run.step - 1, self.config),
                  "rollbacks": run.rollbacks, "lr": run.lr}
        if run.precision.scaler:
            fields["fp16_scale"] = float(run.precision.scaler.get_scale())
        return self.stats.write_row(fields, fp16=run.precision.scaler is not None)

    def evaluate(self) -> float:
        """FID of ``eval_samples`` generated images against as many real ones (the official test split where the
        data has one), into metrics.jsonl."""
        from .metrics.training import TrainingEvaluator

        if self.evaluator is None:
            self.evaluator = TrainingEvaluator(self.run_dir, self.data, self.config, self.device,
                                               features=self.feature_fn)
        fid = self.evaluator.measure(self.run.step, self.run.model, self.run.generator_model)
        if self.logger is not None:
            from .metrics.store import read_metrics

            row = read_metrics(self.run_dir)[-1]
            self.logger.evaluation(self.run.step, row["metrics"], row.get("protocol"))
        return fid

    # --- checkpoints and rollback --------------------------------------------------------------
    def save_checkpoint(self, *, final: bool = False) -> bool:
        """This step's checkpoint, never one with non-finite weights (those roll back instead: False). A failed
        write (disk full) keeps the previous checkpoint and is reported; it is an error only for the last one."""
        if not self.run.weights_finite():
            self.rollback("the weights became non-finite")
            return False
        try:
            self.run.save(self.run_dir, keep=self.config.keep_checkpoints, every=self.config.checkpoint_every)
        except OSError as e:
            last = checkpoint.latest(self.run_dir)
            msg = (f"could not write the checkpoint of step {self.run.step} ({e.strerror or e}); "
                   f"the previous one, {last.name if last else 'none'}, is intact")
            if final:
                raise UserError(msg) from None
            self.log(f"\nwarning: {msg}; training goes on")
        self.last_checkpoint = time.monotonic()
        return True

    def rollback(self, why: str) -> None:
        """Back to the newest readable checkpoint with a lower learning rate; the loop then restarts its batches
        at the restored data cursor. The new state is checkpointed at once, so a kill after a rollback resumes
        after it."""
        path = self.run.rollback(self.run_dir, factor=self.config.rollback_lr_factor, log=self.log)
        self.guard.reset()
        self.stats.truncate(self.run.step)
        self.stats.reset()
        if self.logger is not None:  # the steps after the restored one are replayed: drop their curves
            self.logger.close()
            self.logger = make_logger(self.config.logger, self.run_dir, start_step=self.run.step, is_main=True)
        self.log(f"\nwarning: {why}; rolled back to {path.name} (step {self.run.step}) and lowered the learning "
                 f"rate to {self.run.lr:.3g}")
        self.save_checkpoint()

    # --- run directory, signals ------------------------------------------------------------------
    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        probe = self.run_dir / ".write-test"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise UserError(f"run directory {self.run_dir} is not writable: {e.strerror}") from None
        self.config.save(self.run_dir / "config.json")
        if self.data.skipped:
            with open(self.run_dir / "bad_images.txt", "w") as f:
                f.writelines(f"{name}\t{reason}\n" for name, reason in self.data.skipped)
            self.log(f"the {len(self.data.skipped)} skipped image(s) are listed in {self.run_dir / 'bad_images.txt'}")
        for stale in (self.run_dir / "checkpoints").glob(".tmp-*"):  # left by a kill during a write
            stale.unlink(missing_ok=True)
        self.stats.truncate(self.run.step)

def resume(run_dir: str | Path, overrides: dict | None = None, *, data: ImageSet | None = None,
           show_progress: bool = True, log: Callable[[str], None] = print,
           world: dist_.World | None = None) -> Trainer:
    """A trainer restored from the newest readable checkpoint of ``run_dir``, with ``overrides`` applied
    (see :func:`runstate.plan_resume`); the number of processes may differ from the run's."""
    world = world if world is not None else dist_.world_from_env()
    plan = plan_resume(run_dir, overrides, log=log if world.is_main else (lambda _msg: None))
    return _continued(plan, data=data, show_progress=show_progress, log=log, world=world)


def fork(source: str | Path, run_dir: str | Path, overrides: dict | None = None, *, data: ImageSet | None = None,
         show_progress: bool = True, log: Callable[[str], None] = print,
         world: dist_.World | None = None) -> Trainer:
    """A trainer for a new run in ``run_dir`` that continues ``source``'s checkpoint with ``overrides`` of the
    game's weights, the margin or the learning rate (see :func:`runstate.plan_fork`)."""
    world = world if world is not None else dist_.world_from_env()
    plan = plan_fork(source, run_dir, overrides, log=log if world.is_main else (lambda _msg: None))
    return _continued(plan, data=data, show_progress=show_progress, log=log, world=world)


def _continued(plan, *, data: ImageSet | None, show_progress: bool, log: Callable[[str], None],
               world: dist_.World) -> Trainer:
    """A trainer for ``plan.run_dir`` restored to ``plan``'s checkpoint (a resumed run or a fork)."""
    trainer = Trainer(plan.config, plan.run_dir, data=data, show_progress=show_progress, log=log, world=world)
    trainer.run.resume(plan, log=trainer.log)
    return trainer
