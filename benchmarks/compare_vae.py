"""IntroVAE against a plain VAE (same networks, same steps), scored with `introvae evaluate`.

    python benchmarks/compare_vae.py --preset fashion-mnist --steps 1000 --num-samples 1000 \
        --ref-images 1000 --pairs 1000 --out bench-runs

Trains both objectives from the same seed, evaluates both (FID, precision, recall, density,
coverage, MS-SSIM, held-out reconstruction) with the generator's BatchNorm in eval mode, scores
FID and precision/recall again under the other BatchNorm protocols given (``--protocols
eval,train,recalibrate``, on ``--protocol-samples`` images), adds two real-data references (FID
of two disjoint halves of the training split, and of the test split against the training split,
each with as many images as the samples), prints a markdown table, and draws both objectives'
samples from the same z. FID grows as the number of images shrinks: compare only numbers taken
with the same counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from introvae import checkpoint, get_preset
from introvae.data import load
from introvae.devices import resolve_device
from introvae.evaluate import evaluate_model
from introvae.grids import save_grid
from introvae.metrics import EvalSettings, MetricContext
from introvae.metrics import fid as fidlib
from introvae.runstate import load_model
from introvae.trainer import Trainer, resume


def real_references(cfg, n: int, device) -> dict[str, float]:
    m = cfg.model
    images = load(cfg.data, image_size=m.image_size, in_channels=m.in_channels, holdout_fraction=cfg.holdout_fraction)

    def context(split: str, count: int) -> MetricContext:
        return MetricContext(data=images, data_id=cfg.data, image_size=m.image_size, in_channels=m.in_channels,
                             device=device, settings=EvalSettings(ref_split=split, ref_images=count))

    train = context("train", 2 * n)
    half_a, half_b = train.reference[:n], train.reference[n:2 * n]
    fa, fb = train.features_of(half_a, desc="train half A"), train.features_of(half_b, desc="train half B")
    out = {"train half A vs train half B": fidlib.fid_from_features(fa, fb)}
    if len(images.test) >= n:
        test = context("test", n)
        out["test vs train half A"] = fidlib.fid_from_features(test.features_of(test.reference, desc="test"), fa)
    return out


def side_by_side(runs: dict[str, Path], path: Path, device, n: int = 16) -> Path:
    """Samples of every objective from the same z: one row each, in the order of ``runs``."""
    models = [load_model(run, device=device) for run in runs.values()]
    z = models[0].latents(n, seed=0)
    with torch.no_grad():
        return save_grid(torch.cat([m.sample(z=z).cpu() for m in models]), path, nrow=n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--vae-steps", type=int, default=200, help="IntroVAE's VAE warm-up")
    p.add_argument("--num-samples", type=int, default=10_000)
    p.add_argument("--ref-images", type=int, default=10_000)
    p.add_argument("--pairs", type=int, default=10_000)
    p.add_argument("--out", default="bench-runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--protocols", default="eval",
                   help="generator BatchNorm protocols, comma-separated (eval, train, recalibrate); eval is always scored")
    p.add_argument("--protocol-samples", type=int, default=None,
                   help="samples for the protocols other than eval (default: --num-samples)")
    p.add_argument("--encoder-stats", default="real", choices=("running", "real"),
                   help="the encoder's BatchNorm statistics for reconstruction (see `introvae evaluate --help`)")
    p.add_argument("--no-references", action="store_true",
                   help="skip the real-data reference FIDs (three more feature passes of --num-samples images)")
    args = p.parse_args()

    base = get_preset(args.preset).replace(steps=args.steps, image_every=max(1, args.steps // 2), device=args.device)
    device = resolve_device(args.device)
    settings = EvalSettings(num_samples=args.num_samples, pairs=args.pairs, ref_images=args.ref_images,
                            encoder_stats=args.encoder_stats)
    protocols = [p for p in args.protocols.split(",") if p and p != "eval"]
    rows, runs = {}, {}
    for objective in ("introvae", "vae"):
        cfg = base.replace(objective=objective, vae_steps=args.vae_steps if objective == "introvae" else 0)
        run = runs[objective] = Path(args.out) / f"{args.preset}-{objective}-{args.steps}"
        # A finished run is reused, an unfinished one continued.
        trainer = resume(run) if checkpoint.latest(run) else Trainer(cfg, run)
        trainer.train()
        rows[(objective, "eval")] = evaluate_model(run, settings, device=device)["metrics"]
        for protocol in protocols:
            other = dataclasses.replace(settings, bn_protocol=protocol,
                                        num_samples=args.protocol_samples or args.num_samples)
            rows[(objective, protocol)] = evaluate_model(run, other, device=device,
                                                         metrics=("fid", "precision_recall"))["metrics"]
    refs = {} if args.no_references else real_references(base, args.num_samples, device)
    table = ["| objective | steps | generator BN | samples | FID | precision | recall | density | coverage "
             "| MS-SSIM (real data) | PSNR held-out (dB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, protocol), r in rows.items():
        pr = r["precision_recall"]
        ms = f"{r['ms_ssim']['value']:.4f} ({r['ms_ssim']['real_data_value']:.4f})" if "ms_ssim" in r else "-"
        psnr = f"{r['reconstruction']['posterior_mean']['psnr']:.2f}" if "reconstruction" in r else "-"
        table.append(f"| {name} | {args.steps} | {protocol} | {r['fid']['samples']} | {r['fid']['value']:.1f} | "
                     f"{pr['precision']:.3f} | {pr['recall']:.3f} | {pr['density']:.3f} | {pr['coverage']:.3f} | "
                     f"{ms} | {psnr} |")
    for name, v in refs.items():
        table.append(f"| real: {name} | - | - | {args.num_samples} | {v:.1f} | - | - | - | - | - | - |")
    print(f"\nFID: {args.num_samples} images vs {args.ref_images} training images; MS-SSIM: {args.pairs} pairs\n")
    print("\n".join(table))
    picture = side_by_side(runs, Path(args.out) / f"{args.preset}-{args.steps}-samples.png", device)
    print(f"samples from the same z (IntroVAE above, VAE below): {picture}")
    (Path(args.out) / f"{args.preset}-{args.steps}.json").write_text(
        json.dumps({"rows": [{"objective": o, "bn_protocol": p, **r} for (o, p), r in rows.items()],
                    "references": refs, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
