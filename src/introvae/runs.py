"""What a run directory is, for everyone who reads one: its numbered name, its newest readable checkpoint, the
directory of a model's own files, the settings of the run a model came from, and ``load_model``.

Inference (``sample``, ``export``, ``evaluate``, ``serve``) reads models through this module alone, never through
the training state (:mod:`.runstate`), and reads a checkpoint once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from . import checkpoint, devices
from .config import TrainConfig
from .errors import CheckpointError, UserError
from .model import IntroVAE, load_state_strict


def new_run_dir(root: str | Path, label: str) -> Path:
    """``root/NNNNN-label``, numbered after the runs already there. Nothing is created: the run makes its folder
    (and ``root``) when it starts, so a command that stops on bad input leaves no empty ``runs/`` behind."""
    root = Path(root)
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    nums = [int(m.group(1)) for name in names if (m := re.match(r"^(\d{5})-", name))]
    return root / f"{max(nums, default=-1) + 1:05d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"


def newest_readable_checkpoint(run_dir: Path, log: Callable[[str], None]) -> tuple[Path, dict]:
    """The newest checkpoint that loads; each unreadable newer one is reported and passed over."""
    found = checkpoint.list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir} has no checkpoint yet")
    errors = []
    for path in reversed(found):
        try:
            return path, checkpoint.load(path)
        except CheckpointError as e:
            errors.append(str(e))
            log(f"warning: {e}; trying the previous checkpoint")
    raise UserError(f"no readable checkpoint in {run_dir}: " + "; ".join(errors))


def model_dir(src: Path) -> Path:
    """The directory of a model's own files: the run or export directory (the run's, for a file in its
    checkpoints/), else the directory beside the file."""
    src = Path(src)
    return src if src.is_dir() else src.parent.parent if src.parent.name == "checkpoints" else src.parent


def trained_on(model: IntroVAE, source: Path) -> str | None:
    """The data a model was trained on: its run's ``data``, else the first data set its model card names."""
    from . import hub

    if model.run_config is not None:
        return model.run_config.data
    return (hub.card_metadata(source).get("datasets") or [None])[0] if source.is_dir() else None


def load_model(source: str | Path, *, ema: bool = True, device: str | torch.device = "auto") -> IntroVAE:
    """An :class:`IntroVAE` in eval mode on ``device`` from a run directory (its newest checkpoint), a
    checkpoint file, an exported model directory (``config.json`` + ``model.safetensors``), a shipped model's
    name (``introvae models``) or ``hf://OWNER/NAME``. A run trained
    with ``--ema`` gives its averaged generator unless ``ema`` is False; ``model.generator_source`` says which
    ("ema" or "trained"); ``model.step`` is the checkpoint's step and ``model.run_config`` the run's
    :class:`TrainConfig` (both None for an export, which stores the model's config only)."""
    from . import hub

    device = devices.resolve_device(device)
    p = hub.resolve(source)  # a path, a shipped model's name, or hf://OWNER/NAME
    if p.is_dir() and (p / "model.safetensors").is_file():
        hub.check_folder(p)
        model = IntroVAE.from_pretrained(p, device=device)
        model.step, model.run_config = None, None
        return model
    if p.is_dir():
        found = checkpoint.latest(p)
        if found is None:
            from .toy2d import is_run

            if is_run(p):
                raise UserError(f"{p} is a 2D density run, not an image model: `introvae sample {p} -n N -o "
                                f"points.csv` (.npy, .png) draws from it, `introvae evaluate {p}` scores it")
            raise UserError(f"{p} holds neither an exported model (model.safetensors) nor checkpoints/")
        p = found
    state = checkpoint.load(p)
    try:
        run_cfg = TrainConfig.from_dict(state["config"])
    except UserError as e:
        raise CheckpointError(f"{p}: its config is not valid here ({e})") from None
    model = IntroVAE(run_cfg.model)
    load_state_strict(model, state["model"], source=str(p))
    if ema and state.get("ema") is not None:
        load_state_strict(model.decoder, state["ema"], source=f"{p} (EMA generator)")
        model.generator_source = "ema"
    model.step, model.run_config = int(state["step"]), run_cfg
    return model.to(device).eval()
