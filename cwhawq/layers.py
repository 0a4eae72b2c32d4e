"""Discovery of the quantizable layers of a model (Conv1d/2d/3d and transposed, Linear, Embedding and EmbeddingBag,
the projections of `nn.MultiheadAttention`, and the weight matrices of LSTM, GRU and RNN modules and cells) and their
static properties.

A layer is named by its module's qualified name, whose `weight` it quantizes, or, for a weight that is a bare
parameter (an attention module's packed `in_proj_weight`, a recurrent module's `weight_ih_l0`...), by that
parameter's qualified name (`layer_weight`); each row of such a matrix is one output channel. An embedding's rows
are its tokens' vectors: a lookup has no multiply-accumulates, and rows of tokens the data never uses have a zero
trace. A weight that several modules share (an embedding tied to the output projection of a language model) is one
layer, named after the first module that uses it: it is stored once, so it is quantized and counted once, and every
module that uses it reads the quantized tensor.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from cwhawq.allocation import FP32_LAYER_BITS, MAX_BITS, MIN_BITS
from cwhawq.errors import CwhawqError

EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
QUANTIZABLE = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    *EMBEDDINGS,
)
#: Modules whose weights are bare parameters used as linear maps, each quantized as a layer of its own.
MATRIX_OWNERS = (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)
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
    """Classify a quantizable module as "linear" (attention and recurrent matrices too), "embedding", "conv",
    "depthwise" or "grouped"."""
    if isinstance(module, EMBEDDINGS):
        return "embedding"
    if isinstance(module, (nn.Linear, *MATRIX_OWNERS)):
        return "linear"
    if module.groups == 1:
        return "conv"
    if module.groups == module.in_channels:
        return "depthwise"
    return "grouped"


def _macs(module: nn.Module, inputs: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-accumulates of one call, for a batch of one sample."""
    if isinstance(module, EMBEDDINGS):  # a lookup (EmbeddingBag's sums are additions, not products)
        return 0
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # every input value meets a kernel per output group
        return inputs.numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
    per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
    return out.numel() * per_output


