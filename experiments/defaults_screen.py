"""Experiment. Its results: docs/defaults-fashion-mnist.md and docs/defaults-faces.md (the screens behind the CPU presets).

Screen candidate defaults: each variant is the preset with a few fields changed, trained for the same number
of steps from the same seed and scored by FID and precision/recall; prints (and writes) a markdown table.

    OMP_NUM_THREADS=1 python experiments/defaults_screen.py --variants baseline,lr5e-4 --out bench-runs/screen
    OMP_NUM_THREADS=1 python experiments/defaults_screen.py --variants ema,batch16 --out bench-runs/screen  # 2nd core
    python experiments/defaults_screen.py --table-only --out bench-runs/screen --table docs/defaults-fashion-mnist.md

Every variant trains the same number of *images* (``--epochs``), so a smaller batch takes more steps. Runs
and scores are kept in ``--out`` (a finished run is not trained again, a stopped one resumes, a scored one is
not scored again), so the screen can be split over processes and sessions. One seed per variant unless
``--seeds`` says otherwise: differences smaller than the spread between seeds mean nothing (the table shows
the spread where several seeds ran).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from introvae import checkpoint, get_preset
from introvae.data import load
from introvae.metrics import EvalSettings
from introvae.stats import read_stats
from introvae.trainer import Trainer, resume

from compare_vae import scored  # an evaluation already in metrics.jsonl with the same settings, or a new one

# name -> the fields it changes (over the preset and --common); the names say what changes.
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "fixed-m42": {"margin": 42.0},
    "auto": {"margin": "auto"},
    "lr5e-4": {"lr": 5e-4},
    "lr1e-3": {"lr": 1e-3},
    "lr2e-3": {"lr": 2e-3},
    "lr1e-3-beta5": {"lr": 1e-3, "beta": 5.0},
    "ema0.999": {"ema": 0.999},
    "ema0.995": {"ema": 0.995},
    "lr5e-4-ema0.999": {"lr": 5e-4, "ema": 0.999},
    "batch16": {"batch_size": 16},
    "batch64": {"batch_size": 64},
    "batch8": {"batch_size": 8},
    "lr1e-3-batch16": {"lr": 1e-3, "batch_size": 16},
    "lr5e-4-batch16": {"lr": 5e-4, "batch_size": 16},
    "lr1e-3-batch8": {"lr": 1e-3, "batch_size": 8},
    "batch16-beta5": {"batch_size": 16, "beta": 5.0},
    "lr1e-3-batch16-beta5": {"lr": 1e-3, "batch_size": 16, "beta": 5.0},
    "batch16-beta2": {"batch_size": 16, "beta": 2.0},
    "latent32": {"latent_dim": 32},
    "latent64": {"latent_dim": 64},
    "beta5": {"beta": 5.0},
    "beta20": {"beta": 20.0},
    "beta2": {"beta": 2.0},  # Soft-IntroVAE's balance of reconstruction and KL (objectives.vae_beta(1, 1))
    "alpha0.5": {"alpha": 0.5},
    "alpha1": {"alpha": 1.0},
    "no-mirror": {"mirror": False},
    # Against the preset of 6cf8caa (batch 16, lr 1e-3, margin auto; the rows above also apply to it). A run that
    # keeps an EMA, which changes nothing in training, is scored with the live and the averaged generator.
    "ema": {"ema": 0.999},
    "alpha0.5-ema": {"alpha": 0.5, "ema": 0.999},
    "lr2e-3-ema": {"lr": 2e-3, "ema": 0.999},
    "adam0.5-ema": {"adam_beta1": 0.5, "ema": 0.999},
    "vae1000-ema": {"vae_steps": 1000, "ema": 0.999},
    "beta5-ema": {"beta": 5.0, "ema": 0.999},
    "adam0.5": {"adam_beta1": 0.5},
    "fp32": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16", "channels_last": True},
}


def variant_config(base, name: str, common: dict, steps_per_image: float):
    """The preset with ``common`` then the variant's fields changed, trained for ``--epochs`` of images."""
    cfg = base.replace(**{**common, **VARIANTS[name]})  # flat names, model fields included
    return cfg.replace(steps=round(steps_per_image / cfg.batch_size), image_every=10**9)


def train(cfg, run: Path) -> float:
    """Trains ``run`` to the end (reused when finished, resumed when stopped); returns seconds spent here."""
    t0 = time.perf_counter()
    trainer = resume(run) if checkpoint.latest(run) else Trainer(cfg, run)
    trainer.train()
    if trainer.step < cfg.steps:
        raise SystemExit(f"{run} stopped at step {trainer.step} of {cfg.steps}; run the same command again")
    return time.perf_counter() - t0


def last_stats(run: Path) -> dict:
    """The newest row of ``run``'s stats.jsonl that logged losses (it carries rollbacks, lr and margin)."""
    return [s for s in read_stats(run) if "kl_real" in s][-1]


