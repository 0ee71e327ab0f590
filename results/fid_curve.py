"""FID, precision and recall against epochs, one line per run, from the ``metrics.jsonl`` files `introvae evaluate`
appends to: how a schedule's screens compare over a run's length.

    python results/fid_curve.py -o docs/fashion-late-decay-curve.png --samples 2000 --steps-per-epoch 3750 \
        --title "Fashion-MNIST, seed 0: 2,000-sample screens" \
        "fixed rate=bench-runs/evals-2k/s0-*/metrics.jsonl" \
        "halving every 2 epochs from epoch 8=bench-runs/evals-2k/decay8-*/metrics.jsonl@fixed rate:30000"

Each argument is ``LABEL=PATTERN``: a glob of metrics files whose rows make one line (sorted by step). Only rows
scored on ``--samples`` samples are drawn (FIDs of other counts are not comparable); a line's points are its
rows' steps over ``--steps-per-epoch``. A fork's line branches off its source's line (``LABEL=PATTERN@SOURCE:STEP``,
SOURCE another line's label, STEP the step it was forked at, where the source must have a row). A line trained
with another batch size gives its own steps per epoch after a ``#`` (``LABEL=PATTERN#937`` for batches of 64); a
fork with another batch than its source's (``train --fork ... --batch-size 64``) counts its epochs on from the
source's epoch at the fork (``LABEL=PATTERN@SOURCE:STEP#937``).
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path


def read_points(pattern: str, samples: int) -> list[tuple[int, dict]]:
    """(step, metrics) of every row in the files matching ``pattern`` scored on ``samples`` samples, by step."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"fid_curve: no file matches {pattern!r}")
    points = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            if row["metrics"]["fid"]["samples"] == samples:
                points[row["step"]] = row["metrics"]
    return sorted(points.items())


def line_epochs(steps: list[int], per_epoch: float, fork: tuple[int, float] | None = None) -> list[float]:
    """The epochs of a line's steps: ``step / per_epoch``, or for a fork (``fork`` = the step it was forked at and
    its source's steps per epoch) the source's epoch there plus the fork's own steps since, in its own batch."""
    if fork is None:
        return [step / per_epoch for step in steps]
    at, source_per_epoch = fork
    return [at / source_per_epoch + (step - at) / per_epoch for step in steps]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=PATTERN[@SOURCE:STEP][#N]")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--samples", type=int, default=10000, help="the sample count of the rows to draw")
    p.add_argument("--steps-per-epoch", type=float, required=True, help="of every line without its own #N")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {}
    for item in args.runs:
        label, sep, rest = item.partition("=")
        if not sep or not label:
            raise SystemExit(f"fid_curve: {item!r}: expected LABEL=PATTERN")
        rest, _, own = rest.partition("#")
        try:
            per_epoch = float(own) if own else args.steps_per_epoch
        except ValueError:
            raise SystemExit(f"fid_curve: {item!r}: expected a number of steps per epoch after '#'") from None
        pattern, _, fork = rest.partition("@")
        points = read_points(pattern, args.samples)
        if not points:
            raise SystemExit(f"fid_curve: {label}: no row of {args.samples} samples in {pattern!r}")
        source, _, step = fork.rpartition(":")
        if fork and not (source and step.isdigit()):
            raise SystemExit(f"fid_curve: {item!r}: expected LABEL=PATTERN@SOURCE:STEP for a fork")
        lines[label] = (points, (source, int(step)) if fork else None, per_epoch)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for label, (points, fork, per_epoch) in lines.items():
        at = None
        if fork is not None:  # start where the fork did: the source's row at the fork's step
            source, step = fork
            known = dict(lines[source][0]) if source in lines else {}
            if step not in known:
                raise SystemExit(f"fid_curve: {label}: forked from {source!r} at step {step}, which is not a "
                                 "line with a row there")
            points = [(step, known[step])] + points
            at = (step, lines[source][2])
        epochs = line_epochs([step for step, _ in points], per_epoch, at)
        for ax, value in zip(axes, (lambda m: m["fid"]["value"], lambda m: m["precision_recall"]["precision"],
                                    lambda m: m["precision_recall"]["recall"])):
            ax.plot(epochs, [value(m) for _, m in points], marker="o", label=label)
    for ax, name in zip(axes, (f"FID ({args.samples:,} samples)", "precision", "recall")):
        ax.set_xlabel("epochs")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
