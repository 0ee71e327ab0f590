"""Choosing the margin m (Appendix D): train the networks as a plain VAE and read off its KL."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import TrainConfig
from .data import to_float
from .margin import RATIO
from .objectives import kl_divergence, reconstruction_error


@dataclass
class Calibration:
    config: TrainConfig
    steps: int
    kl_train: float  # KL of training images, as the encoder sees them in training (last 10 % of steps)
    kl_train_eval: float  # the same in eval mode (BatchNorm running statistics), on up to EVAL_IMAGES of them
    reconstruction: float  # L_AE per image at the end
    suggested_margin: float
    auto_margin: float  # where --margin auto would start the game after this warm-up (margin.AutoMargin)
    run_dir: Path | None

    def report(self) -> str:
        return (f"plain VAE (alpha = 0, beta = {self.config.beta:g}, z = {self.config.model.latent_dim}) after "
                f"{self.steps} steps:\n"
                f"  KL of training images: {self.kl_train:.1f} nats (training mode), "
                f"{self.kl_train_eval:.1f} (eval mode)\n"
                f"  reconstruction error L_AE: {self.reconstruction:.1f} per image\n"
                f"suggested margin: --margin {self.suggested_margin:g}  (the paper advises a little above the VAE's KL; "
                f"we leave {HEADROOM:g}x because the KL of real images rises once alpha > 0. Check kl.png: "
                f"kl_real should stay below m. A larger --beta needs a larger margin.)\n"
                f"--margin auto (the default) would start the game at m = {self.auto_margin:.1f} after this warm-up "
                f"({HEADROOM:g}x the moving average of kl_real) and follow kl_real from there.")


# Once the introspective terms start, the encoder's KL of *real* images rises above the plain
# VAE's (on the built-in faces: 22.7 nats as a VAE, about 30 under IntroVAE with m = 35), and the
# paper's key to stability is keeping it below m. A margin 10 % above the VAE's KL left every KL
# above m there, so we suggest half as much again (the ratio --margin auto keeps).
HEADROOM = RATIO
EVAL_IMAGES = 4096  # the eval-mode KL is measured on at most this many training images


def suggest_margin(kl: float) -> float:
    """``HEADROOM`` times ``kl``, rounded up to a whole number (to a multiple of 5 above 50)."""
    target = kl * HEADROOM
    step = 5 if target > 50 else 1
    return float(max(1, math.ceil(target / step) * step))


def calibrate(config: TrainConfig, *, out: str | Path | None = None, show_progress: bool = True) -> Calibration:
    """Train ``config``'s networks as a plain VAE and measure the KL it reaches on the training data."""
    from .stats import read_stats
    from .trainer import Trainer

    cfg = config.replace(objective="vae", image_every=10**9, margin="auto")  # auto: to say where it would start
    with tempfile.TemporaryDirectory(prefix="introvae-calibrate-") as tmp:
        run_dir = Path(out) if out else Path(tmp)
        trainer = Trainer(cfg, run_dir, show_progress=show_progress, log=lambda s: None)
        trainer.train()
        rows = read_stats(run_dir)
        tail = rows[-max(1, len(rows) // 10):]
        kl_train = sum(r["kl_real"] for r in tail) / len(tail)
        model, device = trainer.run.model.eval(), trainer.device
        kls, recs = [], []
        with torch.no_grad():
            subset = trainer.data.train[:EVAL_IMAGES]
            for i in range(0, len(subset), 256):
                x = to_float(subset[i:i + 256].to(device))
                mu, logvar = model.encoder(x)
                kls.append(kl_divergence(mu, logvar))
                recs.append(reconstruction_error(model.decode(mu, encoded=True), x, config.model.likelihood))
        return Calibration(config=config, steps=trainer.step, kl_train=kl_train,
                           kl_train_eval=float(torch.cat(kls).mean()),
                           reconstruction=float(torch.cat(recs).mean()),
                           suggested_margin=suggest_margin(kl_train), auto_margin=float(trainer.run.margin.value),
                           run_dir=Path(out) if out else None)
