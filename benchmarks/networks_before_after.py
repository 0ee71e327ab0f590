"""The authors' networks (commit 84052b9) against the earlier ones (95fcd47): FLOPs and speed, in one process.

    git worktree add /tmp/introvae-95fcd47 95fcd47
    python benchmarks/networks_before_after.py /tmp/introvae-95fcd47/src

For each CPU preset, one IntroVAE training step of the earlier and of the current networks, alternated
(``--rounds`` rounds of 3 steps each, median images/s), and the FLOPs per training image counted with
FlopCounterMode over one step. For the paper's 256 and 1024 px presets, the generator's forward FLOPs per
image, counted on the meta device (shapes only). The earlier package is imported under another name from
a copy, so both versions run in this one process.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from introvae.model import IntroVAE
from introvae.objectives import IntroVAELoss
from introvae.presets import get_preset
from introvae.step import TrainStep, make_optimizers


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old_src", help="the src/ folder of a checkout of commit 95fcd47")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(Path(args.old_src) / "introvae", tmp / "introvae_old")  # relative imports: any name works
    sys.path.insert(0, str(tmp))
    import introvae_old.config as old_config
    import introvae_old.losses as old_losses
    import introvae_old.model as old_model

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in ("faces", "fashion-mnist", "rgb64"):
        cfg, m = get_preset(name), get_preset(name).model
        torch.manual_seed(0)
        old = old_model.IntroVAE(old_config.get_preset(name)).train()
        old_e, old_g = old_losses.make_optimizers(old, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        new = IntroVAE(m).train()
        step = TrainStep(new, make_optimizers(new, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2)))
        objective = IntroVAELoss(margin=cfg.margin, alpha=cfg.alpha, beta=cfg.beta)
        x = torch.rand(cfg.batch_size, m.in_channels, m.image_size, m.image_size)
        runs = {"earlier": lambda: old_losses.train_step(old, old_e, old_g, x, margin=cfg.margin, alpha=cfg.alpha,
                                                         beta=cfg.beta),
                "authors": lambda: step(objective, x)}
        gflop = {k: flops(f) / cfg.batch_size / 1e9 for k, f in runs.items()}
        for _ in range(3):
            for f in runs.values():
                f()
        speed = {k: [] for k in runs}
        for _ in range(args.rounds):
            for k, f in runs.items():
                t = time.perf_counter()
                for _ in range(3):
                    f()
                speed[k].append(3 * cfg.batch_size / (time.perf_counter() - t))
        o, n = (statistics.median(speed[k]) for k in runs)
        print(f"| {name} | {gflop['earlier']:.2f} -> {gflop['authors']:.2f} | {o:.1f} -> {n:.1f} | {n / o:.2f}x |",
              flush=True)
    for name in ("celebahq256", "celebahq1024"):
        with torch.device("meta"):
            old, new = old_model.IntroVAE(old_config.get_preset(name)), IntroVAE(get_preset(name).model)
            z = torch.randn(1, get_preset(name).model.latent_dim)
            g_old, g_new = flops(lambda: old.decoder(z)) / 1e9, flops(lambda: new.decoder(z)) / 1e9
        print(f"{name}: generator forward GFLOP per image {g_old:.1f} -> {g_new:.1f} ({g_new / g_old:.2f}x)")


if __name__ == "__main__":
    main()
