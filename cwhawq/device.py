"""Which torch device runs the model's forward and backward passes (traces, evaluations), checked up front.

The agent's networks are small and always run on the CPU (`agents.ddpg`).
"""

from __future__ import annotations

import torch

from cwhawq.errors import CwhawqError


def resolve_device(name: str) -> torch.device:
    """The torch device called `name` ("cpu", "cuda", "cuda:1", "mps"), or a one-line error if it cannot be used."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise CwhawqError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CwhawqError(
                f"device {name!r} asked for, but torch sees no CUDA device (torch {torch.__version__}); "
                "use --device cpu, or install a CUDA build of torch on a machine with a GPU"
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise CwhawqError(
                f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s); "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CwhawqError(f"device {name!r} asked for, but torch sees no MPS device; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise CwhawqError(f"device {name!r} is not supported; use cpu, cuda, cuda:N or mps")
    return device
