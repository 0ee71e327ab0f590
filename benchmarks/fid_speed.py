"""Speed of the FID Inception network, and whether a faster graph keeps the numbers, in one run.

    python benchmarks/fid_speed.py [--batch-size 50] [--rounds 5] [--fid-images 1000] [--device auto]

Images/s of the Inception network as published (``plain``) and as introvae runs it (``folded``: BatchNorms
folded into the convolutions, channels-last inputs), alternated over ``--rounds`` rounds (median), with the
FLOPs per image (FlopCounterMode), the device's matmul peak in the same run and the share of it achieved.
Then the FID of Fashion-MNIST's test images against as many training images, computed with both graphs:
the relative difference is the bound to quote for the faster one. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from introvae.data import load, to_float
from introvae.devices import resolve_device, synchronize
from introvae.metrics import fid as fidlib
from throughput import cpu_flags, matmul_peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--fid-images", type=int, default=1000, help="Fashion-MNIST images per side (0: skip)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU flags: {cpu_flags()}"
    print(f"# torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {where}", flush=True)
    nets = {"plain": fidlib.load_inception(device, fold=False), "folded": fidlib.load_inception(device)}
    x = torch.rand(args.batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with FlopCounterMode(display=False) as counter:
        nets["plain"](x[:1])
    gflop = counter.get_total_flops() / 1e9
    for f in nets.values():  # warm-up
        f(x)
    speed = {name: [] for name in nets}
    for _ in range(args.rounds):
        for name, f in nets.items():
            synchronize(device)
            t = time.perf_counter()
            f(x)
            synchronize(device)
            speed[name].append(args.batch_size / (time.perf_counter() - t))
    peak = matmul_peak(device, torch.float32, 4096 if device.type == "cuda" else 2048) / 1e9
    print(f"\n{gflop:.2f} GFLOP per image (299 px); fp32 matmul peak {peak:.0f} GFLOP/s\n")
    print("| graph | images/s (median of rounds) | % of matmul peak |\n|---|---|---|")
    for name, values in speed.items():
        v = statistics.median(values)
        print(f"| {name} | {v:.2f} | {100 * v * gflop / peak:.1f} |")
    plain, folded = (statistics.median(speed[k]) for k in ("plain", "folded"))
    print(f"\nfolded / plain: {folded / plain:.2f}x")
    if args.fid_images:
        data = load("fashion-mnist", image_size=32, in_channels=1, show_progress=False)
        n = args.fid_images
        sets = {"test": data.test[:n], "train": data.train[:n]}
        fids = {}
        for name, f in nets.items():
            feats = {k: torch.cat([f(to_float(v[i:i + args.batch_size]).to(device)).cpu().double()
                                   for i in range(0, len(v), args.batch_size)]) for k, v in sets.items()}
            fids[name] = fidlib.fid_from_features(feats["test"], feats["train"])
        diff = abs(fids["folded"] - fids["plain"]) / fids["plain"]
        print(f"FID Fashion-MNIST test vs train, {n} images each: plain {fids['plain']:.4f}, folded "
              f"{fids['folded']:.4f} (relative difference {diff:.2e})")


if __name__ == "__main__":
    main()
