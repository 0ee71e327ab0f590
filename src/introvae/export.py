"""``introvae export``: a run's model as a folder in the hub layout, with a model card filled from the run."""

from __future__ import annotations

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
    from .provenance import recorded, time_by_machine
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
        by_machine = time_by_machine(model_dir(src), until_step=model.step)
        if by_machine:
            training["training time (from its logged rates)"] = f"{sum(by_machine.values()) / 60:.0f} min"
            if recorded(by_machine):  # where: runs of 0.7.13 and before did not record it
                training["trained on"] = "; ".join(f"{words}: {seconds / 60:.0f} min"
                                                   for words, seconds in by_machine.items())
    if fp16:  # said, since the card's figures and samples.png are of the fp32 weights the run scored
        training = dict(training or {}, weights="stored in fp16, loaded as fp32 (the metrics and samples.png are "
                                                "of the fp32 weights)")
    hub.write_card(out, name=name or out.name, config=model.config.to_dict(),
                   run_config=run_cfg.to_dict() if run_cfg else None, evaluation=rows[-1] if rows else None,
                   source=train_command or f"the run {model_dir(src).name} (its config.json holds every setting)",
                   training=training, commit=commit or _commit(),
                   samples="samples.png")
    return model, out


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None