def table(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/screen.json"))]
    for r in rows:  # rows written before this column existed: read it from their run
        if "rollbacks" not in r:
            r["rollbacks"] = last_stats(out / f"{r['variant']}-seed{r['seed']}").get("rollbacks", 0)
    by_variant: dict[str, list[dict]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    lines = ["| variant | changes | seeds | steps | FID | precision | recall | FID, trained generator "
             "| kl_real at end | margin at end | train images/s | rollbacks |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(values, fmt):
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"

    for name, rs in sorted(by_variant.items(), key=lambda kv: statistics.mean(r["fid"] for r in kv[1])):
        changes = ", ".join(f"{k}={v}" for k, v in VARIANTS.get(name, {}).items()) or "(preset)"
        lines.append(f"| {name} | {changes} | {len(rs)} | {rs[0]['steps']} | {cell([r['fid'] for r in rs], '.1f')} "
                     f"| {cell([r['precision'] for r in rs], '.3f')} | {cell([r['recall'] for r in rs], '.3f')} "
                     f"| {cell([r['fid_live'] for r in rs], '.1f') if all('fid_live' in r for r in rs) else '(same)'} "
                     f"| {cell([r['kl_real'] for r in rs], '.1f')} | {cell([r['margin'] for r in rs], '.1f')} "
                     f"| {cell([r['images_per_s'] for r in rs], '.0f')} | {sum(r['rollbacks'] for r in rs)} |")
    about = rows[0]["about"] if rows else {}
    refs = sorted({r.get("reference_images", about.get("ref_images")) for r in rows})  # fewer if the data has fewer
    head = (f"FID of {about.get('num_samples')} samples (eval-mode BatchNorm, EMA generator where kept) against "
            f"{' / '.join(map(str, refs))} training images, Inception in {about.get('feature_precision')}; "
            f"preset {about.get('preset')} with {about.get('common')}; {about.get('epochs')} epoch(s) each; "
            f"sorted by FID. A rollback (the guard: steps with non-finite losses) restarts from the last checkpoint "
            f"at a lower learning rate, so a row with rollbacks did not train with all of the fields it names.")
    return head + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fashion-mnist")
    p.add_argument("--variants", default="baseline", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--common", default='{"margin": "auto", "vae_steps": 200, "precision": "bf16", '
                                       '"channels_last": true}',
                   help="JSON of fields every variant changes (a variant's own fields win)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seeds", default="0")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--ref-images", type=int, default=10_000)
    p.add_argument("--feature-precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--out", default="bench-runs/screen")
    p.add_argument("--table", default=None, help="also write the markdown table to this file")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    if not args.table_only:
        base = get_preset(args.preset)
        m = base.model
        n_train = len(load(base.data, image_size=m.image_size, in_channels=m.in_channels,
                           holdout_fraction=base.holdout_fraction).train)
        common = json.loads(args.common)
        settings = EvalSettings(num_samples=args.num_samples, ref_images=args.ref_images,
                                feature_precision=args.feature_precision)
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in args.variants.split(","):
                if name not in VARIANTS:
                    raise SystemExit(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
                cfg = variant_config(base, name, {**common, "seed": seed}, args.epochs * n_train)
                run = out / f"{name}-seed{seed}"
                done = run / "screen.json"
                if done.exists():
                    continue
                seconds = train(cfg, run)
                row = {"metrics": scored(run, cfg.steps, settings, "auto", metrics=("fid", "precision_recall"))}
                live = {}
                if cfg.ema:  # the same run's trained generator too: the EMA's effect without another seed's noise
                    m = scored(run, cfg.steps, dataclasses.replace(settings, ema=False), "auto",
                               metrics=("fid", "precision_recall"))
                    live = {"fid_live": m["fid"]["value"], "precision_live": m["precision_recall"]["precision"],
                            "recall_live": m["precision_recall"]["recall"]}
                last = last_stats(run)
                done.write_text(json.dumps({
                    "variant": name, "seed": seed, "steps": cfg.steps, "config": cfg.to_dict(),
                    "fid": row["metrics"]["fid"]["value"], "precision": row["metrics"]["precision_recall"]["precision"],
                    "recall": row["metrics"]["precision_recall"]["recall"], "kl_real": last["kl_real"],
                    "rollbacks": last.get("rollbacks", 0), "lr_at_end": last.get("lr"),
                    "reference_images": row["metrics"]["fid"]["reference_images"],
                    **live, "margin": last.get("margin", float("nan")),
                    "images_per_s": cfg.steps * cfg.batch_size / seconds,
                    "train_seconds": round(seconds, 1), "about": {"num_samples": args.num_samples, "ref_images": args.ref_images,
                                                        "feature_precision": args.feature_precision,
                                                        "preset": args.preset, "common": args.common,
                                                        "epochs": args.epochs}}, indent=1))
                print(f"{name} seed {seed}: FID {json.loads(done.read_text())['fid']:.1f}", flush=True)
    text = table(out)
    print(text)
    if args.table:
        Path(args.table).write_text(text)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
