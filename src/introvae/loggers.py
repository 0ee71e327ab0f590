"""Training curves where researchers watch them: TensorBoard, beside ``stats.jsonl`` (which stays the record).

``--logger tensorboard`` (the optional ``tensorboard`` extra; no TensorFlow) writes into ``RUN/tensorboard``:
every column of each ``stats.jsonl`` row as a scalar (losses, the three KLs, margin, alpha, lr, images/s, ...),
the sample and reconstruction grids at ``--image-every``, each evaluation's metrics with its protocol as text,
and the run's settings as hyper-parameters. ``auto`` (the default) does so when the package is installed. A
resumed run continues the same curves: events after the step it resumes from are dropped first
(``purge_step``), since the run replays those steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LOGGERS = ("auto", "tensorboard", "none")


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


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


def make_logger(kind: str, run_dir: Path, *, start_step: int, is_main: bool):
    """The logger a run asked for (None for none, on processes other than rank 0, or auto without the package)."""
    if not is_main or kind == "none" or (kind == "auto" and not available()):
        return None
    if not available():
        from .errors import ConfigError

        raise ConfigError("logger: tensorboard needs the tensorboard package: pip install 'introvae[tensorboard]'")
    return TensorBoardLogger(run_dir, start_step=start_step)
