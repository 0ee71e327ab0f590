"""Experiment. Its results: docs/history.md (IntroVAE against the VAE at one and five epochs, 0.3's protocol).

IntroVAE against a plain VAE (same networks, same steps), scored with `introvae evaluate`.

    python experiments/compare_vae.py --preset fashion-mnist --steps 1000 --num-samples 1000 \
        --ref-images 1000 --pairs 1000 --out bench-runs
    python experiments/compare_vae.py --steps 1875,9375 --train-only     # 1 and 5 epochs, training only

Several step counts (``--steps 1875,9375``) train each objective once: the run of each count is a copy of
the previous count's run, extended (a resumed run ends with the weights of an uninterrupted one), so every
count is scored on the same trajectory. ``--train-only`` trains (or finishes) the runs and scores nothing;
a later call without it reuses them.

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
import shutil
from pathlib import Path

import torch

from introvae import checkpoint, get_preset
from introvae.data import load
from introvae.devices import resolve_device
from introvae.evaluate import evaluate_model
from introvae.grids import save_grid
from introvae.metrics import MODEL_METRICS, EvalSettings, MetricContext
from introvae.metrics import fid as fidlib
from introvae.metrics.store import read_metrics
from introvae.runs import load_model
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


def train_stage(cfg, run: Path, steps: int, previous: Path | None) -> Path:
    """``run`` trained to ``steps``: reused when finished, continued when stopped, else started as a copy of
    ``previous`` (the same objective's run of fewer steps) extended to ``steps``, or from scratch."""
    if checkpoint.latest(run):
        trainer = resume(run)
    elif previous is not None:
        shutil.copytree(previous, run)
        trainer = resume(run, {"steps": steps})
    else:
        trainer = Trainer(cfg.replace(steps=steps), run)
    trainer.train()
    if trainer.step < steps:  # stopped (Ctrl-C, SIGTERM): the next stage must not extend an unfinished run
        raise SystemExit(f"{run} stopped at step {trainer.step} of {steps}; run the same command again to go on")
    return run


def scored(run: Path, step: int, settings: EvalSettings, device, metrics=MODEL_METRICS) -> dict:
    """The metrics of ``run`` at ``step`` under ``settings``: an evaluation already in its metrics.jsonl with the
    same settings (e.g. run by `introvae evaluate` in another process), or a new one."""
    # config.json is rewritten at every (re)start, so its ema field says whether the checkpoints carry an
    # averaged generator, without loading a checkpoint for it
    has_ema = bool(json.loads((run / "config.json").read_text()).get("ema"))
    generator = "ema" if settings.ema and has_ema else "trained"  # which generator the evaluation would use
    for row in reversed(read_metrics(run)):
        m, fid = row.get("metrics", {}), row.get("metrics", {}).get("fid", {})
        same = (row.get("step") == step and row.get("generator", "trained") == generator
                and row.get("bn_protocol") == settings.bn_protocol
                and row.get("encoder_stats") == settings.encoder_stats and row.get("seed") == settings.seed
                and fid.get("samples") == settings.num_samples and fid.get("reference_images") == settings.ref_images
                and fid.get("feature_precision", "fp32") == settings.feature_precision and set(metrics) <= set(m)
                and ("ms_ssim" not in metrics or m["ms_ssim"].get("pairs") == settings.pairs))
        if same:
            print(f"{run.name}: reusing the evaluation of step {step} in its metrics.jsonl")
            return m
    return evaluate_model(run, settings, device=device, metrics=metrics)["metrics"]


def side_by_side(runs: dict, path: Path, device, n: int = 16) -> Path:
    """Samples of every objective from the same z: one row each, in the order of ``runs``."""
    models = [load_model(run, device=device) for run in runs.values()]
    z = models[0].latents(n, seed=0)
    with torch.no_grad():
        return save_grid(torch.cat([m.sample(z=z).cpu() for m in models]), path, nrow=n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--steps", default="1000", help="training steps; several, comma-separated, extend one run")
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
    p.add_argument("--train-only", action="store_true", help="train (or finish) the runs, score nothing")
    p.add_argument("--objectives", default="introvae,vae",
                   help="which objectives, comma-separated (e.g. one per process, to train them side by side)")
    p.add_argument("--feature-precision", default="fp32", choices=("fp32", "bf16"),
                   help="the Inception network's precision (see `introvae evaluate --help`)")
    args = p.parse_args()
    stages = sorted(int(s) for s in args.steps.split(","))

    base = get_preset(args.preset).replace(image_every=max(1, stages[0] // 2), device=args.device)
    device = resolve_device(args.device)
    settings = EvalSettings(num_samples=args.num_samples, pairs=args.pairs, ref_images=args.ref_images,
                            encoder_stats=args.encoder_stats, feature_precision=args.feature_precision)
    protocols = [p for p in args.protocols.split(",") if p and p != "eval"]
    rows, runs = {}, {}
    for objective in args.objectives.split(","):
        cfg = base.replace(objective=objective, vae_steps=args.vae_steps if objective == "introvae" else 0)
        previous = None
        for steps in stages:
            run = runs[(objective, steps)] = train_stage(cfg, Path(args.out) / f"{args.preset}-{objective}-{steps}",
                                                         steps, previous)
            previous = run
    if args.train_only:
        return
    for (objective, steps), run in runs.items():
        rows[(objective, steps, "eval")] = scored(run, steps, settings, device)
        for protocol in protocols:
            other = dataclasses.replace(settings, bn_protocol=protocol,
                                        num_samples=args.protocol_samples or args.num_samples)
            rows[(objective, steps, protocol)] = scored(run, steps, other, device, metrics=("fid", "precision_recall"))
    refs = {} if args.no_references else real_references(base, args.num_samples, device)
    table = ["| objective | steps | generator BN | samples | FID | precision | recall | density | coverage "
             "| MS-SSIM (real data) | PSNR held-out (dB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, steps, protocol), r in rows.items():
        pr = r["precision_recall"]
        ms = f"{r['ms_ssim']['value']:.4f} ({r['ms_ssim']['real_data_value']:.4f})" if "ms_ssim" in r else "-"
        psnr = f"{r['reconstruction']['posterior_mean']['psnr']:.2f}" if "reconstruction" in r else "-"
        table.append(f"| {name} | {steps} | {protocol} | {r['fid']['samples']} | {r['fid']['value']:.1f} | "
                     f"{pr['precision']:.3f} | {pr['recall']:.3f} | {pr['density']:.3f} | {pr['coverage']:.3f} | "
                     f"{ms} | {psnr} |")
    for name, v in refs.items():
        table.append(f"| real: {name} | - | - | {args.num_samples} | {v:.1f} | - | - | - | - | - | - |")
    print(f"\nFID: {args.num_samples} images vs {args.ref_images} training images; MS-SSIM: {args.pairs} pairs\n")
    print("\n".join(table))
    name = f"{args.preset}-{'-'.join(map(str, stages))}"
    picture = side_by_side(runs, Path(args.out) / f"{name}-samples.png", device)
    print(f"samples from the same z (one row per run: {', '.join(f'{o} {n}' for o, n in runs)}): {picture}")
    (Path(args.out) / f"{name}.json").write_text(
        json.dumps({"rows": [{"objective": o, "steps": n, "bn_protocol": p, **r} for (o, n, p), r in rows.items()],
                    "references": refs, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
