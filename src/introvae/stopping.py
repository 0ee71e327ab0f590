"""Stopping long work on Ctrl-C or SIGTERM (``kill``, a scheduler's preemption) without losing what it has done.

Two ways, one for each kind of work:

* a training loop (images or 2D) asks for a stop with a :class:`StopRequest`: inside ``stop.on_signals()`` the first
  signal only sets ``stop.requested``, the loop finishes the step it is in and writes a checkpoint of a whole step; a
  second signal aborts at once (``KeyboardInterrupt``);
* work that keeps its partial results when interrupted (an evaluation's features) runs inside
  :func:`sigterm_as_interrupt`, so that ``kill`` stops it as Ctrl-C does instead of mid-write.

Signal handlers may be set only on the main thread; elsewhere (a notebook's worker, a test's thread) both leave the
signals alone and the work simply cannot be stopped this way.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopRequest:
    """A flag that the first Ctrl-C or SIGTERM sets while :meth:`on_signals` is active; ``say`` (if given) is told
    which signal came, to tell the user what happens now. Code may set ``requested`` itself too (a time budget)."""

    def __init__(self, say: Callable[[str], None] | None = None):
        self.requested = False
        self.say = say

    def _handle(self, signum, _frame) -> None:
        if self.requested:  # the second one: stop now
            raise KeyboardInterrupt
        self.requested = True
        if self.say is not None:
            self.say(signal.Signals(signum).name)

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[StopRequest]:
        """Within it, Ctrl-C and SIGTERM request a stop; the handlers before it are restored on leaving."""
        if not _on_main_thread():
            yield self
            return
        old = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM raises ``KeyboardInterrupt`` where the work is, as Ctrl-C does."""
    if not _on_main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
