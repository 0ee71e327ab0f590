"""Every GPU path of introvae, end to end, in one command (under 10 minutes on one GPU); prints a pass/fail table.

    python benchmarks/gpu_check.py                    # on the GPU (--device auto)
    python benchmarks/gpu_check.py --device cpu --quick   # the same checks, small, on a CPU (CI runs this)

Checks: a few training steps in fp32, bf16 and fp16 (GradScaler), each with channels-last, activation
checkpointing, the EMA generator and FID during training; torch.compile; resume on the device (an image run, and
a 2D density run killed after a checkpoint); 50,000 samples written in chunks; 50,000 samples of the paper's
256 px network generated in chunks (peak memory of the last chunk within 5 % of the first, asserted); evaluate
(Inception on the device); calibrate; the demo; two processes over NCCL when the machine has two GPUs; and, on a
GPU only: no host synchronisation inside a step (CUDA's sync debug mode), CPU/GPU parity of one fp32 step,
celebahq1024 at batch 8 with and without activation checkpointing (peak memory), a celebahq256 step's img/s against
the bf16 matmul peak measured in the same run. Each check asserts what its row says. A skip is never a pass: the
last line reads ``N passed, K failed, M skipped``, and ``--require nccl`` (or ``gpu``) turns those skips into failures.
Exits with status 1 if any check fails.
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
from introvae.trainer import Trainer, resume
from introvae.wrappers import COMPILE_OPTIONS


def tiny(quick: bool, **kw):
    """The faces preset (smaller in --quick mode) with every option a GPU run would use."""
    size = {"image_size": 16, "channels": (8, 16, 16), "latent_dim": 16} if quick else {}
    settings = dict(steps=6, vae_steps=2, log_every=1, image_every=3, checkpoint_every=3, ema=0.99,
                    checkpoint_activations=True, channels_last=True, eval_every=0, eval_samples=10 if quick else 500)
    return get_preset("faces").replace(**{**settings, **size, **kw})


def assert_finite_steps(rows: list[dict], what: str = "") -> None:
    """Every logged step, not only the last: finite losses and KLs, nothing skipped by the guard."""
    for r in rows:
        bad = {k: v for k, v in r.items() if k.startswith(("loss_", "kl_")) and v is not None
               and not (v == v and abs(v) < 1e30)}
        assert not bad and not r.get("skipped_steps"), (what, r["step"], bad, r.get("skipped_steps"))


def check_train(out: Path, device: str, quick: bool, precision: str) -> str:
    fid = {"eval_every": 6} if precision == "fp32" else {}  # FID during training: the Inception network on the device
    t = Trainer(tiny(quick, precision=precision, device=device, **fid), out / f"train-{precision}",
                show_progress=False, log=lambda s: None)
    t.train()
    rows = [r for r in (json_lines(t.run_dir / "stats.jsonl")) if r.get("loss_encoder") is not None]
    last = rows[-1]
    assert t.run.model.device.type == resolve_device(device).type, t.run.model.device
    assert len(rows) == 6, f"{len(rows)} logged steps of 6"
    assert_finite_steps(rows)
    assert (t.run_dir / "samples-000000006.png").is_file() and (t.run_dir / "metrics.jsonl").is_file() == bool(fid)
    session = json_lines(t.run_dir / "sessions.jsonl")[-1]  # the run says where it trained: this GPU, by name
    if t.device.type == "cuda":
        assert session["machine"].get("gpu") == torch.cuda.get_device_name(t.device), session
    assert session["precision"] == t.run.precision.name and session["device"] == str(t.device), session
    extra = ""
    if precision == "fp16":
        overflows = sum(r.get("fp16_overflows") or 0 for r in rows)
        scale = last["fp16_scale"]
        # the scaler starts at 2**10 and halves at each overflow until it finds its level: some steps may overflow
        # at first, but not all, and the scale must stay a usable one
        assert overflows < len(rows) and 1.0 <= scale <= 2.0 ** 16, (overflows, scale)
        extra = f", fp16 overflows {overflows}, final loss scale {scale:g}"
    return f"6 steps all finite, loss_encoder {last['loss_encoder']:.3g}, kl_fake {last['kl_fake']:.3g}{extra}"


def check_objectives(out: Path, device: str, quick: bool) -> str:
    """Soft-IntroVAE and the VAE baseline (with its extra no-grad pass over prior draws) train in bf16 on the
    device: finite losses every step, and the VAE's two sets of generator statistics both tracked and different."""
    from introvae import generator_stats

    said = []
    for objective in ("soft-introvae", "vae"):
        cfg = tiny(quick, objective=objective, precision="bf16", device=device, beta_neg=8.0, ema=0.0)
        t = Trainer(cfg, out / f"objective-{objective}", show_progress=False, log=lambda s: None)
        t.train()
        rows = [r for r in json_lines(t.run_dir / "stats.jsonl") if r.get("loss_encoder") is not None]
        assert len(rows) == 6 and t.run.model.device.type == resolve_device(device).type, (len(rows), objective)
        assert_finite_steps(rows, objective)
        said.append(f"{objective} loss_encoder {rows[-1]['loss_encoder']:.3g}")
    decoder = t.run.model.decoder
    passes = int(getattr(decoder, generator_stats.POSTERIOR_STEPS))
    prior = torch.cat([b.flatten().float().cpu() for b in generator_stats.running_statistics(decoder)])
    posterior = getattr(decoder, generator_stats.POSTERIOR).float().cpu()
    assert passes > 0 and prior.shape == posterior.shape and not torch.allclose(prior, posterior), passes
    return "6 steps each, all finite; " + ", ".join(said) + f"; the VAE tracked {passes} posterior passes apart"


