"""Where introvae keeps what it can recompute: FID reference features, folder indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$INTROVAE_CACHE``, else ``$XDG_CACHE_HOME/introvae`` (``~/.cache/introvae``)."""
    root = os.environ.get("INTROVAE_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "introvae"
