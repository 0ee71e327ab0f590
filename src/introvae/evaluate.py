"""`introvae evaluate`: the metric registry run on a model or on a folder of images, results kept per step."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from . import devices
from .checkpoint import list_checkpoints, step_of
from .config import TrainConfig
from .data import load
from .errors import CheckpointError, UserError
from .metrics import IMAGE_METRICS, MODEL_METRICS, EvalSettings, MetricContext, measure
from .metrics import protocol
from .metrics.batchnorm import encoder_with_stats, generator_with_protocol
from .metrics.store import append_metrics, read_metrics
from .runs import load_model, model_dir, trained_on
from .version import __version__


def evaluate_model(source: str | Path, settings: EvalSettings = EvalSettings(), *, data: str | None = None,
                   out: str | Path | None = None, device: str | torch.device = "auto", show_progress: bool = True,
                   features=None, metrics=MODEL_METRICS) -> dict:
    """Score a run directory, checkpoint or exported model on ``device``. Appends the result (with the
    checkpoint's step) to ``metrics.jsonl`` in ``out`` (default: the run or model directory), beside
    ``nearest_neighbours.png``."""
    t0 = time.perf_counter()
    device = devices.resolve_device(device)
    from . import hub

    src = hub.resolve(source)  # once: a name or hf:// becomes a path here
    loaded = load_model(src, ema=settings.ema, device=device)
    cfg = loaded.config
    run_cfg = loaded.run_config
    data_id = data or trained_on(loaded, src)
    if data_id is None:
        raise UserError(f"evaluate: {src} does not say which data it was trained on; give --data")
    holdout = run_cfg.holdout_fraction if run_cfg else TrainConfig.holdout_fraction  # the run's held-out split
    # lazy: without a decoded copy on disk, only the images a metric uses are decoded
    images = load(data_id, image_size=cfg.image_size, in_channels=cfg.in_channels, holdout_fraction=holdout,
                  show_progress=show_progress, lazy=True)
    s = settings
    model = generator_with_protocol(loaded, s.bn_protocol, samples=s.bn_samples, batch_size=s.batch_size, seed=s.seed)
    real = images.train[:min(s.bn_samples, len(images.train))] if s.encoder_stats == "real" else None
    model = encoder_with_stats(model, s.encoder_stats, real, batch_size=s.batch_size)
    # Default: the run directory (also for a file inside its checkpoints/), else beside the file.
    out_dir = Path(out) if out else model_dir(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = MetricContext(data=images, data_id=data_id, image_size=cfg.image_size, in_channels=cfg.in_channels,
                        device=device, settings=settings, model=model, features=features, out_dir=out_dir,
                        show_progress=show_progress)
    if show_progress and "fid" in metrics and s.num_samples < 10_000:
        print(f"note: FID on {s.num_samples} samples is biased upwards against the usual 10,000 or 50,000: "
              f"compare it only with FIDs of the same count")
    return _record(out_dir, measure(metrics, ctx), ctx, step=loaded.step, data=data_id, resolution=cfg.image_size,
                   in_channels=cfg.in_channels, seed=s.seed, model=str(source), generator=loaded.generator_source,
                   bn_protocol=s.bn_protocol, encoder_stats=s.encoder_stats, batch_size=s.batch_size,
                   settings=dataclasses.asdict(s), device=str(device), seconds=time.perf_counter() - t0)


def evaluate_checkpoints(run: str | Path, settings: EvalSettings = EvalSettings(), *, data: str | None = None,
                         out: str | Path | None = None, device: str | torch.device = "auto",
                         show_progress: bool = True, features=None, log=print, every_steps: int = 0) -> list[dict]:
    """Score every checkpoint of the run directory ``run``, oldest first, as :func:`evaluate_model` scores one,
    and draw ``fid-curve.png`` (FID, precision and recall against the step) in ``out`` (default: the run) after
    each. ``every_steps`` > 0 keeps only the checkpoints at its multiples from it on (one per epoch, say), leaving out
    step 0 and those a stop wrote in between. A checkpoint already scored with the same settings and data in ``out``'s
    ``metrics.jsonl`` is not scored again, so the same call resumes a stopped sweep. Returns one result row per
    checkpoint."""
    from .plots import plot_scores

    run = Path(run)
    paths = list_checkpoints(run)
    if not paths:
        raise UserError(f"evaluate: --every-checkpoint takes a run directory with checkpoints/, got {run}")
    if every_steps < 0:
        raise UserError(f"evaluate: --every-steps: must be >= 1, got {every_steps}")
    if every_steps:
        paths = [p for p in paths if step_of(p) > 0 and step_of(p) % every_steps == 0]  # not the untrained net
        if not paths:
            raise UserError(f"evaluate: no checkpoint of {run} is at a multiple of --every-steps {every_steps}")
    out_dir = Path(out) if out else run
    data_id = data or _run_data(run)
    wanted = dataclasses.asdict(settings)

    def alike(row: dict) -> bool:  # scored as this sweep scores: same settings, same real data
        return (row.get("settings") == wanted and not row.get("during_training")
                and (data_id is None or row.get("data") == data_id))

    done = {r["step"]: r for r in read_metrics(out_dir) if alike(r)}
    todo = [p for p in paths if step_of(p) not in done]
    if show_progress and len(todo) < len(paths):
        log(f"{len(paths) - len(todo)} of {len(paths)} checkpoints already scored alike in "
            f"{out_dir / 'metrics.jsonl'}; scoring the other {len(todo)}")

    def draw() -> None:  # after each new score, so that a long sweep's curve can be watched
        plot_scores(sorted(done.items()), out_dir / "fid-curve.png", title=f"{run.name}: every checkpoint")

    for i, path in enumerate(todo, 1):
        if show_progress:
            log(f"checkpoint {i} of {len(todo)}: {path.name}")
        try:
            row = evaluate_model(path, settings, data=data, out=out_dir, device=device,
                                 show_progress=show_progress, features=features)
        except CheckpointError as e:  # a truncated or corrupt file: the others are still worth scoring
            log(f"warning: skipped {path.name}: {e}")
            continue
        done[row["step"]] = row
        draw()
    if not todo and done:  # nothing new: draw what the rows say (the picture may be missing)
        draw()
    return [done[step_of(p)] for p in paths if step_of(p) in done]


def _run_data(run: Path) -> str | None:
    """The data a run directory trained on, from its config.json (None if it has none)."""
    try:
        return json.loads((run / "config.json").read_text()).get("data")
    except (OSError, ValueError):
        return None


def format_sweep(rows: list[dict]) -> str:
    """One line per checkpoint (step, FID, precision, recall, reconstruction PSNR), the lowest FID marked."""
    fids = [r["metrics"].get("fid", {}).get("value") for r in rows]
    best = min((f for f in fids if f is not None and f == f), default=None)  # f == f: not NaN
    lines = [f"{'step':>10}  {'FID':>8}  {'precision':>9}  {'recall':>6}  {'PSNR (dB)':>9}"]
    for r, fid in zip(rows, fids):
        m = r["metrics"]
        pr = m.get("precision_recall", {})
        psnr = m.get("reconstruction", {}).get("posterior_mean", {}).get("psnr")
        cells = [f"{r['step']:>10}", f"{fid:>8.2f}" if fid is not None else f"{'-':>8}",
                 f"{pr['precision']:>9.4f}" if "precision" in pr else f"{'-':>9}",
                 f"{pr['recall']:>6.4f}" if "recall" in pr else f"{'-':>6}",
                 f"{psnr:>9.2f}" if psnr is not None else f"{'-':>9}"]
        lines.append("  ".join(cells) + ("  <- lowest FID" if fid is not None and fid == best else ""))
    return "\n".join(lines)


def evaluate_folder(folder: str | Path, *, data: str, image_size: int, in_channels: int,
                    settings: EvalSettings = EvalSettings(), out: str | Path | None = None,
                    device: str | torch.device = "auto", show_progress: bool = True, features=None) -> dict:
    """FID and MS-SSIM of a folder of images (from any program) against a data set."""
    t0 = time.perf_counter()
    device = devices.resolve_device(device)
    imgs = load(str(folder), image_size=image_size, in_channels=in_channels, holdout_fraction=0.0,
                show_progress=show_progress).train
    images = load(data, image_size=image_size, in_channels=in_channels, show_progress=show_progress, lazy=True)
    ctx = MetricContext(data=images, data_id=data, image_size=image_size, in_channels=in_channels, device=device,
                        settings=settings, images=imgs[:], features=features, show_progress=show_progress)
    # Not into the user's image folder: a folder of its own in the working directory, unless told.
    out_dir = Path(out) if out else Path(f"evaluate-{Path(folder).resolve().name}")
    return _record(out_dir, measure(IMAGE_METRICS, ctx), ctx, step=None, data=data,
                   resolution=image_size, in_channels=in_channels, seed=settings.seed, images=str(folder),
                   device=str(device), seconds=time.perf_counter() - t0)


def _record(out_dir: Path, results: dict, ctx: MetricContext, **about) -> dict:
    row = {"step": about.pop("step"), "metrics": results, **about, "seconds": round(about["seconds"], 1),
           "version": __version__, "machine": platform.machine()}
    if any(name in results for name in ("fid", "precision_recall")):
        row["protocol"] = ctx.protocol
    row["metrics_file"] = str(append_metrics(out_dir, row))
    ctx.finish()  # recorded: the features kept for a resumed run go
    return row


def format_table(result: dict) -> str:
    m, rows = result["metrics"], []
    if "fid" in m:
        f = m["fid"]
        rows.append(("FID", f"{f['value']:.2f}", f"{f['samples']} images vs {f['reference_images']} of {f['reference']}"
                     + (f", Inception in {f['feature_precision']}" if "feature_precision" in f else "")))
    if "precision_recall" in m:
        pr = m["precision_recall"]
        if "skipped" in pr:
            rows.append(("precision", "-", f"precision and recall skipped: {pr['skipped']}"))
        else:
            rows.append(("precision", f"{pr['precision']:.4f}", f"recall {pr['recall']:.4f}, density "
                         f"{pr['density']:.4f}, coverage {pr['coverage']:.4f} (k = {pr['k']}, Inception features)"))
    if "ms_ssim" in m:
        ms = m["ms_ssim"]
        extra = f", real data {ms['real_data_value']:.4f}" if "real_data_value" in ms else ""
        rows.append(("MS-SSIM", f"{ms['value']:.4f}",
                     f"{ms['pairs']} pairs, window {ms['window']}, {ms['scales']} scales (lower = more diverse{extra})"))
    if "reconstruction" in m:
        r = m["reconstruction"]
        for name, key in (("posterior mean", "posterior_mean"), ("sampled z", "sampled_z")):
            v = r[key]
            rows.append((f"recon ({name})", f"PSNR {v['psnr']:.2f} dB",
                         f"MSE {v['mse']:.5f}, SSIM {v['ssim']:.4f} on {r['images']} {r['split']} images"))
        rows.append(("KL of real images", f"{r['kl_real']:.2f} nats", f"the encoder's, on the {r['split']} images"))
    w = max(len(a) for a, _, _ in rows)
    lines = [f"{a:<{w}}  {b:>16}  {c}" for a, b, c in rows]
    about = f"on {result['device']}" + (f", step {result['step']}" if result.get("step") is not None else "")
    if "bn_protocol" in result:
        about += (f"; generator BatchNorm: {result['bn_protocol']} (batch {result['batch_size']}), encoder "
                  f"statistics: {result['encoder_stats']}")
    if "protocol" in result:
        lines.append(protocol.one_line(result["protocol"]))
    return "\n".join(lines + [about])
