"""Where introvae keeps what it can recompute: FID reference features, folder indexes, decoded images; and the
lock that lets one process compute an entry while the others wait for it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cache_root() -> Path:
    """``$INTROVAE_CACHE``, else ``$XDG_CACHE_HOME/introvae`` (``~/.cache/introvae``)."""
    root = os.environ.get("INTROVAE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "introvae"


@contextlib.contextmanager
def exclusive(name: str, *, say=None, waiting: str = ""):
    """Hold the cache's lock ``name`` while an entry is made; another process asking for the same lock waits
    (``say`` gets the line ``waiting`` once if it has to). Take it, look for the entry again, then make it: work
    that takes minutes is done once, however many processes need it. Where file locks are unavailable (no
    ``fcntl``, a read-only cache, a file system without locks) this does nothing."""
    try:
        import fcntl

        locks = cache_root() / "locks"  # apart from the entries: the folders they live in hold entries only
        locks.mkdir(parents=True, exist_ok=True)
        f = open(locks / f"{name}.lock", "a+")
    except (ImportError, OSError):
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:  # another process holds it
            if say is not None and waiting:
                say(waiting)
            fcntl.flock(f, fcntl.LOCK_EX)
            locked = True
        except OSError:  # a file system without locks (some network mounts): go on unlocked
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)