def _tokens(sequence: torch.Tensor, batch_first: bool) -> int:
    """Sequence length of an attention or recurrent input, (L, E) unbatched, (N, L, E) or (L, N, E) batched."""
    return sequence.shape[1] if sequence.dim() == 3 and batch_first else sequence.shape[0]


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
    bit-widths; a pattern that matches no layer is an error (it is almost always a typo). A module whose weight is
    another's (tied weights) adds its MACs to that layer, with a warning naming both.
    """
    pin = dict(pin or {})
    _validate_pins(pin)
    names = {module: name for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)}
    owners = {module: name for name, module in model.named_modules() if isinstance(module, MATRIX_OWNERS)}
    order: list[str] = []
    macs: dict[str, int] = {}
    input_sizes: dict[str, tuple[int, ...]] = {}
    weights: dict[str, torch.Tensor] = {}
    modules: dict[str, nn.Module] = {}
    tied: dict[str, str] = {}  # a module's name -> the layer whose weight it uses
    by_storage: dict[tuple, str] = {}

    def record(name: str, weight: torch.Tensor, module: nn.Module, calls_macs: int, input_size: tuple) -> None:
        name = tied.get(name, name)
        if name not in macs:
            storage = (weight.data_ptr(), tuple(weight.shape))
            if storage in by_storage:
                tied[name] = name = by_storage[storage]
            else:
                by_storage[storage] = name
                order.append(name)
                macs[name], input_sizes[name], weights[name], modules[name] = 0, input_size, weight, module
        macs[name] += calls_macs

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        input_size = () if isinstance(module, (nn.Linear, *EMBEDDINGS)) else tuple(args[0].shape[2:])
        record(names[module], module.weight, module, _macs(module, args[0], out), input_size)

    def matrix_hook(module: nn.Module, args: tuple, kwargs: dict, out: tuple) -> None:
        # Attention and recurrent modules use their weights directly (no Linear call): record them from here.
        name = owners[module]
        first = args[0] if args else next(iter(kwargs.values()))
        if isinstance(module, nn.MultiheadAttention):
            key = args[1] if len(args) > 1 else kwargs["key"]
            queries, keys = _tokens(first, module.batch_first), _tokens(key, module.batch_first)
            width = module.embed_dim
            if module.in_proj_weight is not None:
                packed = module.in_proj_weight
                record(f"{name}.in_proj_weight", packed, module, (queries + 2 * keys) * width * width, ())
            else:  # keys and values of other widths: three separate projections
                for part, tokens in (("q", queries), ("k", keys), ("v", keys)):
                    weight = getattr(module, f"{part}_proj_weight")
                    record(f"{name}.{part}_proj_weight", weight, module, tokens * weight.numel(), ())
            record(f"{name}.out_proj", module.out_proj.weight, module.out_proj, queries * width * width, ())
            return
        if isinstance(module, nn.RNNCellBase):  # one step per call
            steps = 1
        elif isinstance(first, PackedSequence):
            steps = first.data.shape[0]
        else:
            steps = _tokens(first, module.batch_first)
        for param_name, weight in module.named_parameters(recurse=False):
            if weight.dim() == 2:  # weight_ih(_lK), weight_hh(_lK), weight_hr_lK (and _reverse): a product per step
                record(f"{name}.{param_name}", weight, module, steps * weight.numel(), ())

    handles = [module.register_forward_hook(hook) for module in names]
    handles += [module.register_forward_hook(matrix_hook, with_kwargs=True) for module in owners]
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

    for name, owner in tied.items():
        warnings.warn(
            f"{name!r} uses the weight of {owner!r} (tied weights): it is quantized once, as layer {owner!r}",
            stacklevel=2,
        )
    if not order:
        raise CwhawqError(
            "no quantizable layer (convolution, Linear, embedding, attention, recurrent) ran in a forward pass of "
            f"{type(model).__name__}; check the model and its input shape"
        )
    for pattern in pin:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in order):
            raise CwhawqError(f"pin pattern {pattern!r} matches no quantizable layer; choose among {', '.join(order)}")
    return [_describe(name, modules[name], weights[name], macs[name], input_sizes[name], pin) for name in order]


def _describe(
    name: str, module: nn.Module, weight: torch.Tensor, macs: int, input_size: tuple[int, ...], pin: Mapping[str, int]
) -> LayerInfo:
    # Channels are the weight's rows: a bare matrix (attention, recurrent) is a linear map, one output channel per
    # row; a transposed convolution's weight is (in, out / groups, kernel...), so its rows are its input channels;
    # an embedding's rows are its tokens.
    is_linear = isinstance(module, (nn.Linear, *MATRIX_OWNERS, *EMBEDDINGS))
    return LayerInfo(
        name=name,
        kind=layer_kind(module),
        dims=0 if is_linear else len(module.kernel_size),
        in_channels=weight.shape[1] * (1 if is_linear else module.groups),
        out_channels=weight.shape[0],
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
    stays FP32 outside the budget (position embeddings and other bare parameters, layers that never ran). Biases and
    normalisation parameters (1 dim) are not listed."""
    quantized = {id(layer_weight(model, layer.name)) for layer in layers}
    return {
        name: param.numel()
        for name, param in model.named_parameters()
        if param.dim() >= 2 and id(param) not in quantized
    }


def layer_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight tensor of the layer called `name` (see the module docstring): a module's `weight`, or a parameter."""
    try:
        weight = getattr(model.get_submodule(name), "weight", None)
    except AttributeError:
        try:
            weight = model.get_parameter(name)
        except AttributeError:
            weight = None
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise CwhawqError(f"the model has no layer {name!r} with a weight to quantize; rediscover the layers on it")
    return weight
