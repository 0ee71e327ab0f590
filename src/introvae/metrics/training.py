"""Evaluation during training (``--eval-every``): FID of the current generator, into ``metrics.jsonl``.

The same metric, context and protocol as ``introvae evaluate`` (the official test split where the data has
one, fp32 features), with ``eval_samples`` images on each side. With fewer than the default 10,000 an FID
over training is comparable only with itself (it depends on the number of images).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import TrainConfig
from ..data import ImageSet
from .context import EvalSettings, MetricContext
from .store import append_metrics


class TrainingEvaluator:
    def __init__(self, run_dir: Path, data: ImageSet, config: TrainConfig, device: torch.device, *, features=None):
        self.run_dir, self.data, self.config, self.device = Path(run_dir), data, config, device
        self.features = features  # None: the Inception network of FID
        self.settings = EvalSettings(num_samples=config.eval_samples, ref_images=config.eval_samples,
                                     seed=config.seed, batch_size=100)
        self.reference_features = None

    def measure(self, step: int, model, sampler) -> float:
        """FID at ``step`` of ``sampler``'s samples (in eval mode), appended to metrics.jsonl."""
        from . import measure

        cfg = self.config
        was_training = model.training
        model.eval()
        try:
            ctx = MetricContext(data=self.data, data_id=cfg.data or self.data.name, image_size=cfg.model.image_size,
                                in_channels=cfg.model.in_channels, device=self.device, settings=self.settings,
                                model=sampler, features=self.features, show_progress=False)
            if self.reference_features is not None:  # the same real images every time
                ctx.reference_features = self.reference_features
            result = measure(["fid"], ctx)
            self.reference_features = ctx.reference_features
        finally:
            model.train(was_training)
        append_metrics(self.run_dir, {"step": step, "during_training": True, "metrics": result,
                                      "protocol": ctx.protocol})
        ctx.finish()
        return result["fid"]["value"]
