"""The paper's stability rule, read off finished runs: how often kl_real stayed below the margin, and the FID.

    python benchmarks/margin_check.py RUN [RUN ...] [--figure out.png] [--kl-figure kl.png --labels A,B]

For each IntroVAE run directory (an image run, or a 2D run of ``introvae train --data 8gaussians``): its margin setting, the share of stats.jsonl rows after the VAE warm-up whose
kl_real is below the margin in force (the row's ``margin``, or the fixed one), the margin's range, and the FID of
its newest evaluation in metrics.jsonl (with its sample count). ``--figure`` puts the runs' last sample grids
side by side, labelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from introvae.metrics.store import read_metrics
from introvae.plots import draw_kl
from introvae.stats import read_stats


def run_config(run: Path) -> dict:
    """An image run's config.json, or a 2D run's toy2d.json."""
    path = run / "config.json" if (run / "config.json").is_file() else run / "toy2d.json"
    return json.loads(path.read_text())


def check(run: Path) -> dict:
    cfg = run_config(run)
    warmup = cfg.get("vae_steps", 0)
    rows = [r for r in read_stats(run) if r["step"] > warmup and r.get("kl_fake") is not None]
    margins = [r.get("margin") if r.get("margin") is not None else cfg["margin"] for r in rows]
    below = [r["kl_real"] < m for r, m in zip(rows, margins)]
    fids = [m for m in read_metrics(run) if "fid" in m.get("metrics", {})]
    fid = fids[-1]["metrics"]["fid"] if fids else None
    return {"run": str(run), "margin": cfg["margin"], "mirror": cfg.get("mirror", False), "rows": len(rows),
            "kl_real_below_margin": sum(below) / len(below) if below else None,
            "margin_range": (min(margins), max(margins)) if margins else None,
            "kl_real_last": rows[-1]["kl_real"] if rows else None,
            "fid": fid["value"] if fid else None, "fid_samples": fid["samples"] if fid else None,
            "fid_reference_images": fid["reference_images"] if fid else None}


def figure(runs: list[Path], path: Path, labels: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    labels = labels or [run.name for run in runs]
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 4.4))
    for ax, run, label in zip([axes] if len(runs) == 1 else axes, runs, labels):
        grid = sorted(run.glob("samples-*.png"))[-1]
        ax.imshow(Image.open(grid), cmap="gray")
        c = check(run)
        fid = f", FID {c['fid']:.1f} ({c['fid_samples']} samples)" if c["fid"] is not None else ""
        ax.set_title(f"{label}: margin {c['margin']}, flips {'on' if c['mirror'] else 'off'}\n{fid.lstrip(', ')}",
                     fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kl_figure(runs: list[Path], labels: list[str], path: Path, columns: int = 4) -> None:
    """Fig. 5 for several runs, one panel each: the KL of real, reconstructed and sampled images and the margin in
    force, the warm-up shaded, the share of rows after it with kl_real below m in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, len(runs))
    rows_of_panels = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.6 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    for ax, run, label in zip(axes.flat, runs, labels):
        cfg, c = run_config(run), check(run)
        rows = [r for r in read_stats(run) if "kl_real" in r]
        draw_kl(ax, rows, margin=cfg["margin"], warmup_steps=cfg.get("vae_steps", 0), linewidth=1)
        share = c["kl_real_below_margin"]
        ax.set_title(f"{label}\nkl_real < m in {100 * share:.0f} % of {c['rows']} rows" if share is not None
                     else label, fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_ylabel("KL to the prior (nats)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--figure", type=Path, help="the runs' last sample grids side by side")
    p.add_argument("--kl-figure", type=Path, help="the runs' KL curves and margins (Fig. 5) side by side")
    p.add_argument("--labels", help="comma-separated panel titles for the figures (default: the run names)")
    p.add_argument("--columns", type=int, default=4, help="panels per row of --kl-figure")
    args = p.parse_args()
    print("| run | margin | flips | rows after warm-up | kl_real below m | m from .. to | kl_real at the end | FID |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        c = check(run)
        share = f"{100 * c['kl_real_below_margin']:.0f} %" if c["kl_real_below_margin"] is not None else "-"
        lo_hi = f"{c['margin_range'][0]:.1f} .. {c['margin_range'][1]:.1f}" if c["margin_range"] else "-"
        fid = f"{c['fid']:.1f} ({c['fid_samples']} vs {c['fid_reference_images']})" if c["fid"] is not None else "-"
        print(f"| {run.name} | {c['margin']} | {'on' if c['mirror'] else 'off'} | {c['rows']} | {share} | {lo_hi} | "
              f"{'-' if c['kl_real_last'] is None else format(c['kl_real_last'], '.1f')} | {fid} |")
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise SystemExit(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    if args.figure:
        figure(args.runs, args.figure, labels)
        print(f"figure: {args.figure}")
    if args.kl_figure:
        kl_figure(args.runs, labels or [run.name for run in args.runs], args.kl_figure, args.columns)
        print(f"figure: {args.kl_figure}")


if __name__ == "__main__":
    main()
