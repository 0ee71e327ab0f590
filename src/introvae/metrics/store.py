"""Evaluation results kept per checkpoint step: one line of ``metrics.jsonl`` per evaluation.

``introvae evaluate`` and the evaluations during training (``--eval-every``) both append here, so
results of earlier steps are kept, never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def append_metrics(directory: Path, row: dict) -> Path:
    path = Path(directory) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    return path


def read_metrics(directory: Path, name: str | None = None, *, during_training: bool = False) -> list:
    """Every row of ``metrics.jsonl``; with ``name``, the (step, value) pairs of that metric; with
    ``during_training``, only the evaluations of ``--eval-every`` (one protocol for the whole run, where
    ``evaluate`` rows may score other sample counts or checkpoints of another sweep)."""
    path = Path(directory) / METRICS_FILE
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut short by a kill
                continue
    if during_training:
        rows = [r for r in rows if r.get("during_training")]
    if name is None:
        return rows
    return [(r["step"], r["metrics"][name]["value"]) for r in rows
            if r.get("step") is not None and name in r.get("metrics", {})]
