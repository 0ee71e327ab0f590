"""Pictures of a run as it trains: sample and reconstruction grids of fixed inputs, and the KL plot (Fig. 5).

The fixed inputs (held-out images and latent codes) are made once, on the training device, so that the
grids of different steps show the same faces and the same z.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainConfig
from .data import ImageSet, to_float
from .grids import interleave_rows, save_grid
from .plots import plot_kl
from .stats import read_stats


class TrainingPictures:
    def __init__(self, run_dir: Path, data: ImageSet, config: TrainConfig, device: torch.device):
        self.run_dir, self.config, self.data_name = Path(run_dir), config, data.name
        n = config.grid_size
        ref = data.test if len(data.test) >= n else data.train
        self.fixed_real = to_float(ref[: n * 4]).to(device)
        g = torch.Generator().manual_seed(config.seed + 1)  # drawn on the CPU: the same z on every device
        self.fixed_z = torch.randn(n * n, config.model.latent_dim, generator=g).to(device)

    @torch.no_grad()
    def write(self, step: int, model, sampler, *, warmup_steps: int) -> None:
        """The sample and reconstruction grids of ``step`` (in eval mode), and the KL plot."""
        was_training = model.training
        model.eval()
        try:
            samples = sampler.sample(z=self.fixed_z)
            rec = model.reconstruct(self.fixed_real)
        finally:
            model.train(was_training)
        n = self.config.grid_size
        save_grid(samples, self.run_dir / f"samples-{step:09d}.png", n)
        save_grid(interleave_rows(self.fixed_real, rec, n), self.run_dir / f"reconstructions-{step:09d}.png", n)
        self.plot(warmup_steps=warmup_steps)

    def plot(self, *, warmup_steps: int) -> Path | None:
        rows = read_stats(self.run_dir)
        if not rows:
            return None
        from .metrics.store import read_metrics

        return plot_kl(rows, self.run_dir / "kl.png", margin=self.config.margin if self.config.objective == "introvae" else None,
                       warmup_steps=warmup_steps,
                       title=f"{self.data_name}: encoder KL (Fig. 5)", fids=read_metrics(self.run_dir, "fid", during_training=True))
