"""`introvae evaluate`: FID, MS-SSIM diversity, reconstruction quality and nearest neighbours."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .data import ImageSet, load, to_float, to_uint8
from .grids import save_grid
from .metrics import fid as fidlib
from .metrics.msssim import ms_ssim_settings, sample_diversity
from .metrics.neighbours import nearest_feature, nearest_pixel
from .metrics.reconstruction import reconstruction_metrics


@dataclass(frozen=True)
class EvalSettings:
    num_samples: int = 10_000  # generated images for FID
    pairs: int = 10_000  # random pairs for MS-SSIM
    ref_split: str = "train"  # real images FID compares with
    ref_images: int = 10_000  # at most this many of them (a fixed subset)
    neighbours: int = 8  # samples shown with their nearest training images
    batch_size: int = 100
    seed: int = 0
    ema: bool = True  # a run trained with --ema is scored with its averaged generator


def reference_images(data: ImageSet, split: str, limit: int) -> torch.Tensor:
    """A fixed subset (the same every time) of the ``split`` images, uint8."""
    images = data.train if split == "train" else data.test
    if len(images) == 0:
        raise fidlib.MetricError(f"the {split} split of {data.name} is empty")
    if len(images) <= limit:
        return images
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:limit]
    return images[idx.sort().values]


def image_features(images: torch.Tensor, features, *, batch_size: int = 100, desc: str = "features",
                   show_progress: bool = True) -> torch.Tensor:
    """Feature vectors (float32) of uint8 images (N, C, H, W), computed ``batch_size`` at a time."""
    batches = (to_float(images[k:k + batch_size]) for k in range(0, len(images), batch_size))
    return fidlib.inception_features(batches, features, total=len(images), desc=desc,
                                     show_progress=show_progress).float()


def reference_features(data: ImageSet, data_id: str, split: str, limit: int, image_size: int, in_channels: int,
                       features, *, batch_size: int = 100, show_progress: bool = True) -> tuple:
    """Inception features of the reference images, cached on disk under a key of everything they depend on."""
    ref = reference_images(data, split, limit)
    key = fidlib.stats_key(data=data_id, split=split, n=len(ref), image_size=image_size, in_channels=in_channels)
    path = fidlib.cache_dir() / f"features-{key}.pt"
    if path.is_file():
        return ref, torch.load(path, weights_only=True)
    f = image_features(ref, features, batch_size=batch_size, desc=f"real {split} features",
                       show_progress=show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(f, tmp)
    tmp.replace(path)
    return ref, f


@torch.no_grad()
def generate(model, n: int, *, seed: int, batch_size: int) -> torch.Tensor:
    """``n`` samples from the generator in eval mode, as uint8 (N, C, H, W)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - k), model.config.latent_dim, generator=g)
        out.append(to_uint8(model.sample(len(z), z=z).cpu()))
    return torch.cat(out)


