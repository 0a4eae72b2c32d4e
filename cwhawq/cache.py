"""Where cwhawq keeps files that are expensive to recompute (trained builtin weights, generated data), and the
tensor digests that key cached and recorded results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def default_cache_dir() -> Path:
    """Directory for cached files: $CWHAWQ_CACHE, else ~/.cache/cwhawq."""
    env = os.environ.get("CWHAWQ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cwhawq"


def hash_tensor(digest: Any, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes (any dtype, also bfloat16) into a hashlib `digest`."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
