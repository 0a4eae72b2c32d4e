"""Where cwhawq keeps files that are expensive to recompute (trained builtin weights, generated data)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Directory for cached files: $CWHAWQ_CACHE, else ~/.cache/cwhawq."""
    env = os.environ.get("CWHAWQ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cwhawq"
