"""The paper's stability rule, read off finished runs: how often kl_real stayed below the margin, and the FID.

    python benchmarks/margin_check.py RUN [RUN ...] [--figure out.png]

For each IntroVAE run directory: its margin setting, the share of stats.jsonl rows after the VAE warm-up whose
kl_real is below the margin in force (the row's ``margin``, or the fixed one), the margin's range, and the FID of
its newest evaluation in metrics.jsonl (with its sample count). ``--figure`` puts the runs' last sample grids
side by side, labelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from introvae.metrics.store import read_metrics
from introvae.stats import read_stats


def check(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
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


def figure(runs: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 4.4))
    for ax, run in zip([axes] if len(runs) == 1 else axes, runs):
        grid = sorted(run.glob("samples-*.png"))[-1]
        ax.imshow(Image.open(grid), cmap="gray")
        c = check(run)
        fid = f", FID {c['fid']:.1f} ({c['fid_samples']} samples)" if c["fid"] is not None else ""
        ax.set_title(f"{run.name}: margin {c['margin']}, flips {'on' if c['mirror'] else 'off'}\n{fid.lstrip(', ')}",
                     fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--figure", type=Path)
    args = p.parse_args()
    print("| run | margin | flips | rows after warm-up | kl_real below m | m from .. to | kl_real at the end | FID |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        c = check(run)
        share = f"{100 * c['kl_real_below_margin']:.0f} %" if c["kl_real_below_margin"] is not None else "-"
        lo_hi = f"{c['margin_range'][0]:.1f} .. {c['margin_range'][1]:.1f}" if c["margin_range"] else "-"
        fid = f"{c['fid']:.1f} ({c['fid_samples']} vs {c['fid_reference_images']})" if c["fid"] is not None else "-"
        print(f"| {run.name} | {c['margin']} | {'on' if c['mirror'] else 'off'} | {c['rows']} | {share} | {lo_hi} | "
              f"{c['kl_real_last']:.1f} | {fid} |")
    if args.figure:
        figure(args.runs, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
