"""Training statistics: sums kept on the device, reduced over processes, written as ``stats.jsonl``.

One row every ``log_every`` steps: step, epoch, alpha, images/s and the means of the objective's
logged values (``loss_encoder``, ``loss_generator``, ``reconstruction``, ``kl_real``, ``kl_rec``,
``kl_fake``, Soft-IntroVAE's ``exp_elbo``, IntroVAE's ``margin`` in force) over the steps the divergence guard did
not skip, plus the skips, rollbacks and the learning rate. Nothing is read on the host between rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import distributed as dist_

LOGGED = ("loss_encoder", "loss_generator", "reconstruction", "kl_real", "kl_rec", "kl_fake",
          "exp_elbo",  # soft-introvae: the mean of exp(-2 s ELBO) of generated images (else None)
          "margin")  # introvae after its warm-up: m in force (a number, or margin.AutoMargin's)


class TrainingStats:
    def __init__(self, run_dir: Path, device: torch.device, world: dist_.World):
        self.path, self.device, self.world = Path(run_dir) / "stats.jsonl", device, world
        self.reset()

    def reset(self) -> None:
        zero = torch.zeros((), device=self.device)
        self.sums: dict[str, torch.Tensor] = {}
        self.good, self.skipped, self.overflows = zero, zero, zero
        self.images, self.t0 = 0, time.perf_counter()
        self.waited = 0.0  # seconds the loop waited for its batches since the last row (host clock)

    def waited_for_data(self, seconds: float) -> None:
        self.waited += seconds

    def add(self, logs: dict[str, torch.Tensor], *, images: int) -> None:
        """One step's logged values; a step the guard skipped counts as skipped, its values (maybe NaN) not."""
        good = 1.0 - logs["skipped"]
        self.good, self.skipped = self.good + good, self.skipped + logs["skipped"]
        self.overflows = self.overflows + logs["overflow"]
        for k in LOGGED:
            if k in logs:
                v = torch.where(good > 0, logs[k], 0.0)
                self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.images += images

    def write_row(self, fields: dict, *, fp16: bool = False) -> dict:
        """The row of the steps since the last one (means over every process's images), appended to the file."""
        seconds = time.perf_counter() - self.t0
        keys = [k for k in LOGGED if k in self.sums]
        values = torch.stack([self.sums[k] for k in keys] + [self.good, self.skipped, self.overflows])
        if self.world.enabled:
            import torch.distributed as dist

            dist.all_reduce(values)
        *sums, good, skipped, overflows = values.tolist()
        means = {k: s / good for k, s in zip(keys, sums)} if good > 0 else {}
        row = {**fields, "images_per_s": round(self.images / max(seconds, 1e-9), 2),
               "data_wait": round(min(1.0, self.waited / max(seconds, 1e-9)), 4),
               **{k: means.get(k) for k in LOGGED}, "skipped_steps": round(skipped / self.world.size)}
        if fp16:
            row["fp16_overflows"] = round(overflows / self.world.size)
        self.append(row)
        self.reset()
        return row

    def append(self, row: dict) -> None:
        if self.world.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def truncate(self, step: int) -> None:
        """Drop the rows of steps after ``step``: after a resume or a rollback they are replayed."""
        if self.path.exists() and self.world.is_main:
            kept = [ln for ln in self.path.read_text().splitlines() if (s := row_step(ln)) is not None and s <= step]
            self.path.write_text("".join(ln + "\n" for ln in kept))


def read_stats(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "stats.jsonl"
    if not p.exists():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if row_step(ln) is not None]


def row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill
