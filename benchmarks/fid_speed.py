"""Speed of the FID Inception network, and whether a faster graph or precision keeps the numbers, in one run.

    python benchmarks/fid_speed.py [--batch-size 50] [--rounds 5] [--fid-images 1000] [--model RUN] [--device auto]

Images/s of the Inception network as published (``plain``), as introvae runs it in fp32 (``folded``: BatchNorms
folded into the convolutions, channels-last inputs) and the same graph in bf16 (``folded-bf16``, where the device
computes bf16 in hardware), alternated over ``--rounds`` rounds (median), with the FLOPs per image
(FlopCounterMode), the device's fp32 and bf16 matmul peaks in the same run and the share of them achieved.

Then the bound: FIDs of real pairs of sets computed with every graph, and each one's relative difference from
the fp32 graph as published (``plain``): Fashion-MNIST's test images against as many training images, two
disjoint halves of the training images, and, with ``--model RUN``, that model's samples against the test images.
Features are kept in ``--out`` (one file per set, count and graph), so an interrupted run continues where it
stopped. Last, the Fréchet distance of the first pair, from introvae's two eigendecompositions and from the
reference implementation's ``scipy.linalg.sqrtm``: seconds and values of each. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from introvae.data import load, to_float, to_uint8
from introvae.devices import has_native_bf16, resolve_device, synchronize
from introvae.metrics import fid as fidlib
from introvae.runs import load_model
from throughput import cpu_flags, matmul_peak


def graphs(device: torch.device, *, with_plain: bool = True) -> dict:
    """The feature functions to compare: published, folded fp32 and (where the hardware has bf16) folded bf16."""
    out = {"plain": fidlib.load_inception(device, fold=False)} if with_plain else {}
    out["folded"] = fidlib.load_inception(device)
    if has_native_bf16(device):
        out["folded-bf16"] = fidlib.load_inception(device, precision="bf16")
    return out


def speed(nets: dict, device: torch.device, batch_size: int, rounds: int) -> dict[str, float]:
    x = torch.rand(batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    for f in nets.values():  # warm-up
        f(x)
    times = {name: [] for name in nets}
    for _ in range(rounds):
        for name, f in nets.items():
            synchronize(device)
            t = time.perf_counter()
            f(x)
            synchronize(device)
            times[name].append(batch_size / (time.perf_counter() - t))
    return {name: statistics.median(v) for name, v in times.items()}


def sets_of_images(n: int, model: str | None, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 image sets: Fashion-MNIST test[:n], two disjoint training halves of n, and a model's n samples."""
    data = load("fashion-mnist", image_size=32, in_channels=1, show_progress=False)
    perm = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    out = {"test": data.test[:n], "train A": data.train[perm[:n].sort().values],
           "train B": data.train[perm[n:2 * n].sort().values]}
    if model:
        m = load_model(model, device=device)
        z = m.latents(n, seed=0)
        with torch.no_grad():
            out["samples"] = torch.cat([to_uint8(m.sample(z=c)).cpu() for c in z.split(100)])
    return out


def features(name: str, images: torch.Tensor, graph: str, f, out: Path, batch_size: int, device) -> torch.Tensor:
    path = out / f"{name.replace(' ', '-')}-{len(images)}-{graph}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    chunks = (to_float(images[k:k + batch_size]).to(device) for k in range(0, len(images), batch_size))
    t = time.perf_counter()
    feats = fidlib.inception_features(chunks, f, total=len(images), desc=f"{name} ({graph})")
    print(f"  {name}, {graph}: {len(images) / (time.perf_counter() - t):.1f} images/s", flush=True)
    torch.save(feats, path)
    return feats


def sqrtm_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """The reference implementation's Fréchet distance (``scipy.linalg.sqrtm`` of the product), to compare with."""
    import numpy as np
    import scipy.linalg

    (mu1, s1), (mu2, s2) = fidlib.statistics(a), fidlib.statistics(b)
    root = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        eps = np.eye(len(s1)) * 1e-6
        root = scipy.linalg.sqrtm((s1 + eps) @ (s2 + eps))
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


