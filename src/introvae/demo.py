"""`introvae demo`: a few minutes of training on the built-in faces, then the paper's pictures."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from .data import to_float
from .grids import interleave_rows, save_grid
from .model import describe
from .presets import get_preset
from .trainer import Trainer

DEMO_STEPS = 800  # under five minutes on a 2-core CPU without AVX-512 (see README)
DEMO_VAE_STEPS = 200


def run_demo(out: Path, *, steps: int | None = None, device: str = "auto", show_progress: bool = True) -> dict[str, Path]:
    """Train the ``faces`` preset into ``out/run`` and write samples, reconstructions of held-out faces,
    latent interpolations and the KL plot into ``out``. Returns the written pictures by name."""
    steps = steps or DEMO_STEPS
    cfg = get_preset("faces").replace(steps=steps, epochs=None, vae_steps=min(DEMO_VAE_STEPS, steps // 4),
                                      image_every=max(1, steps // 4), device=device)
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always starts afresh
    trainer = Trainer(cfg, run_dir, show_progress=show_progress)
    print(f"demo: training IntroVAE ({describe(cfg.model)}) on the {len(trainer.data.train)} built-in faces "
          f"for {steps} steps (the first {trainer.run.warmup_steps} as a plain VAE) on {trainer.device}")
    t0 = time.perf_counter()
    trainer.train()
    minutes = (time.perf_counter() - t0) / 60
    pictures = write_pictures(trainer, out)
    print(f"demo: trained in {minutes:.1f} min. Pictures:")
    for name, path in pictures.items():
        print(f"  {name:16s} {path}")
    print(f"  run directory    {run_dir}  (checkpoints, stats.jsonl, grids over time)")
    return pictures


@torch.no_grad()
def write_pictures(trainer: Trainer, out: Path) -> dict[str, Path]:
    """Samples, held-out reconstructions, interpolations (Fig. 6) and the KL plot (Fig. 5) of a trained run."""
    model, n = trainer.run.model.eval(), trainer.config.grid_size
    held_out = to_float(trainer.data.test if len(trainer.data.test) >= 2 else trainer.data.train)
    held_out = held_out.to(trainer.device)
    real = held_out[:n]
    strips = [model.interpolate(held_out[2 * k], held_out[2 * k + 1], n) for k in range(min(4, len(held_out) // 2))]
    out.mkdir(parents=True, exist_ok=True)
    pictures = {
        "samples": save_grid(trainer.run.generator_model.sample(n * n, seed=0), out / "samples.png", n),
        "reconstructions": save_grid(interleave_rows(real, model.reconstruct(real), n), out / "reconstructions.png", n),
        "interpolation": save_grid(torch.cat(strips), out / "interpolation.png", n),
    }
    pictures["kl_plot"] = Path(shutil.copy(trainer.pictures.plot(warmup_steps=trainer.run.warmup_steps),
                                           out / "kl.png"))
    return pictures
