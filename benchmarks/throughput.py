"""Training throughput against the hardware's own limit, in one run.

    python benchmarks/throughput.py --preset faces fashion-mnist rgb64 --objective vae introvae
    python benchmarks/throughput.py --preset fashion-mnist fashion-mnist-soft fashion-mnist-vae --threads 1
    python benchmarks/throughput.py --preset fashion-mnist --channels 64,128,256,256 --batch-size 32 \
        --precision fp32 bf16 --channels-last

For each preset, objective and precision: training images/s of the bare Algorithm 1 step (random images of
the preset's shape, after warm-up), the model FLOPs per training image (counted with FlopCounterMode over one
real step: every encoder and generator pass, forward and backward), the achieved FLOP/s, the device's
measured peak (a large matmul in the same dtype, best of several), their ratio, and the peak memory. One
JSON line per configuration, then a markdown table. The CPU's flags are printed, so that numbers from
different machines are not compared as if they were alike.

``--compile`` and ``--checkpoint-activations`` measure those options. ``--data PATH --loader-workers K``
also measures the data pipeline on its own (decoding, resizing, batching in K worker processes): if it
delivers fewer images/s than training consumes, the device waits for data.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from introvae import devices
from introvae.devices import resolve_device, synchronize
from introvae.model import IntroVAE, count_parameters
from introvae.objectives import make_objective
from introvae.precision import emulated_warning, make_precision
from introvae.provenance import SPEED_FLAGS
from introvae.presets import get_preset
from introvae.step import TrainStep, make_optimizers


def cpu_flags() -> str:
    """The CPU flags that decide its fp32 and bf16 speed."""
    flags = devices.cpu_flags()
    if not flags:
        return platform.processor() or "-"
    return " ".join(f for f in SPEED_FLAGS if f in flags) or "-"


def matmul_peak(device, dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype`` (best of ``repeats``)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def measure(cfg, precision_name: str, steps: int, warmup: int, device) -> dict:
    torch.manual_seed(0)
    model = IntroVAE(cfg.model).to(device).checkpoint_activations(cfg.checkpoint_activations).train()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrappers = {"encoder": torch.compile(model.encoder), "decoder": torch.compile(model.decoder)} \
        if cfg.compile else None
    precision = make_precision(precision_name, device)
    opts = make_optimizers(model, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
    eager, step = (TrainStep(model, opts, precision=precision, guard=False, wrappers=w) for w in (None, wrappers))
    # The margin only decides which images the hinge pushes, not what a step costs; `auto` is a run's object.
    objective = make_objective(cfg, margin=100.0 if cfg.margin == "auto" else None)
    m = cfg.model
    x = torch.rand(cfg.batch_size, m.in_channels, m.image_size, m.image_size, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        eager(objective, x)  # counted eagerly: compiling changes how, not how many, FLOPs are done
    flops_per_image = counter.get_total_flops() / cfg.batch_size
    for _ in range(warmup):
        step(objective, x)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        step(objective, x)
    synchronize(device)
    images_per_s = steps * cfg.batch_size / (time.perf_counter() - t)
    # A dtype the CPU only emulates has no meaningful peak (and measuring it takes minutes): none is printed.
    emulated = emulated_warning(precision_name, device) is not None
    peak = None if emulated else matmul_peak(device, precision.dtype or torch.float32,
                                             4096 if device.type == "cuda" else 2048)
    achieved = flops_per_image * images_per_s
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"objective": cfg.objective, "image_size": m.image_size, "channels": list(m.stage_channels),
            "latent_dim": m.latent_dim, "batch_size": cfg.batch_size, "precision": precision_name,
            "threads": torch.get_num_threads(),
            "channels_last": cfg.channels_last, "compile": cfg.compile,
            "checkpoint_activations": cfg.checkpoint_activations, "parameters": count_parameters(model),
            "images_per_s": round(images_per_s, 2), "gflop_per_image": round(flops_per_image / 1e9, 4),
            "achieved_tflops": round(achieved / 1e12, 4), "peak_tflops": round(peak / 1e12, 4) if peak else None,
            "fraction_of_peak": round(achieved / peak, 4) if peak else None, "emulated": emulated,
            "peak_memory_mib": round(memory / 2 ** 20, 1),
            "memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS"}


def measure_loader(cfg, workers: int, batches_to_time: int) -> dict:
    """Images/s of the data pipeline alone: the training loop's batches with nothing else to do."""
    from introvae.data import batches, load

    m = cfg.model
    data = load(cfg.data, image_size=m.image_size, in_channels=m.in_channels, show_progress=False)
    stream = batches(data.train, cfg.batch_size, seed=0, epoch=0, workers=workers, pin_memory=torch.cuda.is_available())
    n, t = 0, None
    for k, (_, x) in enumerate(stream):
        if k == 2:  # after the workers have started
            t, n = time.perf_counter(), 0
        n += len(x)
        if k == batches_to_time + 2:
            break
    seconds = time.perf_counter() - t if t else float("nan")
    return {"loader": cfg.data, "streamed": type(data.train).__name__ != "Tensor", "workers": workers,
            "batch_size": cfg.batch_size, "image_size": m.image_size, "images_per_s": round(n / seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", nargs="+", default=["fashion-mnist"])
    p.add_argument("--objective", nargs="+", choices=["introvae", "soft-introvae", "vae"],
                   help="the objectives to time (default: each preset's own)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, all cores)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--channels", help="e.g. 64,128,256,256")
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="also measure each configuration with the networks under torch.compile (same run)")
    p.add_argument("--checkpoint-activations", action="store_true")
    p.add_argument("--data", help="also measure the data pipeline alone on this data set (path or name)")
    p.add_argument("--loader-workers", type=int, default=0, help="worker processes of that pipeline")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json-out", help="append the JSON lines to this file")
    args = p.parse_args()

    overrides = {k: v for k, v in (("image_size", args.image_size), ("channels", args.channels),
                                   ("latent_dim", args.latent_dim), ("batch_size", args.batch_size)) if v}
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU flags: {cpu_flags()}"
    print(f"# torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {where}")
    rows = []

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(json.dumps(row) + "\n")

    for preset in args.preset:
        base = get_preset(preset).replace(channels_last=args.channels_last, data=get_preset(preset).data or "faces",
                                          checkpoint_activations=args.checkpoint_activations, **overrides)
        for objective in args.objective or [base.objective]:
            for name in args.precision:
                for compiled in ((False, True) if args.compile else (False,)):
                    row = {"preset": preset, **measure(base.replace(objective=objective, compile=compiled), name,
                                                       args.steps, args.warmup, device), "device": where}
                    rows.append(row)
                    emit(row)
        if args.data:
            emit(measure_loader(base.replace(data=args.data), args.loader_workers,
                                batches_to_time=max(20, args.steps)))
    print("\n| preset | objective | size | batch | precision | channels_last | compile | images/s | GFLOP/image "
          "| achieved TFLOP/s | matmul peak TFLOP/s | % of peak | peak memory MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['objective']} | {r['image_size']} | {r['batch_size']} | {r['precision']} "
              f"| {r['channels_last']} | {r['compile']} | {r['images_per_s']} | {r['gflop_per_image']} "
              f"| {r['achieved_tflops']} | {r['peak_tflops'] or '-'} | {share(r)} "
              f"| {r['peak_memory_mib']} |")


def share(row: dict) -> str:
    """The % of peak cell: none where the dtype is emulated (its 'peak' would be the emulation's)."""
    return "not meaningful: emulated here" if row.get("emulated") else f"{100 * row['fraction_of_peak']:.1f}"


if __name__ == "__main__":
    main()