def frechet_timing(a: torch.Tensor, b: torch.Tensor) -> None:
    timed = {}
    for name, fn in (("eigh (introvae)", fidlib.fid_from_features), ("sqrtm (reference)", sqrtm_frechet)):
        t = time.perf_counter()
        timed[name] = (fn(a, b), time.perf_counter() - t)
    print("\n| Fréchet distance | FID | seconds |\n|---|---|---|")
    for name, (value, seconds) in timed.items():
        print(f"| {name} | {value:.6f} | {seconds:.1f} |")
    (ours, t1), (ref, t2) = timed.values()
    print(f"relative difference {abs(ours - ref) / ref:.1e}, {t2 / t1:.1f}× faster")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--fid-images", type=int, default=1000, help="images per set for the FID bound (0: skip)")
    p.add_argument("--model", help="a run, checkpoint or export whose samples make one more pair (vs test)")
    p.add_argument("--bound-graphs", default="plain,folded,folded-bf16",
                   help="graphs whose FIDs are compared (plain is the reference)")
    p.add_argument("--out", default="bench-runs/fid-bound", help="where the features of the bound are kept")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU flags: {cpu_flags()}"
    print(f"# torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {where}", flush=True)
    nets = graphs(device)
    with FlopCounterMode(display=False) as counter:
        nets["plain"](torch.rand(1, 1, 32, 32, device=device))
    gflop = counter.get_total_flops() / 1e9
    if args.rounds:
        images_per_s = speed(nets, device, args.batch_size, args.rounds)
        n = 4096 if device.type == "cuda" else 2048
        peaks = {torch.float32: matmul_peak(device, torch.float32, n) / 1e9}
        if "folded-bf16" in nets:
            peaks[torch.bfloat16] = matmul_peak(device, torch.bfloat16, n) / 1e9
        print(f"\n{gflop:.2f} GFLOP per image (299 px); matmul peak fp32 {peaks[torch.float32]:.0f} GFLOP/s"
              + (f", bf16 {peaks[torch.bfloat16]:.0f} GFLOP/s" if torch.bfloat16 in peaks else "") + "\n")
        print("| graph | images/s (median of rounds) | × plain | % of the matmul peak of its dtype |\n|---|---|---|---|")
        for name, v in images_per_s.items():
            peak = peaks[torch.bfloat16 if name.endswith("bf16") else torch.float32]
            print(f"| {name} | {v:.2f} | {v / images_per_s['plain']:.2f} | {100 * v * gflop / peak:.1f} |")
    if not args.fid_images:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [g for g in args.bound_graphs.split(",") if g in nets]
    images = sets_of_images(args.fid_images, args.model, device)
    feats = {(s, g): features(s, x, g, nets[g], out, args.batch_size, device) for s, x in images.items() for g in chosen}
    pairs = [("test", "train A"), ("train A", "train B")] + ([("samples", "test")] if args.model else [])
    rows = []
    print(f"\nFID with each graph, {args.fid_images} images a side; difference relative to {chosen[0]}\n")
    print("| pair | " + " | ".join(chosen) + " | " + " | ".join(f"{g} rel. diff." for g in chosen[1:]) + " |")
    print("|---|" + "---|" * (2 * len(chosen) - 1))
    for a, b in pairs:
        fids = {g: fidlib.fid_from_features(feats[(a, g)], feats[(b, g)]) for g in chosen}
        ref = fids[chosen[0]]
        diffs = {g: (fids[g] - ref) / ref for g in chosen[1:]}
        rows.append({"pair": f"{a} vs {b}", "images": args.fid_images, "fid": fids, "relative_difference": diffs})
        print(f"| {a} vs {b} | " + " | ".join(f"{v:.4f}" for v in fids.values()) + " | "
              + " | ".join(f"{100 * d:+.3f} %" for d in diffs.values()) + " |")
    frechet_timing(feats[(pairs[0][0], chosen[0])], feats[(pairs[0][1], chosen[0])])
    (out / f"bound-{args.fid_images}.json").write_text(json.dumps(
        {"rows": rows, "cpu_flags": cpu_flags(), "device": str(device), "model": args.model}, indent=2))


if __name__ == "__main__":
    main()
