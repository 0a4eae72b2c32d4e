"""Discovery of the quantizable layers of a model (Conv1d, Conv2d, Linear) and their static properties."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cwhawq.allocation import FP32_LAYER_BITS, MAX_BITS, MIN_BITS
from cwhawq.errors import CwhawqError

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Pins must be bit-widths the quantizer supports; 32 keeps a layer at full precision.


@dataclass(frozen=True)
class LayerInfo:
    """Static description of one quantizable layer; see the interface contract for the meaning of each field."""

    name: str
    kind: str
    dims: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    params: int
    params_per_channel: int
    macs: int
    input_size: tuple[int, ...]
    pinned_bits: int | None


def layer_kind(module: nn.Module) -> str:
    """Classify a quantizable module as "linear", "conv", "depthwise" or "grouped"."""
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups == 1:
        return "conv"
    if module.groups == module.in_channels:
        return "depthwise"
    return "grouped"


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-accumulates of one call, for a batch of one sample."""
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
    return out.numel() * per_output


def _validate_pins(pin: Mapping[str, int]) -> None:
    for pattern, bits in pin.items():
        integer = isinstance(bits, int) and not isinstance(bits, bool)
        if not integer or not (MIN_BITS <= bits <= MAX_BITS or bits == FP32_LAYER_BITS):
            raise CwhawqError(
                f"pin {pattern!r}={bits!r} is not an integer bit-width in [{MIN_BITS}, {MAX_BITS}], nor "
                f"{FP32_LAYER_BITS} (FP32); use e.g. conv1=8"
            )


def _pinned_bits(name: str, pin: Mapping[str, int]) -> int | None:
    matched = {bits for pattern, bits in pin.items() if fnmatch.fnmatchcase(name, pattern)}
    if len(matched) > 1:
        raise CwhawqError(
            f"layer {name!r} matches pin patterns with different bit-widths {sorted(matched)}; "
            "make the patterns disjoint"
        )
    return matched.pop() if matched else None


def discover_layers(
    model: nn.Module, sample_input: torch.Tensor, pin: Mapping[str, int] | None = None
) -> list[LayerInfo]:
    """List the quantizable layers in first-execution order of one forward pass on one sample.

    Only the first sample of ``sample_input`` is used. Modules that never execute are skipped; a module called several
    times appears once, with the MACs of all its calls summed. ``pin`` maps fnmatch patterns over layer names to fixed
    bit-widths; a pattern that matches no layer is an error (it is almost always a typo).
    """
    pin = dict(pin or {})
    _validate_pins(pin)
    names = {module: name for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)}
    order: list[nn.Module] = []
    macs: dict[nn.Module, int] = {}
    input_sizes: dict[nn.Module, tuple[int, ...]] = {}

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if module not in macs:
            order.append(module)
            macs[module] = 0
            input_sizes[module] = () if isinstance(module, nn.Linear) else tuple(args[0].shape[2:])
        macs[module] += _macs(module, out)

    handles = [module.register_forward_hook(hook) for module in names]
    was_training = {module: module.training for module in model.modules()}
    param = next(model.parameters(), None)
    sample = sample_input[:1]
    if param is not None:
        sample = sample.to(param.device)
    try:
        # eval mode so BatchNorm neither updates its statistics nor fails on a batch of one
        model.eval()
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in was_training.items():
            module.training = training

    if not order:
        raise CwhawqError(
            f"no quantizable layer (Conv1d, Conv2d, Linear) ran in a forward pass of {type(model).__name__}; "
            "check the model and its input shape"
        )
    layer_names = [names[module] for module in order]
    for pattern in pin:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in layer_names):
            raise CwhawqError(
                f"pin pattern {pattern!r} matches no quantizable layer; choose among {', '.join(layer_names)}"
            )
    return [_describe(names[module], module, macs[module], input_sizes[module], pin) for module in order]


def _describe(
    name: str, module: nn.Module, macs: int, input_size: tuple[int, ...], pin: Mapping[str, int]
) -> LayerInfo:
    weight = module.weight
    is_linear = isinstance(module, nn.Linear)
    return LayerInfo(
        name=name,
        kind=layer_kind(module),
        dims=0 if is_linear else len(module.kernel_size),
        in_channels=module.in_features if is_linear else module.in_channels,
        out_channels=module.out_features if is_linear else module.out_channels,
        kernel_size=() if is_linear else tuple(module.kernel_size),
        stride=() if is_linear else tuple(module.stride),
        groups=1 if is_linear else module.groups,
        params=weight.numel(),
        params_per_channel=weight[0].numel(),
        macs=macs,
        input_size=input_size,
        pinned_bits=_pinned_bits(name, pin),
    )


def unquantized_weights(model: nn.Module, layers: Sequence[LayerInfo]) -> dict[str, int]:
    """Every weight tensor (2+ dims) of `model` that is not the weight of one of `layers`, with its size: what
    stays FP32 outside the budget (recurrent and transposed-convolution weights, embeddings, attention input
    projections, quantizable layers that never ran). Biases and normalisation parameters (1 dim) are not listed."""
    quantized = {id(model.get_submodule(layer.name).weight) for layer in layers}
    return {
        name: param.numel()
        for name, param in model.named_parameters()
        if param.dim() >= 2 and id(param) not in quantized
    }