def check_compile(out: Path, device: str, quick: bool) -> str:
    if quick:  # the CPU part: trace forward and backward graphs without generating C++ (seconds, not minutes)
        COMPILE_OPTIONS["backend"] = "aot_eager"
    import torch._dynamo

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    t = Trainer(tiny(quick, compile=True, device=device, steps=3), out / "compiled", show_progress=False,
                log=lambda s: None)
    t0 = time.perf_counter()
    t.train()
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0, "torch.compile compiled no graph"
    from torch._dynamo.eval_frame import OptimizedModule

    assert all(isinstance(m, OptimizedModule) for m in t.train_step.frozen_wrappers.values()), \
        "the frozen passes are not compiled"
    first = dict(counters["stats"])
    r = resume(out / "compiled", {"steps": 6}, show_progress=False, log=lambda s: None)  # the same shapes again
    r.train()
    recompiled = counters["stats"]["unique_graphs"] - first["unique_graphs"]
    # a resumed process compiles its graphs once more (a new process would too); the check is that steps 4-6 did
    # not keep compiling: at most the first run's count again
    assert recompiled <= graphs, f"{recompiled} graphs compiled after the first run's {graphs}"
    return (f"6 steps with torch.compile ({COMPILE_OPTIONS.get('backend', 'inductor')}): {graphs} graphs, "
            f"{time.perf_counter() - t0:.0f} s (frozen passes compiled too)")


def assert_resumed_alike(resumed: dict, whole: dict, device: torch.device, *, gpu_bound: float) -> float:
    """The largest weight difference between a resumed run and an uninterrupted one: none on the CPU (bit for
    bit), under ``gpu_bound`` on an accelerator."""
    diff = max(float((resumed[k].float() - whole[k].float()).abs().max()) for k in whole)
    bound_words = "0" if device.type == "cpu" else f"< {gpu_bound:g}"
    assert (diff == 0.0 if device.type == "cpu" else diff < gpu_bound), \
        f"resumed weights differ from the uninterrupted run's by {diff:g} (allowed: {bound_words})"
    return diff


def check_resume(out: Path, device: str, quick: bool) -> str:
    run, whole = out / "resumed", out / "uninterrupted"
    Trainer(tiny(quick, device=device), run, show_progress=False, log=lambda s: None).train(stop_after=3)
    r = resume(run, {"steps": 6}, show_progress=False, log=lambda s: None)
    r.train()
    w = Trainer(tiny(quick, device=device), whole, show_progress=False, log=lambda s: None)
    w.train()
    assert checkpoint.load(checkpoint.latest(run))["step"] == 6
    # cuDNN's autotuned kernels may differ between processes in the last bits
    diff = assert_resumed_alike(r.run.model.state_dict(), w.run.model.state_dict(), r.device, gpu_bound=1e-3)
    return f"stopped at 3, resumed on {r.device} to 6: max weight difference from an uninterrupted run {diff:.2g}"


