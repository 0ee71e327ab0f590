"""The samples picture beside a results table: one labelled row of samples per model, all from the same seed.

    python results/samples_picture.py -o docs/fashion-mnist-samples.png \
        --title "Fashion-MNIST: samples of the scored checkpoints (training seed 0)" \
        "bench-runs/fm-078-1ep-s0/checkpoints/step-000003750.pt=IntroVAE\\n1 epoch" \
        "fashion-mnist=IntroVAE\\n5 epochs" \
        "bench-runs/fm-soft-0710-s0/checkpoints/step-000003750.pt=Soft-IntroVAE\\n1 epoch" \
        "fashion-mnist-soft=Soft-IntroVAE\\n5 epochs (≤ 0.7.7)" \
        "bench-runs/fm-vae-079-1ep-s0/checkpoints/step-000003750.pt=VAE (cross-entropy)\\n1 epoch" \
        "fashion-mnist-vae=VAE (cross-entropy)\\n5 epochs"

(the README's picture, made with introvae 0.7.14's code from the runs of seed 0 that its Fashion-MNIST table
records and the shipped models (`introvae models`, fp16 copies of the scored weights); "≤ 0.7.7": a two-pass model
with one set of generator BatchNorm statistics, sampled as it was scored. The 20-epoch row returns with the
20-epoch run of the per-pass statistics.)

Each argument is ``MODEL=LABEL`` (``\\n`` in a label breaks the line); ``MODEL`` is whatever `introvae sample`
takes: a run directory, a checkpoint, an exported folder or a shipped model's name. The models are loaded as
``evaluate`` scores them (eval-mode BatchNorm, the EMA generator where the run kept one).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="MODEL=LABEL")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("-n", type=int, default=12, help="samples per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)

    from introvae import load_model
    from introvae.grids import save_labelled_rows

    rows, labels = [], []
    for item in args.models:
        model, sep, label = item.partition("=")
        if not sep or not label:
            p.error(f"{item!r}: give MODEL=LABEL")
        rows.append(load_model(model, device="cpu").sample(args.n, seed=args.seed).float().clamp(0, 1).cpu())
        labels.append(label.replace("\\n", "\n"))
    save_labelled_rows(rows, labels, args.out, title=args.title)
    print(f"samples picture: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
