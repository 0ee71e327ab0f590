"""Every GPU path of introvae, end to end, in one command (under 10 minutes on one GPU); prints a pass/fail table.

    python benchmarks/gpu_check.py                    # on the GPU (--device auto)
    python benchmarks/gpu_check.py --device cpu --quick   # the same checks, small, on a CPU (CI runs this)

Checks: a few training steps in fp32, bf16 and fp16 (GradScaler), each with channels-last, activation
checkpointing, the EMA generator and FID during training; torch.compile; resume on the device; 50,000
samples written in chunks; 50,000 samples of the paper's 256 px network generated in chunks (memory must
stay flat); evaluate (Inception on the device); calibrate; the demo; two processes over NCCL when the
machine has two GPUs. Exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from introvae import checkpoint, get_preset
from introvae.cli import main as cli
from introvae.devices import resolve_device, synchronize
from introvae.model import IntroVAE
from introvae.trainer import COMPILE_OPTIONS, Trainer, resume


def tiny(quick: bool, **kw):
    """The faces preset (smaller in --quick mode) with every option a GPU run would use."""
    size = {"image_size": 16, "channels": (8, 16, 16), "latent_dim": 16} if quick else {}
    settings = dict(steps=6, vae_steps=2, log_every=1, image_every=3, checkpoint_every=3, ema=0.99,
                    checkpoint_activations=True, channels_last=True, eval_every=0, eval_samples=10 if quick else 500)
    return get_preset("faces").replace(**{**settings, **size, **kw})


def check_train(out: Path, device: str, quick: bool, precision: str) -> str:
    fid = {"eval_every": 6} if precision == "fp32" else {}  # FID during training: the Inception network on the device
    t = Trainer(tiny(quick, precision=precision, device=device, **fid), out / f"train-{precision}",
                show_progress=False, log=lambda s: None)
    t.train()
    rows = [r for r in (json_lines(t.run_dir / "stats.jsonl")) if r.get("loss_encoder") is not None]
    last = rows[-1]
    assert t.run.model.device.type == resolve_device(device).type, t.run.model.device
    assert all(v == v and abs(v) < 1e30 for k, v in last.items() if k.startswith(("loss_", "kl_"))
               and v is not None), last
    assert (t.run_dir / "samples-000000006.png").is_file() and (t.run_dir / "metrics.jsonl").is_file() == bool(fid)
    extra = f", fp16 overflows {last['fp16_overflows']}" if "fp16_overflows" in last else ""
    return f"6 steps, loss_encoder {last['loss_encoder']:.3g}, kl_fake {last['kl_fake']:.3g}{extra}"


def check_compile(out: Path, device: str, quick: bool) -> str:
    if quick:  # the CPU part: trace forward and backward graphs without generating C++ (seconds, not minutes)
        COMPILE_OPTIONS["backend"] = "aot_eager"
    import torch._dynamo

    torch._dynamo.reset()
    t = Trainer(tiny(quick, compile=True, device=device), out / "compiled", show_progress=False,
                log=lambda s: None)
    t0 = time.perf_counter()
    t.train()
    return f"6 steps with torch.compile ({COMPILE_OPTIONS.get('backend', 'inductor')}), {time.perf_counter() - t0:.0f} s"


def check_resume(out: Path, device: str, quick: bool) -> str:
    run = out / "resumed"
    Trainer(tiny(quick, device=device), run, show_progress=False, log=lambda s: None).train(stop_after=3)
    r = resume(run, {"steps": 8}, show_progress=False, log=lambda s: None)
    r.train()
    assert checkpoint.load(checkpoint.latest(run))["step"] == 8
    return f"stopped at 3, resumed on {r.device} and extended to 8"


def check_sample_files(out: Path, device: str, quick: bool) -> str:
    n = 500 if quick else 50_000
    rc = cli(["sample", str(out / "train-fp32"), "-n", str(n), "--batch-size", "1000", "-o", str(out / "samples"),
              "--device", device])
    assert rc == 0 and len(list((out / "samples").iterdir())) == n
    return f"{n} PNG files in chunks of 1000"


def check_sample_256(out: Path, device: str, quick: bool) -> str:
    dev = resolve_device(device)
    cfg = get_preset("celebahq256").model
    if quick:
        cfg = cfg.__class__(image_size=64, in_channels=3, latent_dim=32, channels=(8, 8, 8, 8, 8))
    model = IntroVAE(cfg).to(dev).eval()
    n, chunk = (64, 16) if quick else (50_000, 250)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0, total = time.perf_counter(), 0.0
    z = model.latents(n, seed=0)
    for c in z.split(chunk):
        total += float(model.sample(z=c).float().mean())  # kept nowhere: only the chunk lives on the device
    synchronize(dev)
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if dev.type == "cuda" else ""
    return f"{n} samples at {cfg.image_size} px in chunks of {chunk}: {time.perf_counter() - t0:.0f} s{peak}"


def check_evaluate(out: Path, device: str, quick: bool) -> str:
    n = 10 if quick else 2000
    rc = cli(["evaluate", str(out / "train-fp32"), "--num-samples", str(n), "--ref-images", str(n), "--pairs",
              str(n), "--device", device, "--quiet"])
    assert rc == 0
    last = json_lines(out / "train-fp32" / "metrics.jsonl")[-1]
    return f"FID {last['metrics']['fid']['value']:.1f} on {n} samples, Inception on {last['device']}"


def check_calibrate(out: Path, device: str, quick: bool) -> str:
    args = ["calibrate", "--data", "faces", "--steps", "10", "--device", device, "--quiet"]
    if quick:
        args += ["--image-size", "16", "--channels", "8,16,16", "--latent-dim", "16"]
    assert cli(args) == 0
    return "10 steps as a plain VAE"


def check_demo(out: Path, device: str, quick: bool) -> str:
    steps = 20 if quick else 300
    assert cli(["demo", "--steps", str(steps), "--out", str(out / "demo"), "--device", device, "--quiet"]) == 0
    assert (out / "demo" / "samples.png").is_file()
    return f"{steps} steps, pictures written"


def check_nccl(out: Path, device: str, quick: bool) -> str | None:
    if resolve_device(device).type != "cuda" or torch.cuda.device_count() < 2:
        return None  # skipped
    cfg = tiny(quick, device="cuda", steps=8)
    cfg.save(out / "nccl.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "introvae",
           "train", "--config", str(out / "nccl.json"), "--sync-bn", "--out", str(out / "nccl"), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert checkpoint.load(checkpoint.latest(out / "nccl"))["processes"] == 2
    return "2 processes, --sync-bn, 8 steps"


def json_lines(path: Path) -> list[dict]:
    import json

    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


CHECKS = [
    ("train fp32 (channels-last, checkpointed activations, EMA, FID)", lambda o, d, q: check_train(o, d, q, "fp32")),
    ("train bf16 (same)", lambda o, d, q: check_train(o, d, q, "bf16")),
    ("train fp16 + GradScaler (same)", lambda o, d, q: check_train(o, d, q, "fp16")),
    ("torch.compile", check_compile),
    ("resume on the device, extended", check_resume),
    ("sample to files in chunks", check_sample_files),
    ("sample the 256 px network in chunks", check_sample_256),
    ("evaluate", check_evaluate),
    ("calibrate", check_calibrate),
    ("demo", check_demo),
    ("2 processes over NCCL", check_nccl),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="small sizes (the CPU part that CI runs)")
    p.add_argument("--out", help="working directory (default: a temporary one)")
    args = p.parse_args()
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    print(f"# introvae GPU check on {name}, torch {torch.__version__}, quick={args.quick}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="introvae-gpu-check-") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("INTROVAE_CACHE", str(out / "cache"))
        for title, check in CHECKS:
            t0 = time.perf_counter()
            try:
                detail = check(out, args.device, args.quick)
                status = "skip" if detail is None else "PASS"
                detail = detail or "needs two CUDA devices"
            except Exception as e:  # noqa: BLE001 - every failure goes into the table
                status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                traceback.print_exc()
            results.append((title, status, time.perf_counter() - t0, detail))
            print(f"{status:4s} {title}: {detail}", flush=True)
    print("\n| check | result | seconds | detail |\n|---|---|---|---|")
    for title, status, seconds, detail in results:
        print(f"| {title} | {status} | {seconds:.1f} | {detail} |")
    return 1 if any(s == "FAIL" for _, s, _, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
