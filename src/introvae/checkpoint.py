"""Checkpoint files: written atomically, loaded without executing code, validated before use."""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

# Bumped whenever the layout of the checkpoint dict changes; a mismatch is a clear error.
# 2: introvae 0.2 (model and run configs apart; the authors' block order and decoder channels).
CHECKPOINT_FORMAT = 2
# Run settings added within a format, with the value that reproduces what a run written before them did: a
# resumed old run goes on as it started (0.3 mirrors training images by default; earlier runs never did).
ADDED_SETTINGS = {"mirror": False}
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(step_of(f), f) for f in d.iterdir() if _NAME.match(f.name)]
    return [f for _, f in sorted(found)]


def step_of(path: Path) -> int:
    """The step in a checkpoint's name (``step-000003750.pt``: 3750), read without opening the file."""
    m = _NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not named as a checkpoint (step-NNNNNNNNN.pt)")
    return int(m.group(1))


def save(state: dict[str, Any], path: Path, *, keep: int | None = None, every: int = 0) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename), then keep the newest
    ``keep`` checkpoints beside it (see :func:`prune`; ``every``: the run's steps between regular checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    try:
        follow_umask(tmp)  # mkstemp's 0600 would make shared runs unreadable to the group
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if keep is not None:
        prune(path.parent.parent, keep, every=every)
    return path


def prune(run_dir: Path, keep: int, *, every: int = 0) -> None:
    """Delete all but the newest ``keep`` checkpoints of ``run_dir``. With ``every`` > 0 only the regular ones (steps
    that are multiples of ``every``) count: those written between them (by the clock, a stop, a run's end) serve to
    resume and are deleted once a newer regular one exists, so that they never push out the regular ones a sweep
    or a fork needs. The newest checkpoint always stays."""
    found = list_checkpoints(run_dir)
    if every > 0:
        regular = [p for p in found if step_of(p) % every == 0]
        last_regular = step_of(regular[-1]) if regular else -1
        doomed = regular[:-keep] + [p for p in found if step_of(p) % every and step_of(p) < last_regular]
    else:
        doomed = found[:-keep]
    for old in doomed:
        if old != found[-1]:
            old.unlink(missing_ok=True)


def follow_umask(path: str | Path) -> None:
    """Give a file written through a 0600 temporary file the mode the user's umask asks for."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def load(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no code from the file runs) and check its format. ``mmap``:
    map the tensors rather than read them (to read the step and settings of a large checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is no checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: not a file torch.save wrote, or cut short (give a run "
                              "directory, a .pt file of its checkpoints/, or an exported model's directory)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or unsafe files all land here
        # torch's own message may advise weights_only=False, which would run code from the file: never say that
        reason = str(e).splitlines()[0] if "weights_only" not in str(e) else "it holds objects other than tensors"
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {reason}") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not an introvae checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']} (written by introvae "
                              f"{state.get('version', '?')}); this version reads format {CHECKPOINT_FORMAT}, whose "
                              "networks differ: train again, or use the introvae version that wrote it")
    if isinstance(state.get("config"), dict):
        state["config"] = {**ADDED_SETTINGS, **state["config"]}
    return state


def latest(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None