def evaluate_model(source: str | Path, settings: EvalSettings = EvalSettings(), *, data: str | None = None,
                   out: str | Path | None = None, show_progress: bool = True, features=None) -> dict:
    """Evaluate a run directory, checkpoint or exported model; writes ``metrics.json`` and
    ``nearest_neighbours.png`` into ``out`` (default: the run or model directory)."""
    from .trainer import load_model

    t0 = time.perf_counter()
    model = load_model(source, ema=settings.ema)
    cfg = model.config
    data_id = data or cfg.data
    images = load(data_id, image_size=cfg.image_size, in_channels=cfg.in_channels,
                  holdout_fraction=cfg.holdout_fraction, show_progress=show_progress)
    features = features or fidlib.load_inception()
    ref, ref_f = reference_features(images, data_id, settings.ref_split, settings.ref_images, cfg.image_size,
                                    cfg.in_channels, features, batch_size=settings.batch_size,
                                    show_progress=show_progress)
    samples = generate(model, settings.num_samples, seed=settings.seed, batch_size=settings.batch_size)
    sample_f = image_features(samples, features, batch_size=settings.batch_size, desc="sample features",
                              show_progress=show_progress)
    fid = fidlib.fid_from_features(sample_f, ref_f)
    kernel, scales = ms_ssim_settings(cfg.image_size)
    diversity = sample_diversity(to_float(samples), pairs=settings.pairs, seed=settings.seed)
    real_diversity = sample_diversity(to_float(ref), pairs=settings.pairs, seed=settings.seed)
    held_out = to_float(images.test if len(images.test) else images.train)
    rec_mean = reconstruction_metrics(model, held_out)
    rec_sampled = reconstruction_metrics(model, held_out, sample_z=True, seed=settings.seed)

    src = Path(source)
    # Default: the run directory (also for a file inside its checkpoints/), else beside the file.
    out_dir = Path(out) if out else (src if src.is_dir() else
                                     src.parent.parent if src.parent.name == "checkpoints" else src.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = min(settings.neighbours, len(samples))
    nn_grid = None
    if k:
        s = to_float(samples[:k])
        pix = nearest_pixel(s, to_float(ref))
        feat = nearest_feature(sample_f[:k], ref_f)
        nn_grid = save_grid(torch.cat([s, to_float(ref[pix]), to_float(ref[feat])]),
                            out_dir / "nearest_neighbours.png", k)
    result = {
        "fid": {"value": fid, "samples": len(samples), "reference": f"{data_id}:{settings.ref_split}",
                "reference_images": len(ref)},
        "ms_ssim": {"value": diversity, "pairs": settings.pairs, "real_data_value": real_diversity,
                    "window": kernel, "scales": scales},
        "reconstruction": {"posterior_mean": rec_mean, "sampled_z": rec_sampled, "images": len(held_out),
                           "split": "held-out" if len(images.test) else "train"},
        "nearest_neighbours": str(nn_grid) if nn_grid else None,
        "data": data_id, "resolution": cfg.image_size, "in_channels": cfg.in_channels, "seed": settings.seed,
        "model": str(source), "generator": model.generator_source, "objective": cfg.objective, "version": __version__,
        "seconds": round(time.perf_counter() - t0, 1), "machine": platform.machine(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    result["metrics_file"] = str(out_dir / "metrics.json")
    return result


def evaluate_folder(folder: str | Path, *, data: str, image_size: int, in_channels: int,
                    settings: EvalSettings = EvalSettings(), out: str | Path | None = None,
                    show_progress: bool = True, features=None) -> dict:
    """FID and MS-SSIM of a folder of images (from any program) against a data set."""
    imgs = load(str(folder), image_size=image_size, in_channels=in_channels, holdout_fraction=0.0,
                show_progress=show_progress).train
    images = load(data, image_size=image_size, in_channels=in_channels, show_progress=show_progress)
    features = features or fidlib.load_inception()
    ref, ref_f = reference_features(images, data, settings.ref_split, settings.ref_images, image_size, in_channels,
                                    features, batch_size=settings.batch_size, show_progress=show_progress)
    f = image_features(imgs, features, batch_size=settings.batch_size, desc="image features",
                       show_progress=show_progress)
    kernel, scales = ms_ssim_settings(image_size)
    result = {
        "fid": {"value": fidlib.fid_from_features(f, ref_f), "samples": len(imgs),
                "reference": f"{data}:{settings.ref_split}", "reference_images": len(ref)},
        "ms_ssim": {"value": sample_diversity(to_float(imgs), pairs=settings.pairs, seed=settings.seed),
                    "pairs": settings.pairs, "window": kernel, "scales": scales},
        "images": str(folder), "resolution": image_size, "in_channels": in_channels, "version": __version__,
    }
    out_dir = Path(out) if out else Path(folder)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    result["metrics_file"] = str(out_dir / "metrics.json")
    return result


def format_table(result: dict) -> str:
    rows = [("FID", f"{result['fid']['value']:.2f}",
             f"{result['fid']['samples']} images vs {result['fid']['reference_images']} of {result['fid']['reference']}")]
    ms = result["ms_ssim"]
    extra = f", real data {ms['real_data_value']:.4f}" if "real_data_value" in ms else ""
    rows.append(("MS-SSIM", f"{ms['value']:.4f}",
                 f"{ms['pairs']} pairs, window {ms['window']}, {ms['scales']} scales (lower = more diverse{extra})"))
    if "reconstruction" in result:
        r = result["reconstruction"]
        for name, key in (("posterior mean", "posterior_mean"), ("sampled z", "sampled_z")):
            m = r[key]
            rows.append((f"recon ({name})", f"PSNR {m['psnr']:.2f} dB",
                         f"MSE {m['mse']:.5f}, SSIM {m['ssim']:.4f} on {r['images']} {r['split']} images"))
    w = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{w}}  {b:>16}  {c}" for a, b, c in rows)

