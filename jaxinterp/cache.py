"""Where jaxinterp keeps what it can recompute (compiled programs, fitted colour statistics)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxinterp`` (``~/.cache/jaxinterp``): safe to delete, everything in it is rebuilt."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxinterp"
