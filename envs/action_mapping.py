"""Turning one layer's action into channel counts per bit-width that keep the model inside its budget.

The guard follows AMC rather than HAQ: the budget is enforced at every step, not repaired after the episode.
A layer may spend at most what leaves the remaining layers room at the lowest bit-width (so the final model
never exceeds the budget) and at least what the remaining layers could not absorb at the highest bit-width
(so the budget is used up to rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cwhawq.allocation import hamilton_counts


def action_to_ratios(action: np.ndarray) -> np.ndarray:
    """Map an action in [-1, 1]^K to ratios over the K candidate bit-widths that sum to 1.

    Affine per coordinate, then normalised: the all-zero action means equal shares, and a one-hot corner
    (one coordinate at 1, the rest at -1) puts every channel at one bit-width.
    """
    weights = np.minimum(np.maximum(np.asarray(action, dtype=np.float64), -1.0), 1.0)
    weights = (weights + 1.0) / 2.0
    total = weights.sum()
    if total <= 1e-12:
        return np.full(len(weights), 1.0 / len(weights))
    return weights / total


def level_action_to_ratios(action: np.ndarray, n_bit_widths: int) -> np.ndarray:
    """Map a scalar action in [-1, 1] to a fractional position on the bit-width ladder, split over two neighbours.

    The position ``p = (a + 1) / 2 * (K - 1)`` puts a share ``1 - frac(p)`` of the channels at width
    ``floor(p)`` and ``frac(p)`` at the next one up: the ends of the interval are all-lowest and all-highest,
    whole positions are one width for the layer (HAQ's layer-wise choice), and the rest mixes two neighbouring
    widths channel by channel.
    """
    ratios = np.zeros(n_bit_widths)
    if n_bit_widths == 1:
        ratios[0] = 1.0
        return ratios
    position = (float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0)) + 1.0) / 2.0 * (n_bit_widths - 1)
    lower = min(int(position), n_bit_widths - 2)
    ratios[lower] = lower + 1 - position
    ratios[lower + 1] = position - lower
    return ratios


def level_action_for(counts: np.ndarray) -> np.ndarray:
    """The level action whose ratios are `counts` (channels per bit-width) when they use at most two neighbouring
    widths: the channels' mean position on the ladder. Otherwise the level with the same mean position."""
    counts = np.asarray(counts, dtype=np.float64)
    steps = len(counts) - 1
    if steps == 0:
        return np.zeros(1, dtype=np.float32)
    return np.array([2.0 * (counts @ np.arange(steps + 1)) / (counts.sum() * steps) - 1.0], dtype=np.float32)


def layer_action_to_ratios(action: np.ndarray, n_bit_widths: int) -> np.ndarray:
    """Map a scalar action in [-1, 1] to a one-hot ratio vector with HAQ's equal-width intervals."""
    position = (float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0)) + 1.0) / 2.0
    ratios = np.zeros(n_bit_widths)
    ratios[min(int(position * n_bit_widths), n_bit_widths - 1)] = 1.0
    return ratios


def fit_counts(
    ratios: np.ndarray,
    n_channels: int,
    params_per_channel: int,
    bit_widths: Sequence[int],
    low_bits: float,
    high_bits: float,
) -> np.ndarray:
    """Channel counts per bit-width, close to `ratios`, whose storage lies in [low_bits, high_bits].

    `high_bits` is a hard limit (it must allow every channel at the lowest width); `low_bits` is met whenever a
    count vector within the high limit allows it. Ratios are first mixed toward all-lowest (or all-highest)
    just enough that their continuous cost fits, then rounded by largest remainder, then corrected one channel
    at a time for the rounding error.
    """
    widths = np.asarray(bit_widths, dtype=np.int64)
    unit = n_channels * params_per_channel
    lowest, highest = unit * int(widths[0]), unit * int(widths[-1])
    if high_bits < lowest:
        raise ValueError("high_bits leaves no room for the lowest bit-width; the budget guard is broken")
    ratios = np.asarray(ratios, dtype=np.float64)
    cost = unit * float(ratios @ widths)
    if cost > high_bits:
        mix = (cost - high_bits) / (cost - lowest)
        ratios = (1.0 - mix) * ratios
        ratios[0] += mix
    elif cost < low_bits and highest > cost:
        mix = min(1.0, (low_bits - cost) / (highest - cost))
        ratios = (1.0 - mix) * ratios
        ratios[-1] += mix
    counts = hamilton_counts(ratios, n_channels)
    cost = params_per_channel * int(counts @ widths)
    if low_bits <= cost <= high_bits:
        return counts
    steps = (params_per_channel * np.diff(widths)).tolist()
    while cost > high_bits:
        level = int(np.flatnonzero(counts[1:])[0]) + 1
        counts[level] -= 1
        counts[level - 1] += 1
        cost -= steps[level - 1]
    while cost < low_bits:
        candidates = [k for k in range(len(widths) - 2, -1, -1) if counts[k] and cost + steps[k] <= high_bits]
        if not candidates:
            break
        level = candidates[0]
        counts[level] -= 1
        counts[level + 1] += 1
        cost += steps[level]
    return counts


def fit_uniform(
    ratios: np.ndarray,
    n_channels: int,
    params_per_channel: int,
    bit_widths: Sequence[int],
    low_bits: float,
    high_bits: float,
) -> np.ndarray:
    """Counts that put every channel at one bit-width: the chosen one (one-hot `ratios`), moved down until
    storage fits under `high_bits`, or up while it stays under `high_bits` and is below `low_bits`."""
    unit = n_channels * params_per_channel
    level = int(np.argmax(ratios))
    while level > 0 and unit * bit_widths[level] > high_bits:
        level -= 1
    while (
        level < len(bit_widths) - 1
        and unit * bit_widths[level] < low_bits
        and unit * bit_widths[level + 1] <= high_bits
    ):
        level += 1
    counts = np.zeros(len(bit_widths), dtype=np.int64)
    counts[level] = n_channels
    return counts
