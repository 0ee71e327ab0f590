"""Experiment. Its result: docs/history.md ("The trainer against the bare step").

The trainer's throughput against the bare Algorithm 1 step's, in one process, interleaved.

    python experiments/trainer_overhead.py [--preset fashion-mnist] [--steps 300] [--rounds 3] [--device auto]

``bare``: :class:`introvae.step.TrainStep` alone on the preset's real training batches, gathered beforehand
(no data gathering, logging, snapshots, checkpoints or guard reads), after a warm-up. ``trainer``:
``introvae train`` of the same preset for ``--steps`` steps, as a user runs it (the same data, in memory), with
everything that costs: gathering batches, flips, the stats rows, the divergence guard's reads, image grids and
the KL plot, checkpoints (step 0, by time, the end). Two trainer figures: ``whole call`` (the wall time of
``Trainer.train()``, everything included) and ``steady`` (the median of its stats rows' images/s, which leave out
the step-0 and final checkpoints). Rounds alternate, so a machine whose speed drifts hurts both alike; the
medians and their ratios are printed with the CPU's flags.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from introvae import get_preset
from introvae.data import batches, load
from introvae.devices import resolve_device, synchronize
from introvae.objectives import make_objective
from introvae.precision import make_precision
from introvae.stats import read_stats
from introvae.step import TrainStep, make_optimizers
from introvae.model import IntroVAE
from introvae.trainer import Trainer
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the tools beside the experiments
from throughput import cpu_flags  # noqa: E402


def bare(cfg, data, steps: int, device) -> float:
    """Images/s of the bare introspective step on ``steps`` real batches (gathered before the clock starts)."""
    torch.manual_seed(0)
    model = IntroVAE(cfg.model).to(device).train()
    opts = make_optimizers(model, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    step = TrainStep(model, opts, precision=make_precision(cfg.precision, device),
                     real_statistics=cfg.encoder_stats == "real")
    objective = make_objective(cfg, margin=42.0 if cfg.margin == "auto" else None)  # the same FLOPs either way
    xs, epoch = [], 0
    while len(xs) < steps + 5:  # as many epochs as it takes
        xs += [x.to(device) for _, x in batches(data.train, cfg.batch_size, seed=0, epoch=epoch, mirror=cfg.mirror)]
        epoch += 1
    xs = xs[:steps + 5]
    for x in xs[:5]:  # warm-up
        step(objective, x)
    synchronize(device)
    t = time.perf_counter()
    for x in xs[5:]:
        step(objective, x)
    synchronize(device)
    return steps * cfg.batch_size / (time.perf_counter() - t)


def trainer(cfg, data, steps: int) -> tuple[float, float]:
    """(whole-call images/s, median of the stats rows' images/s) of ``introvae train`` for ``steps`` steps."""
    with tempfile.TemporaryDirectory(prefix="introvae-overhead-") as tmp:
        # No warm-up steps: the introspective step all along, as the bare side measures.
        t = Trainer(cfg.replace(steps=steps, vae_steps=0, vae_epochs=0.0), Path(tmp) / "run", data=data,
                    show_progress=False, log=lambda s: None)
        start = time.perf_counter()
        t.train()
        whole = steps * cfg.batch_size / (time.perf_counter() - start)
        rows = read_stats(Path(tmp) / "run")[1:]  # the first row includes the first steps' warm-up
        return whole, statistics.median(r["images_per_s"] for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = get_preset(args.preset).replace(device=str(device))
    data = load(cfg.data, image_size=cfg.model.image_size, in_channels=cfg.model.in_channels,
                holdout_fraction=cfg.holdout_fraction, show_progress=False)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU flags: {cpu_flags()}"
    print(f"# torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {where}; {args.preset}, "
          f"batch {cfg.batch_size}, {args.steps} steps a round, {args.rounds} rounds", flush=True)
    results = {"bare": [], "trainer (whole call)": [], "trainer (steady)": []}
    for r in range(args.rounds):
        results["bare"].append(bare(cfg, data, args.steps, device))
        whole, steady = trainer(cfg, data, args.steps)
        results["trainer (whole call)"].append(whole)
        results["trainer (steady)"].append(steady)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()), flush=True)
    ref = statistics.median(results["bare"])
    print("\n| measured | images/s (median) | × bare |\n|---|---|---|")
    for k, v in results.items():
        print(f"| {k} | {statistics.median(v):.1f} | {statistics.median(v) / ref:.3f} |")


if __name__ == "__main__":
    main()