def check_toy2d_resume(out: Path, device: str, quick: bool) -> str:
    """A 2D density run killed right after a checkpoint resumes on the device (Adam, the automatic margin, the CUDA
    random state of the reparameterisation) and ends as the run never stopped."""
    from introvae.toy2d import ToyConfig, train
    from introvae.toy2d import run as toyrun

    cfg = ToyConfig(density="8gaussians", objective="introvae", steps=40 if quick else 400,
                    vae_steps=10 if quick else 100, batch_size=64 if quick else 512, log_every=10,
                    checkpoint_every=20 if quick else 200, eval_points=500, score_draws=1, device=device)
    whole = train(cfg, out / "toy-whole", progress=False)
    parts_save, stop_at = toyrun._Parts.save, cfg.checkpoint_every

    def save_then_die(self, path, config, step, **kw):  # a kill -9 right after the first checkpoint
        parts_save(self, path, config, step, **kw)
        if step == stop_at:
            raise SystemExit("killed")

    toyrun._Parts.save = save_then_die
    try:
        try:
            train(cfg, out / "toy-resumed", progress=False)
            raise AssertionError("the run was not stopped at its first checkpoint")
        except SystemExit:
            pass
    finally:
        toyrun._Parts.save = parts_save
    said = []
    resumed = train(cfg, out / "toy-resumed", progress=False, log=said.append)
    assert said and f"at step {stop_at} of {cfg.steps}" in said[0], said
    # the same kernels and random streams: at most the last bits
    diff = assert_resumed_alike(torch.load(out / "toy-resumed" / "model.pt", weights_only=True),
                                torch.load(out / "toy-whole" / "model.pt", weights_only=True),
                                resolve_device(device), gpu_bound=1e-4)
    return (f"{cfg.steps} steps, killed after step {stop_at}'s checkpoint, resumed: max weight difference {diff:.2g}; "
            f"JSD {resumed['jsd']:.2f} (uninterrupted {whole['jsd']:.2f})")


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
    t0, total, peaks = time.perf_counter(), 0.0, []
    z = model.latents(n, seed=0)
    for c in z.split(chunk):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        total += float(model.sample(z=c).float().mean())  # kept nowhere: only the chunk lives on the device
        if dev.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(dev))
    synchronize(dev)
    peak = ""
    if peaks:  # memory must stay flat: the last chunk's peak within 5 % of the first's
        assert peaks[-1] <= 1.05 * peaks[0], f"peak memory grew from {peaks[0]} to {peaks[-1]} bytes"
        peak = f", peak GPU memory {peaks[0] / 2**30:.2f} GiB (first chunk) and {peaks[-1] / 2**30:.2f} (last)"
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
    import math

    done = []
    for precision in ("fp32", "bf16"):  # bf16: the GPU default (--precision auto), its all-reduces in bf16 autocast
        cfg = tiny(quick, device="cuda", steps=8, precision=precision)
        cfg.save(out / f"nccl-{precision}.json")
        run = out / f"nccl-{precision}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "introvae",
               "train", "--config", str(out / f"nccl-{precision}.json"), "--sync-bn", "--out", str(run), "--quiet"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
        assert checkpoint.load(checkpoint.latest(run))["processes"] == 2
        rows = json_lines(run / "stats.jsonl")
        assert rows and all(math.isfinite(row["loss_encoder"]) and math.isfinite(row["loss_generator"])
                            for row in rows), f"{precision}: a non-finite loss over NCCL"
        done.append(f"{precision} {len(rows)} rows finite")
    return "2 processes, --sync-bn, 8 steps each: " + "; ".join(done)


