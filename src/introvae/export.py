"""``introvae export``: a run's model as a folder in the hub layout, with a model card filled from the run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch


def export(source: str | Path, out: str | Path, *, ema: bool = True, fp16: bool = False,
           name: str | None = None, train_command: str | None = None, commit: str | None = None):
    """Write ``config.json``, ``model.safetensors`` (fp16 on request), ``README.md`` and ``samples.png`` for the
    model of ``source`` (a run directory or a checkpoint) into ``out``; returns (model, out). ``commit``: the
    commit whose code trained it, for the card (default: this checkout's; give it when the run was trained by an
    earlier snapshot's code)."""
    from . import hub
    from .grids import save_grid
    from .metrics.store import read_metrics
    from .runs import load_model, model_dir

    src = hub.resolve(source)  # once: a name or hf:// becomes a path here
    model = load_model(src, ema=ema, device="cpu")
    out = Path(out)
    model.save_pretrained(out, fp16=fp16)
    run_cfg = model.run_config
    rows = [r for r in read_metrics(model_dir(src)) if not r.get("during_training") and "protocol" in r
            and r.get("step") == model.step]
    with torch.no_grad():
        save_grid(model.sample(64, seed=0).clamp(0, 1), out / "samples.png", nrow=8)
    training = None
    if run_cfg is not None:
        training = {"step": model.step, "generator": model.generator_source}
        seconds = training_seconds(model_dir(src), until_step=model.step)
        if seconds:
            training["training time (from its logged rates)"] = f"{seconds / 60:.0f} min"
    if fp16:  # said, since the card's figures and samples.png are of the fp32 weights the run scored
        training = dict(training or {}, weights="stored in fp16, loaded as fp32 (the metrics and samples.png are "
                                                "of the fp32 weights)")
    hub.write_card(out, name=name or out.name, config=model.config.to_dict(),
                   run_config=run_cfg.to_dict() if run_cfg else None, evaluation=rows[-1] if rows else None,
                   source=train_command or f"the run {model_dir(src).name} (its config.json holds every setting)",
                   training=training, commit=commit or _commit(),
                   samples="samples.png")
    return model, out


def training_seconds(run: Path, until_step: int | None = None) -> float | None:
    """A run's training wall time from its logged rates (each stats row covers the steps since the last). A fork
    (``train --fork``) adds its source run's time up to the forked step, when that run is still there."""
    cfg_path, stats = run / "config.json", run / "stats.jsonl"
    if not (cfg_path.is_file() and stats.is_file()):
        return None
    batch = json.loads(cfg_path.read_text()).get("batch_size", 1)
    total, last = 0.0, 0
    source = _forked_from(run)
    if source is not None:  # the fork's first row covers only the steps since the forked checkpoint
        last, checkpoint = source
        total = training_seconds(checkpoint.parent.parent, until_step=last) or 0.0
    for line in stats.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if until_step is not None and r.get("step", 0) > until_step:
            break
        if r.get("images_per_s"):
            total += (r["step"] - last) * batch / r["images_per_s"]
        last = r.get("step", last)
    return total or None


def _forked_from(run: Path) -> tuple[int, Path] | None:
    """(step, checkpoint) that ``run`` was forked from, from its changes.jsonl; None for a run started afresh."""
    changes = run / "changes.jsonl"
    for line in changes.read_text().splitlines() if changes.is_file() else []:
        try:
            c = json.loads(line)
        except ValueError:
            continue
        if c.get("field") == "forked_from" and c.get("to"):
            return int(c["step"]), _source_path(run, Path(c["to"]))
    return None


def _source_path(run: Path, source: Path) -> Path:
    """A fork's source checkpoint. Forks of 0.7.6 and before wrote it as given on the command line, relative to the
    folder they ran in: look for it from each folder above the fork's, the working folder first."""
    if source.is_absolute():
        return source
    for base in (Path.cwd(), *run.resolve().parents):
        if (base / source).parent.parent.is_dir():  # the source run (its checkpoint may since have been pruned)
            return base / source
    return source


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None
