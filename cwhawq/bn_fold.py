"""The weights used at inference, which quantization must see: BatchNorm folded into the preceding convolution,
and weights that torch recomputes from other tensors (weight or spectral normalisation) baked into plain ones."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse
from torch.nn.utils import parametrize, remove_spectral_norm, remove_weight_norm
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

_WEIGHT_HOOKS = {WeightNorm: remove_weight_norm, SpectralNorm: remove_spectral_norm}


def _computed_weight_hooks(module: nn.Module) -> list[WeightNorm | SpectralNorm]:
    """The hook-based normalisations (torch.nn.utils.weight_norm / spectral_norm) that recompute `module.weight`."""
    return [
        hook
        for hook in module._forward_pre_hooks.values()
        if type(hook) in _WEIGHT_HOOKS and getattr(hook, "name", None) == "weight"
    ]


def bake_parametrized_weights(model: nn.Module) -> nn.Module:
    """Return ``model`` itself, or, when some module's weight is computed from other tensors at every forward
    (`torch.nn.utils.parametrize`, e.g. weight_norm or spectral_norm, or their older hook-based forms), an eval-mode
    copy in which those weights are plain parameters holding their current value.

    That is the tensor a deployment stores; left computed, it would hide from the Hessian traces (not a leaf) and
    undo every in-place quantization at the next forward.
    """
    if not any(parametrize.is_parametrized(m, "weight") or _computed_weight_hooks(m) for m in model.modules()):
        return model
    with torch.no_grad():
        for module in model.modules():
            # The hook-based forms keep the weight of the last forward, with its autograd graph, which deepcopy
            # refuses; the same value without a graph (and without a power-iteration step) lets the copy be made.
            for hook in _computed_weight_hooks(module):
                if isinstance(hook, SpectralNorm):
                    module.weight = hook.compute_weight(module, do_power_iteration=False)
                else:
                    module.weight = hook.compute_weight(module)
    baked = copy.deepcopy(model).eval()  # eval: spectral norm must not take another power-iteration step
    for module in baked.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        for hook in _computed_weight_hooks(module):
            _WEIGHT_HOOKS[type(hook)](module)
    return baked


def _fold_transposed(graph_module: fx.GraphModule) -> fx.GraphModule:
    """Fold each BatchNorm that directly and only follows a transposed convolution, which `fuse` leaves alone.

    Grouped transposed convolutions stay unfolded: their weight holds out_channels / groups columns per input
    channel, which `fuse_conv_bn_eval` does not scale per group.
    """
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        conv = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(conv, nn.modules.conv._ConvTransposeNd) or conv.groups != 1 or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        bn = modules.get(user.target) if user.op == "call_module" else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        parent, _, name = node.target.rpartition(".")
        setattr(graph_module.get_submodule(parent), name, fuse_conv_bn_eval(conv, bn, transpose=True))
        user.replace_all_uses_with(node)
        graph_module.graph.erase_node(user)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm that directly follows a conv/linear (transposed
    convolutions too, but not grouped ones) folded into it.

    The folded layers keep their qualified names. When the model cannot be traced by torch.fx (e.g. data-dependent
    control flow) the copy is returned unfolded and a warning says why.
    """
    original = copy.deepcopy(model).eval()
    try:
        # fuse() copies again, so `original` stays usable as the fallback if tracing fails half-way
        folded = _fold_transposed(fuse(original, inplace=False))
    except Exception as exc:  # fx raises many exception types (TraceError, TypeError, RuntimeError...) while tracing
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"BatchNorm was not folded: torch.fx could not trace {type(model).__name__} ({reason}); "
            "quantization will use the unfolded conv weights",
            stacklevel=2,
        )
        return original
    return folded.eval()
