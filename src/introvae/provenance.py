"""Where a run trained, and for how long.

``RUN/sessions.jsonl`` gets one line per training call (``train``, ``--resume``, ``--fork``, ``compare``): the
step it started from, the machine (CPU model and the flags that decide its speed, or the GPU), the device,
precision, CPU threads and processes, and the versions. A run's wall time is read from its logged rates (each
``stats.jsonl`` row covers the steps since the previous one) and can be split by the machine that trained each
stretch, so that a time is never quoted without the machine that took it. Runs of introvae 0.7.13 and before
have no ``sessions.jsonl``: their time is "not recorded" by machine.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

import torch

SESSIONS_FILE = "sessions.jsonl"
# the flags that decide a CPU's fp32 and bf16 speed (benchmarks/throughput.py prints them too)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
NOT_RECORDED = "not recorded"


def machine(device: torch.device | None = None) -> dict:
    """The CPU (its model and speed flags), the GPU where ``device`` is one, and torch's version."""
    from .devices import cpu_flags

    info = {"torch": torch.__version__, "arch": platform.machine()}
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["cpu"] = _cpu_model() or platform.processor() or "unknown"
    info["cpu_flags"] = sorted(set(SPEED_FLAGS) & cpu_flags())
    return info


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return None


def machine_words(m: dict | None) -> str:
    """A machine in a few words: the GPU's name, or the CPU's model and speed flags ("AMD EPYC 7B13 (avx2)")."""
    if not m:
        return NOT_RECORDED
    if m.get("gpu"):
        return m["gpu"]
    flags = " ".join(f for f in SPEED_FLAGS if f in m.get("cpu_flags", ()))
    return f"{m.get('cpu', 'unknown CPU')} ({flags or 'no avx2'})"


def record_session(run_dir: Path, *, step: int, device: torch.device, precision: str, processes: int) -> dict:
    """Append this training call to ``run_dir/sessions.jsonl`` (the main process only calls it)."""
    from .version import __version__

    line = {"step": step, "started": datetime.datetime.now().isoformat(timespec="seconds"), "introvae": __version__,
            "device": str(device), "precision": precision, "threads": torch.get_num_threads(),
            "processes": processes, "machine": machine(device)}
    with open(Path(run_dir) / SESSIONS_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def read_sessions(run: Path) -> list[dict]:
    """The run's training calls in the order they ran (a line cut short by a kill is skipped)."""
    return _jsonl(Path(run) / SESSIONS_FILE)


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _stretches(run: Path, until_step: int | None = None) -> list[tuple[float, dict | None]]:
    """(seconds, session) for each logged stretch of ``run``'s training up to ``until_step``, its fork source's
    first. A stretch belongs to the last session that started before its last step: a resumed run truncates
    ``stats.jsonl`` to its checkpoint, so the rows after that step were written by the newest session."""
    from .stats import read_stats

    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        return []
    batch = json.loads(cfg_path.read_text()).get("batch_size", 1)
    out, last = [], 0
    source = forked_from(run)
    if source is not None:  # the fork's first row covers only the steps since the forked checkpoint
        last, checkpoint = source
        out = _stretches(checkpoint.parent.parent, until_step=last)
    sessions = read_sessions(run)
    for r in read_stats(run):
        step = r["step"]
        if until_step is not None and step > until_step:
            break
        if r.get("images_per_s"):
            session = next((s for s in reversed(sessions) if s.get("step", 0) < step), None)
            out.append(((step - last) * batch / r["images_per_s"], session))
        last = step
    return out


def training_seconds(run: Path, until_step: int | None = None) -> float | None:
    """A run's training wall time from its logged rates. A fork (``train --fork``) adds its source run's time up
    to the forked step, when that run is still there."""
    return sum(s for s, _ in _stretches(Path(run), until_step)) or None


def time_by_machine(run: Path, until_step: int | None = None) -> dict[str, float]:
    """The run's training seconds by the machine that trained them (``machine_words``), in the order first seen."""
    out: dict[str, float] = {}
    for seconds, session in _stretches(Path(run), until_step):
        words = machine_words(session.get("machine") if session else None)
        out[words] = out.get(words, 0.0) + seconds
    return out


def recorded(by_machine: dict[str, float]) -> bool:
    """Whether a ``time_by_machine`` split names any machine (runs of 0.7.13 and before name none)."""
    return bool(by_machine) and set(by_machine) != {NOT_RECORDED}


def duration_words(seconds: float) -> str:
    """"52 min", or "5.5 h" from an hour on."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def forked_from(run: Path) -> tuple[int, Path] | None:
    """(step, checkpoint) that ``run`` was forked from, from its changes.jsonl; None for a run started afresh."""
    for c in _jsonl(run / "changes.jsonl"):
        if c.get("field") == "forked_from" and c.get("to"):
            return int(c["step"]), _source_path(run, Path(c["to"]))
    return None


def setting_changes(run: Path) -> list[dict]:
    """The settings a fork or a resume changed, in order: ``{"step", "field", "from", "to"}`` from changes.jsonl
    (the fork's source is :func:`forked_from`'s)."""
    return [{k: c.get(k) for k in ("step", "field", "from", "to")} for c in _jsonl(Path(run) / "changes.jsonl")
            if c.get("field") != "forked_from" and "field" in c]


def _source_path(run: Path, source: Path) -> Path:
    """A fork's source checkpoint. Forks of 0.7.6 and before wrote it as given on the command line, relative to the
    folder they ran in: look for it from each folder above the fork's, the working folder first."""
    if source.is_absolute():
        return source
    for base in (Path.cwd(), *run.resolve().parents):
        if (base / source).parent.parent.is_dir():  # the source run (its checkpoint may since have been pruned)
            return base / source
    return source
