"""Training throughput (images/s) of the small CPU presets, one Algorithm 1 step at a time.

    python benchmarks/cpu_throughput.py [--presets faces fashion-mnist rgb64] [--steps 20]

Random images of the preset's shape (the data pipeline is not measured); the first steps are
warm-up and not timed. Prints the CPU's relevant flags so that numbers from different machines
are not compared as if they were alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from introvae import get_preset
from introvae.losses import make_optimizers, train_step
from introvae.model import IntroVAE, describe


def cpu_flags() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def measure(name: str, steps: int, warmup: int = 3) -> dict:
    cfg = get_preset(name)
    torch.manual_seed(0)
    model = IntroVAE(cfg).train()
    opt_e, opt_g = make_optimizers(model, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    x = torch.rand(cfg.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size)
    out = {"preset": name, "batch_size": cfg.batch_size, "model": describe(cfg)}
    for label, alpha in (("vae", 0.0), ("introvae", cfg.alpha)):
        for _ in range(warmup):
            train_step(model, opt_e, opt_g, x, margin=cfg.margin, alpha=alpha, beta=cfg.beta)
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt_e, opt_g, x, margin=cfg.margin, alpha=alpha, beta=cfg.beta)
        out[f"{label}_images_per_s"] = round(steps * cfg.batch_size / (time.perf_counter() - t0), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["faces", "fashion-mnist", "rgb64"])
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags: {cpu_flags()}")
    for name in args.presets:
        print(json.dumps(measure(name, args.steps)))


if __name__ == "__main__":
    main()
