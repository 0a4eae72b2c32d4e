"""Weight storage cost of a per-channel bit assignment, and the size budget a search must meet."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from cwhawq.allocation import validate_bit_widths
from cwhawq.errors import CwhawqError
from cwhawq.layers import LayerInfo

FP32_BITS = 32
SCALE_BITS = 32  # one FP32 scale per channel
BITS_PER_MEGABYTE = 8 * 10**6


def _exact(value: float, what: str) -> Fraction:
    """The decimal value the user typed, as an exact fraction, so floor(2.3 * n) is not off by one from 2.29999...."""
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        raise CwhawqError(f"{what} must be a finite number, got {value!r}")
    if value <= 0:
        raise CwhawqError(f"{what} must be positive, got {value!r}")
    return Fraction(repr(float(value))) if isinstance(value, (float, np.floating)) else Fraction(int(value))


def _n_weights(layers: Sequence[LayerInfo]) -> int:
    n = sum(layer.params for layer in layers)
    if n <= 0:
        raise CwhawqError("the layer list holds no weights; discover the layers of a model with quantizable layers")
    return n


def layer_weight_bits(layer: LayerInfo, channel_bits: np.ndarray | None) -> int:
    """Storage bits of one layer's weights: sum of channel bits * params_per_channel; a pinned layer costs pin * params
    whatever ``channel_bits`` says (it may then be None)."""
    if layer.pinned_bits is not None:
        return layer.pinned_bits * layer.params
    bits = np.asarray(channel_bits)
    if bits.shape != (layer.out_channels,) or not np.issubdtype(bits.dtype, np.integer):
        raise CwhawqError(
            f"layer '{layer.name}' needs {layer.out_channels} integer bit-widths, got shape {bits.shape} "
            f"dtype {bits.dtype}; give one bit-width per output channel"
        )
    return int(bits.sum(dtype=np.int64)) * layer.params_per_channel


def assignment_bits(layers: Sequence[LayerInfo], assignment: Mapping[str, np.ndarray]) -> int:
    """Total weight storage bits. Pinned layers cost their pin; layers absent from the assignment stay FP32.

    This mirrors WeightQuantizer.apply, which leaves unlisted layers at their original FP32 weights.
    """
    known = {layer.name for layer in layers}
    unknown = [name for name in assignment if name not in known]
    if unknown:
        raise CwhawqError(f"assignment names unknown layers {unknown}; use the names from discover_layers")
    total = 0
    for layer in layers:
        if layer.pinned_bits is not None or layer.name in assignment:
            total += layer_weight_bits(layer, assignment.get(layer.name))
        else:
            total += FP32_BITS * layer.params
    return total


def fp32_bits(layers: Sequence[LayerInfo]) -> int:
    """Storage bits of all layers' weights at FP32."""
    return FP32_BITS * sum(layer.params for layer in layers)


def scale_overhead_bits(layers: Sequence[LayerInfo]) -> int:
    """Bits for the per-channel FP32 scales (one per output channel); reported separately from weight bits."""
    return SCALE_BITS * sum(layer.out_channels for layer in layers)


def average_bits(layers: Sequence[LayerInfo], assignment: Mapping[str, np.ndarray]) -> float:
    """Average weight bit-width: assignment_bits / number of weights."""
    return assignment_bits(layers, assignment) / _n_weights(layers)


def minimum_bits(layers: Sequence[LayerInfo], bit_widths: Sequence[int]) -> int:
    """Smallest reachable weight storage: every unpinned channel at the lowest candidate bit-width."""
    lowest = validate_bit_widths(bit_widths)[0]
    return sum((layer.pinned_bits if layer.pinned_bits is not None else lowest) * layer.params for layer in layers)


@dataclass(frozen=True)
class Budget:
    """A limit on the total weight storage, in bits (scale overhead not included)."""

    total_bits: int

    def __post_init__(self) -> None:
        is_int = isinstance(self.total_bits, (int, np.integer)) and not isinstance(self.total_bits, bool)
        if not is_int or self.total_bits < 0:
            raise CwhawqError(f"a budget must be a non-negative whole number of bits, got {self.total_bits!r}")

    @classmethod
    def from_average_bits(cls, layers: Sequence[LayerInfo], avg_bits: float) -> Budget:
        """Budget of ``avg_bits`` bits per weight: floor(avg_bits * number of weights)."""
        return cls(math.floor(_exact(avg_bits, "the average bit-width budget") * _n_weights(layers)))

    @classmethod
    def from_megabytes(cls, mb: float) -> Budget:
        """Budget of ``mb`` megabytes (1 MB = 10**6 bytes): floor(mb * 8e6)."""
        return cls(math.floor(_exact(mb, "the megabyte budget") * BITS_PER_MEGABYTE))

    @classmethod
    def from_compression(cls, layers: Sequence[LayerInfo], ratio: float) -> Budget:
        """Budget of the FP32 size divided by ``ratio``: floor(fp32_bits / ratio)."""
        return cls(math.floor(fp32_bits(layers) / _exact(ratio, "the compression ratio")))

    def average_bits(self, layers: Sequence[LayerInfo]) -> float:
        """The budget expressed as bits per weight of ``layers``, for messages."""
        return self.total_bits / _n_weights(layers)

    @property
    def megabytes(self) -> float:
        """The budget in megabytes (10**6 bytes)."""
        return self.total_bits / BITS_PER_MEGABYTE

    def check(self, layers: Sequence[LayerInfo], bit_widths: Sequence[int]) -> None:
        """Raise CwhawqError if no assignment can meet the budget, or if the budget does not compress at all."""
        lowest = validate_bit_widths(bit_widths)[0]
        avg = self.average_bits(layers)
        smallest = minimum_bits(layers, bit_widths)
        if self.total_bits < smallest:
            pins = ", pinned layers at their pins" if any(layer.pinned_bits is not None for layer in layers) else ""
            raise CwhawqError(
                f"budget of {avg:.2f} average bits ({self.megabytes:.4g} MB) is below the smallest possible size "
                f"({smallest / _n_weights(layers):.2f} bits, {smallest / BITS_PER_MEGABYTE:.4g} MB: every channel at "
                f"{lowest} bits{pins}); raise the budget or add a lower candidate bit-width"
            )
        if self.total_bits >= fp32_bits(layers):
            raise CwhawqError(
                f"budget of {avg:.2f} average bits ({self.megabytes:.4g} MB) is at or above the FP32 size "
                f"({fp32_bits(layers) / BITS_PER_MEGABYTE:.4g} MB); give a smaller budget"
            )
