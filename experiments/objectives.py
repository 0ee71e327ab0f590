"""Experiment. Its results: docs/soft-introvae-2d.md (the 2D density table; records in results/records.jsonl).

VAE, IntroVAE and Soft-IntroVAE on the four 2D densities (and optionally Fashion-MNIST), at equal steps.

    python experiments/objectives.py --precision bf16 --jobs 2 --extra-seeds 8gaussians:1,2   # the README's table
    python experiments/objectives.py --precision bf16 --seeds 0 --threads 1        # one process on one core
    python experiments/objectives.py --steps 30000 --seeds 0,1,2 --out bench-runs/objectives
    python experiments/objectives.py --steps 3000 --densities 8gaussians --seeds 0 --fashion-steps 0

Per density and seed: the plain VAE first; IntroVAE's margin is then, with ``--margin calibrated``
(default), calibrated as `introvae calibrate` advises (1.5x the KL of real data the VAE reaches:
`introvae.calibrate.suggest_margin` of the mean ``kl_real`` over the VAE's last logged rows), or with
``--margin auto`` left to the automatic margin (introvae.margin); then IntroVAE and Soft-IntroVAE with the
authors' weights (SOFT_INTROVAE.md). Finished runs are reused and a stopped run goes on from its checkpoint,
so an interrupted benchmark resumes. Prints the markdown table
(mean +- std over seeds of KL and JSD, the authors' way and the textbook way), writes it with the raw numbers
to ``OUT/objectives.json`` and a figure of every model's samples to ``OUT/samples.png``.

With ``--fashion-steps N`` it also trains the three objectives on Fashion-MNIST (the ``fashion-mnist``
preset's networks; Soft-IntroVAE with the authors' weights) for N steps and scores them with `evaluate`
(FID in eval mode and with the generator's BatchNorm in train mode, precision/recall, MS-SSIM, PSNR).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path

from introvae.calibrate import suggest_margin
from introvae.toy2d import DENSITIES, ToyConfig, load_run, train
from introvae.toy2d.run import density_grid
from introvae.toy2d.densities import RADIUS
from introvae.toy2d.densities import sample as data_sample
from introvae.toy2d.scores import scores

OBJECTIVES = ("vae", "introvae", "soft-introvae")
SCORES = ("kl", "jsd", "kl_textbook", "jsd_textbook")


def run_dir(density: str, objective: str, seed: int, args) -> Path:
    tag = "-auto" if objective == "introvae" and args.margin == "auto" else ""  # auto and calibrated runs apart
    tag += "-bf16" if args.precision == "bf16" else ""
    return Path(args.out) / f"{density}-{objective}{tag}-s{seed}"


def run_2d(density: str, objective: str, seed: int, args, margin: float | str = "auto") -> dict:
    out = run_dir(density, objective, seed, args)
    if (out / "scores.json").is_file():
        return json.loads((out / "scores.json").read_text())
    cfg = ToyConfig(density=density, objective=objective, steps=args.steps, vae_steps=args.vae_steps,
                    batch_size=args.batch_size, seed=seed, margin=margin, precision=args.precision,
                    lr_milestones=tuple(int(args.steps * f) for f in (1 / 3, 1 / 2)))
    result = train(cfg, out, progress=args.jobs == 1)
    if args.jobs > 1:
        print(f"{out.name}: JSD {result['jsd']:.3f} (authors'), {result['seconds'] / 60:.1f} min", flush=True)
    return result


def combo(density: str, seed: int, args) -> dict:
    """The three objectives on one density and seed: the VAE first, whose KL sets IntroVAE's margin."""
    if args.jobs > 1:
        import torch

        # one core per process by default: several processes of 2 threads on 2 cores thrash
        torch.set_num_threads(args.threads or 1)
    out = {"vae": run_2d(density, "vae", seed, args)}
    margin = suggest_margin(vae_kl(density, seed, args)) if args.margin == "calibrated" else "auto"
    out["introvae"] = run_2d(density, "introvae", seed, args, margin)
    out["soft-introvae"] = run_2d(density, "soft-introvae", seed, args)
    return {"runs": out, "margin": margin}


