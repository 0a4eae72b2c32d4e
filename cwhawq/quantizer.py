"""Symmetric per-output-channel fake quantization with a bit-width per channel, applied to a model in place."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from cwhawq.allocation import FP32_LAYER_BITS, MAX_BITS, MIN_BITS
from cwhawq.errors import CwhawqError
from cwhawq.layers import LayerInfo, layer_weight

# levels[b] = 2**(b-1) - 1, the largest integer code of a symmetric b-bit grid; indexed by bit-width.
_LEVELS = [0] + [2 ** (b - 1) - 1 for b in range(1, MAX_BITS + 1)]


def _check_bits(bits: np.ndarray | torch.Tensor, out_channels: int, where: str) -> None:
    """Raise CwhawqError unless ``bits`` holds one integer in [2, 16] per output channel."""
    if tuple(bits.shape) != (out_channels,):
        raise CwhawqError(
            f"{where}: bits has shape {tuple(bits.shape)} but the weight has {out_channels} output channels; "
            "give one bit-width per output channel"
        )
    if isinstance(bits, torch.Tensor):
        is_int = not (bits.dtype.is_floating_point or bits.dtype.is_complex or bits.dtype == torch.bool)
    else:
        is_int = np.issubdtype(bits.dtype, np.integer)
    if not is_int:
        raise CwhawqError(f"{where}: bits has dtype {bits.dtype}; pass an integer array")
    if out_channels and (int(bits.min()) < MIN_BITS or int(bits.max()) > MAX_BITS):
        raise CwhawqError(
            f"{where}: bit-widths range over [{int(bits.min())}, {int(bits.max())}]; "
            f"keep them in [{MIN_BITS}, {MAX_BITS}]"
        )


class _ChannelGrids:
    """Every candidate grid of one weight, precomputed so that quantizing costs one lookup and five elementwise ops.

    For each channel c and bit-width b the table holds s = max|w_c| / L_b, the divisor, L_b and -L_b. An all-zero
    channel has s = 0: its divisor is 1 instead, and multiplying by the true scale 0 keeps it exactly 0.
    """

    __slots__ = ("original", "table", "lookup_shape")

    def __init__(self, weight: torch.Tensor) -> None:
        self.original = weight.detach().clone()
        out_channels = weight.shape[0]
        max_abs = self.original.abs().reshape(out_channels, -1).amax(dim=1)
        levels = torch.tensor(_LEVELS, dtype=weight.dtype, device=weight.device).expand(out_channels, -1)
        scale = max_abs[:, None] / levels  # columns 0 and 1 (L = 0) are never looked up
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.table = torch.stack([scale, divisor, levels, -levels], dim=1)  # (out, 4, 17)
        self.lookup_shape = (out_channels, 4) + (1,) * (weight.dim() - 1)

    def codes(self, bits: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The integer codes clamp(round(w / s), -L, L) (in the weight's dtype, written into ``out`` if given) and
        the per-channel scales s, broadcastable against them."""
        index = bits.view(-1, 1, 1).expand(-1, 4, 1)
        scale, divisor, levels, neg_levels = self.table.gather(2, index).view(self.lookup_shape).unbind(1)
        q = torch.div(self.original, divisor, out=out)
        q.round_()
        # clamp(q, -L, L) by hand: torch.clamp with tensor bounds is several times slower than minimum + maximum.
        torch.minimum(q, levels, out=q)
        torch.maximum(q, neg_levels, out=q)
        return q, scale

    def quantize(self, bits: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """clamp(round(w / s), -L, L) * s per channel, written into ``out`` (a new tensor if None)."""
        q, scale = self.codes(bits, out=out)
        return q.mul_(scale)


def _checked_grids(weight: torch.Tensor, bits: torch.Tensor, where: str) -> tuple[_ChannelGrids, torch.Tensor]:
    """The grids of one weight and its bits as a long tensor on the weight's device, after checking both."""
    if weight.dim() == 0:
        raise CwhawqError("weight is a scalar; pass a tensor whose dim 0 is the output channel")
    bits = torch.as_tensor(bits)
    _check_bits(bits, weight.shape[0], where)
    return _ChannelGrids(weight), bits.to(device=weight.device, dtype=torch.long)


def quantize_per_channel(weight: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Symmetric uniform fake quantization of ``weight`` with ``bits[c]`` bits for output channel c (dim 0).

    s_c = max|w_c| / (2**(b_c-1) - 1); q = clamp(round(w / s_c), -L_c, L_c) * s_c. Vectorized over channels;
    all-zero channels stay exactly zero. Returns a new tensor of the weight's dtype; ``weight`` is not modified.
    """
    with torch.no_grad():
        grids, bits = _checked_grids(weight, bits, "quantize_per_channel")
        return grids.quantize(bits)


def integer_codes(weight: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What a deployment stores for ``weight`` quantized as `quantize_per_channel` does: integer codes and one
    scale per output channel, with ``codes * scales.view(-1, 1, ...) == quantize_per_channel(weight, bits)``.

    Codes are int8 where every channel has at most 8 bits, int16 otherwise (a container, not a bit-packing:
    a b-bit channel's codes lie in [-(2**(b-1) - 1), 2**(b-1) - 1]); scales have the weight's dtype.
    """
    with torch.no_grad():
        grids, bits = _checked_grids(weight, bits, "integer_codes")
        codes, scale = grids.codes(bits)
    dtype = torch.int8 if weight.shape[0] == 0 or int(bits.max()) <= 8 else torch.int16
    return codes.to(dtype), scale.reshape(-1)


class _Slot:
    """One managed layer: its live weight and the precomputed grids of its original values."""

    __slots__ = ("weight", "grids")

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.grids = _ChannelGrids(weight)


class WeightQuantizer:
    """Fake-quantizes a model's layers in place from a per-channel assignment, and restores them bit-exactly.

    The original weights are copied at construction; while the quantizer is in use it owns those weights, so do not
    train or edit them in between (construct a new quantizer after changing the model).
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo]) -> None:
        """Snapshot the weights of ``layers`` (by name in ``model``) and precompute every per-channel grid."""
        self.model = model
        self._slots: dict[str, _Slot] = {}
        owners: dict[int, str] = {}
        for layer in layers:
            weight = layer_weight(model, layer.name)
            if weight.shape[0] != layer.out_channels:
                raise CwhawqError(
                    f"layer '{layer.name}' has no weight with {layer.out_channels} output channels; "
                    "rediscover the layers on this model"
                )
            # Two layers sharing one tensor would overwrite each other's quantized values.
            if weight.data_ptr() in owners:
                raise CwhawqError(
                    f"layers '{owners[weight.data_ptr()]}' and '{layer.name}' share one weight tensor; "
                    "untie them or list only one of them"
                )
            owners[weight.data_ptr()] = layer.name
            self._slots[layer.name] = _Slot(weight)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the layers this quantizer manages, in the order given."""
        return tuple(self._slots)

    def original_weight(self, name: str) -> torch.Tensor:
        """The unquantized weight of layer `name`, as it was when the quantizer was constructed (do not modify)."""
        slot = self._slots.get(name)
        if slot is None:
            raise CwhawqError(f"unknown layer '{name}'; use one of {list(self._slots)}")
        return slot.grids.original

    def _checked(self, name: str, bits: np.ndarray) -> torch.Tensor | None:
        """Validate one layer's bits: a long tensor on the weight's device, or None to keep the layer at FP32."""
        slot = self._slots.get(name)
        if slot is None:
            raise CwhawqError(f"assignment names unknown layer '{name}'; use one of {list(self._slots)}")
        bits = np.asarray(bits)
        out_channels = slot.weight.shape[0]
        if bits.shape == (out_channels,) and out_channels and np.all(bits == FP32_LAYER_BITS):
            return None
        _check_bits(bits, out_channels, f"layer '{name}'")
        return torch.from_numpy(bits.astype(np.int64, copy=False)).to(slot.weight.device)

    def _set(self, name: str, bits: torch.Tensor | None) -> None:
        slot = self._slots[name]
        if bits is None:
            slot.weight.data.copy_(slot.grids.original)
        else:
            slot.grids.quantize(bits, out=slot.weight.data)

    def apply(self, assignment: Mapping[str, np.ndarray]) -> None:
        """Quantize every listed layer in place with its per-channel bits; all other managed layers get their originals.

        Bits are in [2, 16] per channel, or 32 on every channel of a layer to keep it at FP32. Everything is
        validated first, so an invalid assignment leaves the model untouched.
        """
        checked = {name: self._checked(name, bits) for name, bits in assignment.items()}
        with torch.no_grad():
            for name in self._slots:
                self._set(name, checked.get(name))

    def apply_layer(self, name: str, bits: np.ndarray) -> None:
        """Quantize one layer in place with its per-channel bits (as in apply); the other layers stay as they are."""
        checked = self._checked(name, bits)
        with torch.no_grad():
            self._set(name, checked)

    def restore(self) -> None:
        """Put back the original weights of every managed layer, bit for bit."""
        with torch.no_grad():
            for slot in self._slots.values():
                slot.weight.data.copy_(slot.grids.original)

    @contextmanager
    def quantized(self, assignment: Mapping[str, np.ndarray]) -> Iterator[nn.Module]:
        """Context manager: apply ``assignment``, yield the model, restore the originals on exit (even on error)."""
        self.apply(assignment)
        try:
            yield self.model
        finally:
            self.restore()
