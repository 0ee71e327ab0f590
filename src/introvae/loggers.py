"""Training curves where researchers watch them: TensorBoard or Weights & Biases, beside ``stats.jsonl`` (which
stays the record).

``--logger tensorboard`` (the optional ``tensorboard`` extra; no TensorFlow) writes into ``RUN/tensorboard``:
every column of each ``stats.jsonl`` row as a scalar (losses, the three KLs, margin, alpha, lr, images/s, ...),
the sample and reconstruction grids at ``--image-every``, each evaluation's metrics with its protocol as text,
and the run's settings as hyper-parameters. ``auto`` (the default) does so when the package is installed. A
resumed run continues the same curves: events after the step it resumes from are dropped first
(``purge_step``), since the run replays those steps.

``--logger wandb`` (the optional ``wandb`` extra) logs the same to a W&B run: project ``$WANDB_PROJECT`` or
``introvae``, named after the run directory, its files under ``RUN/wandb``; ``WANDB_MODE=offline`` keeps it on the
machine (``wandb sync`` later). The W&B run's id is kept in ``RUN/wandb.json``, so ``--resume`` continues the same
W&B run. W&B cannot drop logged points: every value carries the run's ``step``, the x-axis of its charts, and the
steps a resumed run replays are logged again at the same x.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LOGGERS = ("auto", "tensorboard", "wandb", "none")


def available(package: str = "tensorboard") -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken install, or a module without a spec
        return False


class TensorBoardLogger:
    def __init__(self, run_dir: Path, *, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "tensorboard"
        # events of steps after the checkpoint's are replayed by the resumed run: drop them (stats.jsonl does too)
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=start_step + 1 if start_step > 0 else None)

    def hparams(self, config: dict) -> None:
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in config.items()
                if v is not None}
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)
        self.writer.add_hparams(flat, {}, run_name=".")

    def scalars(self, row: dict) -> None:
        step = row["step"]
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, step)

    def images(self, step: int, paths: dict[str, Path]) -> None:
        from PIL import Image

        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own grids: no --max-image-pixels check
        try:
            for tag, path in paths.items():
                if path.is_file():
                    self.writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")
        finally:
            Image.MAX_IMAGE_PIXELS = limit

    def evaluation(self, step: int, metrics: dict, protocol: dict | None) -> None:
        for name, value in metrics.items():
            if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
                self.writer.add_scalar(f"eval/{name}", value["value"], step)
        pr = metrics.get("precision_recall", {})
        for k in ("precision", "recall"):
            if isinstance(pr.get(k), (int, float)):
                self.writer.add_scalar(f"eval/{k}", pr[k], step)
        if protocol:
            self.writer.add_text("eval/protocol", json.dumps(protocol, sort_keys=True), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """The same curves, grids, evaluations and settings in a Weights & Biases run (see the module's notes)."""

    def __init__(self, run_dir: Path, *, start_step: int):
        import os

        import wandb

        self.wandb, self.run_dir = wandb, Path(run_dir)
        record = self.run_dir / "wandb.json"  # the W&B run of this run directory, for --resume
        known = json.loads(record.read_text()) if record.is_file() else {}
        self.run = wandb.init(project=known.get("project") or os.environ.get("WANDB_PROJECT") or "introvae",
                              id=known.get("id"), resume="allow" if known else None, name=self.run_dir.name,
                              dir=str(self.run_dir))
        if not known:
            record.write_text(json.dumps({"id": self.run.id, "project": self.run.project}) + "\n")
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def hparams(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def scalars(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def images(self, step: int, paths: dict[str, Path]) -> None:
        shown = {tag: self.wandb.Image(str(path)) for tag, path in paths.items() if path.is_file()}
        if shown:
            self.run.log({"step": step, **shown})

    def evaluation(self, step: int, metrics: dict, protocol: dict | None) -> None:
        values = {f"eval/{name}": value["value"] for name, value in metrics.items()
                  if isinstance(value, dict) and isinstance(value.get("value"), (int, float))}
        pr = metrics.get("precision_recall", {})
        values.update({f"eval/{k}": pr[k] for k in ("precision", "recall") if isinstance(pr.get(k), (int, float))})
        self.run.log({"step": step, **values})
        if protocol:
            self.run.summary["eval/protocol"] = json.dumps(protocol, sort_keys=True)

    def flush(self) -> None:
        pass  # W&B sends as it goes

    def close(self) -> None:
        self.run.finish()


def make_logger(kind: str, run_dir: Path, *, start_step: int, is_main: bool):
    """The logger a run asked for (None for none, on processes other than rank 0, or auto without TensorBoard)."""
    if not is_main or kind == "none" or (kind == "auto" and not available()):
        return None
    package = "wandb" if kind == "wandb" else "tensorboard"
    if not available(package):
        from .errors import ConfigError

        raise ConfigError(f"logger: {kind} needs the {package} package: pip install 'introvae[{package}]'")
    return (WandbLogger if kind == "wandb" else TensorBoardLogger)(run_dir, start_step=start_step)
