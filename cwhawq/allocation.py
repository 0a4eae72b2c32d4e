"""Turn per-layer bit-width ratios into per-channel bit-widths, ranked by Hessian trace."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cwhawq.errors import CwhawqError

MIN_BITS = 2
MAX_BITS = 16
#: Bits that keep a whole layer at its original FP32 weights (a layer pinned at 32); it costs 32 bits per weight too.
FP32_LAYER_BITS = 32

# Quotas are rounded to this many decimals before use, so exact ratios such as (0.3, 0.7) of 10 give (3, 7) and
# equal fractional parts tie exactly, whatever the floating-point noise of the normalisation.
_DECIMALS = 9


def validate_bit_widths(bit_widths: Sequence[int]) -> tuple[int, ...]:
    """The candidate bit-widths as a tuple; CwhawqError unless they are strictly ascending ints in [2, 16]."""
    widths = tuple(bit_widths)
    if not widths:
        raise CwhawqError("no candidate bit-widths given; pass at least one, e.g. 2,4,8")
    if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in widths):
        raise CwhawqError(f"candidate bit-widths {widths} must be integers; pass whole numbers such as 2,4,8")
    if any(b < MIN_BITS or b > MAX_BITS for b in widths):
        raise CwhawqError(f"candidate bit-widths {widths} must lie in [{MIN_BITS}, {MAX_BITS}]; drop the others")
    if any(a >= b for a, b in zip(widths, widths[1:])):
        raise CwhawqError(f"candidate bit-widths {widths} must be strictly ascending; sort them and drop duplicates")
    return tuple(int(b) for b in widths)


def largest_remainder_counts(ratios: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` items into integer counts proportional to ``ratios`` (Hamilton / largest-remainder method).

    Ratios must be non-negative with a positive sum; they are normalised here. Every count is the floor or the ceiling
    of its quota ``ratio / sum(ratios) * total`` and the counts sum exactly to ``total``. Leftover items go to the
    largest fractional parts; equal fractional parts are broken toward the higher index (with ascending bit-widths,
    toward more bits), so the result is deterministic. A zero ratio always gets a zero count.
    """
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise CwhawqError(f"ratios must be a non-empty 1-D array, got shape {r.shape}; pass one ratio per bit-width")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise CwhawqError(f"ratios {r.tolist()} must be finite and non-negative; clip the agent's action to [0, inf)")
    if r.sum() <= 0:
        raise CwhawqError("ratios sum to zero; give at least one bit-width a positive ratio")
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
        raise CwhawqError(f"total must be a non-negative integer, got {total!r}; pass the number of channels")
    return hamilton_counts(r / r.sum(), int(total))


def hamilton_counts(shares: np.ndarray, total: int) -> np.ndarray:
    """The unchecked core of `largest_remainder_counts`: `shares` must already be non-negative and sum to 1.

    For hot loops (the environment calls it every step) whose inputs are valid by construction.
    """
    quotas = np.round(shares * total, _DECIMALS)
    counts = np.floor(quotas).astype(np.int64)
    leftover = total - int(counts.sum())
    if leftover:
        fractions = np.round(quotas - counts, _DECIMALS)
        # Primary key: larger fractional part first; secondary: higher index first. Zero-share entries have
        # fraction 0 and sort last, behind every entry that is owed a seat.
        ranked = np.lexsort((-np.arange(len(shares)), -fractions))
        counts[ranked[:leftover]] += 1
    return counts


def trace_order(traces: np.ndarray) -> np.ndarray:
    """Channel indices by descending trace; equal traces keep index order. Negative traces rank below positive ones."""
    t = np.asarray(traces, dtype=np.float64)
    if t.ndim != 1:
        raise CwhawqError(f"traces must be a 1-D array (one per channel), got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise CwhawqError("traces contain NaN or infinity; re-estimate them with more probes or a smaller batch")
    return np.argsort(-t, kind="stable")


def bits_from_counts(order: np.ndarray, counts: np.ndarray, bit_widths: Sequence[int]) -> np.ndarray:
    """Per-channel bits: ``counts[k]`` channels get ``bit_widths[k]``, the first channels of ``order`` the most bits."""
    widths = validate_bit_widths(bit_widths)
    order = np.asarray(order)
    counts = np.asarray(counts)
    n = order.size
    if order.ndim != 1 or not np.array_equal(np.sort(order), np.arange(n)):
        raise CwhawqError("order must be a permutation of the channel indices; build it with trace_order")
    if counts.shape != (len(widths),) or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
        raise CwhawqError(
            f"counts must be {len(widths)} non-negative integers, one per bit-width; got {counts.tolist()}"
        )
    if int(counts.sum()) != n:
        raise CwhawqError(f"counts sum to {int(counts.sum())} but there are {n} channels; use largest_remainder_counts")
    return place_bits(order, counts, np.asarray(widths, dtype=np.int64))


def place_bits(order: np.ndarray, counts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The unchecked core of `bits_from_counts`, for hot loops whose order, counts and widths are valid."""
    bits = np.empty(len(order), dtype=np.int64)
    bits[order] = np.repeat(widths[::-1], counts[::-1])
    return bits


def bits_from_ratios(traces: np.ndarray, ratios: np.ndarray, bit_widths: Sequence[int]) -> np.ndarray:
    """Per-channel bits for one layer from its channel traces and the ratio of channels at each bit-width."""
    widths = validate_bit_widths(bit_widths)
    if np.shape(ratios) != (len(widths),):
        raise CwhawqError(
            f"got {np.size(ratios)} ratios for {len(widths)} bit-widths {widths}; give one ratio per bit-width"
        )
    order = trace_order(traces)
    return bits_from_counts(order, largest_remainder_counts(ratios, order.size), widths)