def json_lines(path: Path) -> list[dict]:
    import json

    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def check_host_syncs(out: Path, device: str, quick: bool) -> str | None:
    """CUDA's own sync detector over steps that write no stats line: none may wait for the device."""
    if resolve_device(device).type != "cuda":
        return None  # the CPU suite counts host reads on the stand-in accelerator (tests/test_devices.py)
    import warnings

    t = Trainer(tiny(quick, device=device, steps=8, log_every=4, image_every=100, checkpoint_every=0,
                     checkpoint_minutes=0, checkpoint_activations=False), out / "syncs", show_progress=False,
                log=lambda s: None)
    step = t.train_step
    syncs = []

    def counted(objective, x):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return step(objective, x)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                syncs.append(sum("synchroniz" in str(w.message) for w in caught))

    t.train_step = counted
    t.train()
    assert sum(syncs) == 0, f"host synchronisations inside training steps: {syncs}"
    return f"{len(syncs)} steps, no synchronisation inside a step (torch.cuda.set_sync_debug_mode)"


def check_parity(out: Path, device: str, quick: bool) -> str | None:
    """One step from the same weights and batch on the CPU and on the GPU, fp32, agrees within a tolerance."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return None
    from introvae.objectives import make_objective
    from introvae.step import TrainStep, make_optimizers

    cfg = tiny(quick, margin=20.0)
    torch.manual_seed(0)
    cpu = IntroVAE(cfg.model).train()
    gpu = IntroVAE(cfg.model).to(dev).train()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.rand(8, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32 for the comparison
    out_logs = {}
    for name, model, batch in (("cpu", cpu, x), ("gpu", gpu, x.to(dev))):
        torch.manual_seed(1)  # the same noise draws on both
        opts = make_optimizers(model, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        step = TrainStep(model, opts, guard=False)
        noise = torch.randn(4096)  # drawn on the host, identical for both devices

        def fixed(shape, device=batch.device, _n=noise):
            k = int(torch.tensor(shape).prod())
            return _n[:k].reshape(shape).to(device)

        step._noise = fixed
        out_logs[name] = {k: float(v) for k, v in step(make_objective(cfg, margin=20.0), batch).items()}
    rel = max(abs(out_logs["cpu"][k] - out_logs["gpu"][k]) / max(1e-6, abs(out_logs["cpu"][k]))
              for k in out_logs["cpu"] if k.startswith(("loss_", "kl_")))
    wdiff = max(float((a - b.cpu()).abs().max()) for a, b in zip(cpu.state_dict().values(),
                                                                  gpu.state_dict().values()))
    assert rel < 1e-3 and wdiff < 1e-3, (rel, wdiff)
    return f"losses within {rel:.1e} (relative), weights within {wdiff:.1e} after one step (tolerance 1e-3)"


def check_1024(out: Path, device: str, quick: bool) -> str | None:
    """celebahq1024 at batch 8 fits one GPU, with and without activation checkpointing: peak memory of a step."""
    dev = resolve_device(device)
    if dev.type != "cuda" or quick:
        return None
    from introvae.objectives import make_objective
    from introvae.precision import make_precision
    from introvae.step import TrainStep, make_optimizers

    cfg = get_preset("celebahq1024")
    peaks = {}
    for ckpt in (False, True):
        torch.cuda.empty_cache()
        model = IntroVAE(cfg.model).to(dev).checkpoint_activations(ckpt).to(memory_format=torch.channels_last)
        step = TrainStep(model, make_optimizers(model, lr=2e-4, betas=(0.9, 0.999)),
                         precision=make_precision("bf16", dev))
        x = torch.rand(8, 3, 1024, 1024, device=dev).contiguous(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(2):
            step(make_objective(cfg, margin=cfg.margin), x)
        synchronize(dev)
        peaks[ckpt] = torch.cuda.max_memory_allocated(dev) / 2**30
        del model, step, x
    return f"batch 8 in bf16: peak {peaks[False]:.1f} GiB, {peaks[True]:.1f} GiB with --checkpoint-activations"


def check_speed_256(out: Path, device: str, quick: bool) -> str | None:
    """A celebahq256 step at the preset's batch in bf16: img/s and the share of the bf16 matmul peak, in one run."""
    dev = resolve_device(device)
    if dev.type != "cuda" or quick:
        return None
    from torch.utils.flop_counter import FlopCounterMode

    from introvae.objectives import make_objective
    from introvae.precision import make_precision
    from introvae.step import TrainStep, make_optimizers

    cfg = get_preset("celebahq256")
    model = IntroVAE(cfg.model).to(dev).to(memory_format=torch.channels_last)
    step = TrainStep(model, make_optimizers(model, lr=2e-4, betas=(0.9, 0.999)), precision=make_precision("bf16", dev))
    x = torch.rand(cfg.batch_size, 3, 256, 256, device=dev).contiguous(memory_format=torch.channels_last)
    objective = make_objective(cfg, margin=cfg.margin)
    with FlopCounterMode(display=False) as fc:
        step(objective, x)
    for _ in range(3):
        step(objective, x)
    synchronize(dev)
    t0, n = time.perf_counter(), 10
    for _ in range(n):
        step(objective, x)
    synchronize(dev)
    img_s = n * cfg.batch_size / (time.perf_counter() - t0)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(5):
        synchronize(dev)
        t1 = time.perf_counter()
        a @ a
        synchronize(dev)
        best = min(best, time.perf_counter() - t1)
    peak = 2 * 8192 ** 3 / best
    achieved = fc.get_total_flops() / cfg.batch_size * img_s
    return (f"{img_s:.0f} img/s at batch {cfg.batch_size}, {achieved / 1e12:.1f} TFLOP/s = "
            f"{100 * achieved / peak:.0f} % of the bf16 matmul peak measured here ({peak / 1e12:.0f} TFLOP/s)")


