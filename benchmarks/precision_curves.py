"""Overlay the KL curves of runs trained in different precisions (do bf16 losses track fp32?).

    introvae train --preset faces --steps 600 --vae-steps 150 --out runs/fp32
    introvae train --preset faces --steps 600 --vae-steps 150 --precision bf16 --channels-last --out runs/bf16
    python benchmarks/precision_curves.py runs/fp32 runs/bf16 -o docs/precision-kl.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from introvae.stats import read_stats  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("-o", "--out", default="precision-kl.png")
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = ["-", "--", ":", "-."]
    for run, style in zip(args.runs, styles):
        cfg = json.loads((Path(run) / "config.json").read_text())
        rows = [r for r in read_stats(run) if "kl_real" in r]
        for key, color in (("kl_real", "tab:blue"), ("kl_rec", "tab:orange"), ("kl_fake", "tab:green")):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot(*zip(*pts), style, color=color, label=f"{key} ({cfg['precision']})")
        last = rows[-max(1, len(rows) // 4):]
        means = {k: sum(r[k] for r in last) / len(last) for k in ("kl_real", "kl_rec", "kl_fake", "reconstruction")}
        print(f"{run} ({cfg['precision']}): last quarter means " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
    ax.axhline(cfg["margin"], color="k", linewidth=1, label=f"margin {cfg['margin']:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("KL (nats)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
