"""Progress bars that suit where they are read: live on a terminal, a line every few percent in a log file.

On a terminal a tqdm bar redraws itself in place. Written to a log file or CI's output, those redraws are
thousands of carriage-return updates on one line; there, :func:`progress` prints a plain line every
``LOG_EVERY_PERCENT`` percent instead (or every ``LOG_EVERY_S`` seconds when the total is unknown).
"""

from __future__ import annotations

import math
import sys

LOG_EVERY_PERCENT = 5
LOG_EVERY_S = 60.0


class _Lines:
    """A stream that turns tqdm's in-place redraws ("\\r...") into one line each, blank ones dropped."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            line = line.rstrip()
            if line:
                self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def progress(iterable=None, *, total: int | None = None, desc: str, disable: bool = False, stream=None, **kw):
    """A tqdm bar on standard error (or ``stream``): live on a terminal, a line every few percent elsewhere."""
    from tqdm.auto import tqdm

    stream = stream if stream is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable or is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, disable=disable, file=stream, **kw)
    if total:
        # maxinterval: tqdm's monitor thread otherwise sets miniters to 1 whenever 10 s pass without a line, so that
        # slow work (an evaluation's batch of 100 images: 18 s on one core) wrote a line per update
        kw.update(miniters=max(1, math.ceil(total * LOG_EVERY_PERCENT / 100)), mininterval=0.0,
                  maxinterval=float("inf"))
    else:
        kw.update(mininterval=LOG_EVERY_S)
    kw["leave"] = True  # the last line says how it ended
    kw.setdefault("delay", 2.0)  # work done in under two seconds leaves no lines at all
    kw.pop("dynamic_ncols", None)
    return tqdm(iterable, total=total, desc=desc, file=_Lines(stream), ascii=True, **kw)