CHECKS = [
    ("train fp32 (channels-last, checkpointed activations, EMA, FID)", lambda o, d, q: check_train(o, d, q, "fp32")),
    ("train bf16 (same)", lambda o, d, q: check_train(o, d, q, "bf16")),
    ("train fp16 + GradScaler (same)", lambda o, d, q: check_train(o, d, q, "fp16")),
    ("Soft-IntroVAE and the VAE baseline train (bf16)", check_objectives),
    ("torch.compile", check_compile),
    ("resume on the device, extended", check_resume),
    ("2D density run killed and resumed on the device", check_toy2d_resume),
    ("sample to files in chunks", check_sample_files),
    ("sample the 256 px network in chunks", check_sample_256),
    ("evaluate", check_evaluate),
    ("calibrate", check_calibrate),
    ("demo", check_demo),
    ("2 processes over NCCL", check_nccl),
    ("no host synchronisation inside a step", check_host_syncs),
    ("CPU/GPU parity of one fp32 step", check_parity),
    ("celebahq1024 at batch 8 fits (bf16)", check_1024),
    ("celebahq256 speed against the bf16 peak", check_speed_256),
]
SKIP_REASON = {"2 processes over NCCL": "needs two CUDA devices"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="small sizes (the CPU part that CI runs)")
    p.add_argument("--out", help="working directory (default: a temporary one)")
    p.add_argument("--require", nargs="*", default=[], choices=["nccl", "gpu"],
                   help="turn these skips into failures: nccl (the two-GPU check), gpu (every GPU-only check)")
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
                status = "SKIP" if detail is None else "PASS"
                detail = detail or SKIP_REASON.get(title, "needs a CUDA device (and no --quick)")
                required = ("gpu" in args.require) or ("nccl" in args.require and "NCCL" in title)
                if status == "SKIP" and required:
                    status, detail = "FAIL", f"required but skipped: {detail}"
            except Exception as e:  # noqa: BLE001 - every failure goes into the table
                status, detail = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                traceback.print_exc()
            results.append((title, status, time.perf_counter() - t0, detail))
            print(f"{status:4s} {title}: {detail}", flush=True)
    print("\n| check | result | seconds | detail |\n|---|---|---|---|")
    for title, status, seconds, detail in results:
        print(f"| {title} | {status} | {seconds:.1f} | {detail} |")
    count = {k: sum(s == k for _, s, _, _ in results) for k in ("PASS", "SKIP", "FAIL")}
    print(f"\n{count['PASS']} passed, {count['FAIL']} failed, {count['SKIP']} skipped")  # a skip is never a pass
    return 1 if count["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
