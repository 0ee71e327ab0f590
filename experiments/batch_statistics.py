"""What the encoder's KL tells real from generated images by: the images, or their batch's statistics?

Algorithm 1 encodes real images, reconstructions and samples in separate passes. With BatchNorm in the encoder
(the authors' networks) each pass is normalised by its own batch's statistics in training, so a batch of generated
images can look unlike a batch of real ones through its statistics alone. For each checkpoint this prints the
encoder's mean KL (Eq. 9) of real training images and of samples, normalised three ways:

* ``own batch``: training mode, batches of ``--batch`` images of one kind (what the game sees by default);
* ``running``: eval mode, every image by the running statistics (the real images' with ``encoder_stats real``);
* ``mixed``: training mode, batches half real and half generated.

Samples come from the generator as training runs it (the trained weights, training-mode BatchNorm over batches of
``--batch`` prior draws) and, for comparison, as ``introvae sample`` draws them (the averaged generator if the run
keeps one, eval mode). Nothing is written to the checkpoints. docs/defaults-fashion-mnist.md has its results::

    python experiments/batch_statistics.py RUN/checkpoints/step-000018750.pt RUN/checkpoints/step-000052500.pt
"""

from __future__ import annotations

import argparse
import copy

import torch

from introvae import load_model
from introvae.data import load
from introvae.posterior import kl_divergence


@torch.no_grad()
def kl_in_batches(encoder: torch.nn.Module, x: torch.Tensor, batch: int, *, training: bool) -> torch.Tensor:
    """Each image's KL with the encoder in training mode (batches of ``batch``) or eval mode; on a copy, so that
    no running statistic moves."""
    net = copy.deepcopy(encoder).train(training)
    return torch.cat([kl_divergence(*net(c)) for c in x.split(batch)])


@torch.no_grad()
def training_samples(decoder: torch.nn.Module, z: torch.Tensor, batch: int) -> torch.Tensor:
    """Samples as the game makes them: training-mode BatchNorm over batches of ``batch`` prior draws."""
    net = copy.deepcopy(decoder).train()
    return torch.cat([net(c) for c in z.split(batch)])


def interleave(real: torch.Tensor, fake: torch.Tensor, batch: int) -> torch.Tensor:
    """Batches of ``batch`` images, the first half of each real, the second generated (``batch`` even)."""
    half = batch // 2
    n = min(len(real), len(fake)) // half * half
    r, f = real[:n].reshape(-1, half, *real.shape[1:]), fake[:n].reshape(-1, half, *fake.shape[1:])
    return torch.stack([r, f], 1).reshape(-1, *real.shape[1:])


def measure(checkpoint: str, real: torch.Tensor, *, batch: int, seed: int) -> dict[str, float]:
    trained = load_model(checkpoint, ema=False, device="cpu")
    averaged = load_model(checkpoint, device="cpu")
    z = torch.randn(len(real), trained.config.latent_dim, generator=torch.Generator().manual_seed(seed))
    fake = training_samples(trained.decoder, z, batch)
    drawn = averaged.sample(z=z)
    enc = trained.encoder
    mixed = kl_in_batches(enc, interleave(real, fake, batch), batch, training=True).reshape(-1, 2, batch // 2)
    row = {"step": trained.step}
    for name, x in (("real", real), ("fake", fake), ("sampled", drawn)):
        row[f"{name} own batch"] = kl_in_batches(enc, x, batch, training=True).mean().item()
        row[f"{name} running"] = kl_in_batches(enc, x, batch, training=False).mean().item()
    row["real mixed"], row["fake mixed"] = mixed[:, 0].mean().item(), mixed[:, 1].mean().item()
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoints of one run (its data and image size are read)")
    p.add_argument("-n", type=int, default=1024, help="real images and samples per checkpoint")
    p.add_argument("--batch", type=int, default=16, help="images per training-mode batch (the run's: 16)")
    p.add_argument("--seed", type=int, default=0, help="the prior draws' seed")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.batch < 2 or args.batch % 2:
        p.error("--batch must be even and at least 2 (mixed batches are half real, half generated)")
    torch.set_num_threads(args.threads)
    cfg = load_model(args.checkpoints[0], device="cpu").run_config
    data = load(cfg.data, image_size=cfg.model.image_size, in_channels=cfg.model.in_channels, show_progress=False)
    real = data.train[:args.n].float() / 255
    print(f"mean KL of {len(real)} images, batches of {args.batch}: own batch (training mode) / running statistics "
          "(eval mode) / mixed batches (training mode, half real)")
    print("| step | real | generated (training) | sampled (introvae sample) |")
    print("|---|---|---|---|")
    for c in args.checkpoints:
        r = measure(c, real, batch=args.batch, seed=args.seed)
        print(f"| {r['step']:,} | {r['real own batch']:.1f} / {r['real running']:.1f} / {r['real mixed']:.1f} "
              f"| {r['fake own batch']:.1f} / {r['fake running']:.1f} / {r['fake mixed']:.1f} "
              f"| {r['sampled own batch']:.1f} / {r['sampled running']:.1f} / - |", flush=True)


if __name__ == "__main__":
    main()