def vae_kl(density: str, seed: int, args) -> float:
    rows = [json.loads(line) for line in (run_dir(density, "vae", seed, args) / "stats.jsonl").open()]
    tail = rows[-max(1, len(rows) // 10):]
    return statistics.mean(r["kl_real"] for r in tail)


def data_floor(density: str) -> dict:
    """The scores of 5,000 fresh points of the density against the 5,000 the models are scored on: with 100 x 100
    bins and 5,000 points the histograms are sparse, so even the density itself scores well above zero."""
    fake = data_sample(density, 5000, seed=123).numpy()
    return scores(fake, data_sample(density, 5000, seed=0).numpy(), RADIUS[density])


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def figure(results: dict, densities: list[str], args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # per density: the data, each objective's samples, then each objective's density exp(-ELBO loss)
    fig, axes = plt.subplots(len(densities), 7, figsize=(21, 3 * len(densities)), squeeze=False)
    for row, density in zip(axes, densities):
        r = 2 * RADIUS[density]
        panels, maps = [("data", data_sample(density, 5000, seed=0).numpy())], []
        for objective in OBJECTIVES:
            model, cfg = load_run(run_dir(density, objective, args.seeds[0], args))
            panels.append((f"{objective}: samples", model.sample(5000, seed=0).numpy()))
            maps.append((f"{objective}: density", density_grid(model, cfg)))
        for ax, (title, pts) in zip(row, panels):
            ax.hist2d(pts[:, 0], pts[:, 1], bins=100, range=[[-r, r], [-r, r]], cmap="viridis")
            ax.set_title(f"{density}: {title}", fontsize=9)
        for ax, (title, image) in zip(row[len(panels):], maps):
            ax.imshow(image, origin="lower", extent=(-r, r, -r, r), cmap="viridis")
            ax.set_title(title, fontsize=9)
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([]), ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def fashion(args) -> list[dict]:
    from compare_vae import scored
    from introvae import checkpoint, get_preset
    from introvae.metrics import EvalSettings
    from introvae.trainer import Trainer, resume

    base = get_preset("fashion-mnist").replace(steps=args.fashion_steps, image_every=max(1, args.fashion_steps // 2),
                                               precision=args.precision, channels_last=args.precision == "bf16")
    settings = EvalSettings(num_samples=args.fashion_samples, pairs=args.fashion_samples,
                            ref_images=args.fashion_samples, encoder_stats="real", feature_precision=args.precision)
    rows = []
    for objective in OBJECTIVES:
        cfg = base.replace(objective=objective, vae_steps=args.fashion_vae_steps if objective == "introvae" else 0)
        run = Path(args.out) / f"fashion-mnist-{objective}-{args.fashion_steps}{'-bf16' if args.precision == 'bf16' else ''}"
        (resume(run) if checkpoint.latest(run) else Trainer(cfg, run)).train()
        for protocol in ("eval", "train"):  # an evaluation of an earlier call with the same settings is reused
            m = scored(run, args.fashion_steps, dataclasses.replace(settings, bn_protocol=protocol), "auto",
                       metrics=("fid", "precision_recall", "ms_ssim", "reconstruction")
                       if protocol == "eval" else ("fid", "precision_recall"))
            rows.append({"objective": objective, "bn_protocol": protocol, **m})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default=",".join(DENSITIES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--extra-seeds", default="",
                   help="more seeds for some densities, e.g. '8gaussians:1,2' (';' between densities)")
    p.add_argument("--steps", type=int, default=30_000, help="per 2D run (the authors: 30,000)")
    p.add_argument("--vae-steps", type=int, default=2_000, help="VAE warm-up of the introspective runs")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--margin", choices=("calibrated", "auto"), default="calibrated",
                   help="IntroVAE's margin: 1.5x the VAE's KL (calibrated) or --margin auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="the runs' arithmetic (bf16: autocast, about 2.5x faster on a CPU with avx512_bf16; on "
                        "Fashion-MNIST also channels-last and the Inception features, see `introvae evaluate --help`)")
    p.add_argument("--jobs", type=int, default=1,
                   help="(density, seed) pairs trained side by side, one process and one thread each")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per process (default: PyTorch's choice, or one with --jobs > 1)")
    p.add_argument("--fashion-steps", type=int, default=0, help="also Fashion-MNIST, for this many steps (0: no)")
    p.add_argument("--fashion-vae-steps", type=int, default=200)
    p.add_argument("--fashion-samples", type=int, default=5000)
    p.add_argument("--out", default="bench-runs/objectives")
    args = p.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    extra = {}
    for item in filter(None, args.extra_seeds.split(";")):
        density, _, seeds = item.partition(":")
        extra[density] = [int(s) for s in seeds.split(",")]
    densities = [d for d in args.densities.split(",") if d]
    seeds_of = {d: args.seeds + [s for s in extra.get(d, []) if s not in args.seeds] for d in densities}
    results, margins = {}, {}
    combos = [(d, seed) for d in densities for seed in seeds_of[d]]
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        done = pool.map(combo, *zip(*combos), [args] * len(combos)) if pool else \
            (combo(d, seed, args) for d, seed in combos)
        for (density, seed), r in zip(combos, done):
            margins[(density, seed)] = r["margin"]
            results.update({(density, o, seed): v for o, v in r["runs"].items()})
    wall = time.perf_counter() - t0
    lines = ["| density | objective | KL (authors) | JSD (authors) | KL (textbook) | JSD (textbook, nats) | "
             "minutes per run |", "|---|---|---|---|---|---|---|"]
    for density in densities:
        for objective in OBJECTIVES:
            rs = [results[(density, objective, s)] for s in seeds_of[density]]
            cells = [mean_std([r[k] for r in rs]) for k in SCORES]
            lines.append(f"| {density} | {objective} | {' | '.join(cells)} | "
                         f"{statistics.mean(r['seconds'] for r in rs) / 60:.1f} |")
        floor = data_floor(density)  # what a perfect model would score: 5,000 more points of the density itself
        lines.append(f"| {density} | *data itself* | {' | '.join(f'{floor[k]:.2f}' for k in SCORES)} | - |")
    print(f"\n{args.steps} steps, batch {args.batch_size}, {args.precision}, seeds {seeds_of}; {wall / 60:.1f} min "
          f"wall with {args.jobs} process(es); IntroVAE margins: "
          + ", ".join(f"{d} s{s}: {m}" for (d, s), m in margins.items()) + "\n")
    print("\n".join(lines))
    out = Path(args.out)
    if densities:
        figure(results, densities, args, out / "samples.png")
    report = {"args": vars(args), "wall_minutes": round(wall / 60, 1), "table": lines, "margins": {f"{d}-s{s}": m for (d, s), m in margins.items()},
              "runs": {f"{d}-{o}-s{s}": r for (d, o, s), r in results.items()}}
    if args.fashion_steps:
        report["fashion"] = fashion(args)
        print("\n| objective | generator BN | FID | precision | recall | MS-SSIM | PSNR |\n|---|---|---|---|---|---|---|")
        for r in report["fashion"]:
            pr = r["precision_recall"]
            ms = f"{r['ms_ssim']['value']:.4f}" if "ms_ssim" in r else "-"
            psnr = f"{r['reconstruction']['posterior_mean']['psnr']:.2f}" if "reconstruction" in r else "-"
            print(f"| {r['objective']} | {r['bn_protocol']} | {r['fid']['value']:.1f} | {pr['precision']:.3f} | "
                  f"{pr['recall']:.3f} | {ms} | {psnr} |")
    (out / "objectives.json").write_text(json.dumps(report, indent=2, default=str))
    if densities:
        print(f"\nsamples of every model: {out / 'samples.png'}")


if __name__ == "__main__":
    from introvae.errors import UserError

    try:
        main()
    except UserError as e:  # a stopped run (its checkpoint written: running this again goes on) or bad input
        raise SystemExit(f"objectives: {e}") from None
