"""Folding BatchNorm into the preceding convolution, so quantization sees the weights used at inference."""

from __future__ import annotations

import copy
import warnings

from torch import nn
from torch.fx.experimental.optimization import fuse


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm that directly follows a conv/linear folded into it.

    The folded layers keep their qualified names. When the model cannot be traced by torch.fx (e.g. data-dependent
    control flow) the copy is returned unfolded and a warning says why.
    """
    original = copy.deepcopy(model).eval()
    try:
        # fuse() copies again, so `original` stays usable as the fallback if tracing fails half-way
        folded = fuse(original, inplace=False)
    except Exception as exc:  # fx raises many exception types (TraceError, TypeError, RuntimeError...) while tracing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"BatchNorm was not folded: torch.fx could not trace {type(model).__name__} ({reason}); "
            "quantization will use the unfolded conv weights",
            stacklevel=2,
        )
        return original
    return folded.eval()
