"""Tests for cwhawq.allocation: largest-remainder counts and trace-ordered per-channel bits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.allocation import (
    bits_from_counts,
    bits_from_ratios,
    largest_remainder_counts,
    trace_order,
    validate_bit_widths,
)
from cwhawq.errors import CwhawqError

ratio_lists = st.lists(st.one_of(st.just(0.0), st.floats(0.0, 10.0)), min_size=1, max_size=6).filter(
    lambda r: sum(r) > 0
)
trace_lists = st.lists(
    st.one_of(st.sampled_from([0.0, -1.0, 1.0]), st.floats(-1e6, 1e6)), min_size=1, max_size=64
)
bit_width_sets = st.lists(st.integers(2, 16), min_size=1, max_size=6, unique=True).map(sorted)


# --- largest_remainder_counts ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(ratio_lists, st.integers(0, 5000))
def test_counts_sum_to_total_and_stay_within_one_of_quota(ratios: list[float], total: int) -> None:
    r = np.array(ratios)
    counts = largest_remainder_counts(r, total)
    quotas = r / r.sum() * total
    assert counts.dtype.kind == "i" and counts.sum() == total
    assert np.all(counts >= np.floor(quotas - 1e-9)) and np.all(counts <= np.ceil(quotas + 1e-9))
    assert np.all(counts[r == 0] == 0)


@settings(max_examples=100, deadline=None)
@given(ratio_lists, st.integers(0, 500), st.floats(0.01, 100.0))
def test_counts_ignore_the_scale_of_the_ratios(ratios: list[float], total: int, factor: float) -> None:
    r = np.array(ratios)
    scaled = r * factor
    if np.all(scaled[r > 0] > 0):  # scaling must not underflow a ratio to zero
        assert np.array_equal(largest_remainder_counts(r, total), largest_remainder_counts(scaled, total))


def test_counts_break_float_noise_ties_toward_higher_index() -> None:
    # 0.1 / 0.4 * 2 and 0.3 / 0.4 * 2 are 0.5 and 1.5 only up to rounding; the tie must still go to the higher index.
    for factor in (0.1, 0.3, 0.7, 1.1, 3.3, 1e-3):
        assert largest_remainder_counts(np.array([1.0, 3.0]) * factor, 2).tolist() == [0, 2]
    # Quotas 1/3, 1/3, 16 + 1/3: the big quota's fractional part comes out a hair smaller unless ties are snapped.
    assert largest_remainder_counts(np.array([1.0, 1.0, 49.0]), 17).tolist() == [0, 0, 17]


def test_counts_hand_computed() -> None:
    assert largest_remainder_counts(np.array([0.3, 0.7]), 10).tolist() == [3, 7]
    assert largest_remainder_counts(np.array([1.0, 1.0, 1.0]), 10).tolist() == [3, 3, 4]  # tie -> higher index
    assert largest_remainder_counts(np.array([1.0, 1.0, 1.0]), 11).tolist() == [3, 4, 4]
    assert largest_remainder_counts(np.array([0.45, 0.35, 0.2]), 7).tolist() == [3, 3, 1]  # 3.15, 2.45, 1.4
    assert largest_remainder_counts(np.array([0.0, 2.0, 0.0]), 5).tolist() == [0, 5, 0]
    assert largest_remainder_counts(np.array([0.1, 0.2, 0.7]), 0).tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("ratios", "total"),
    [([], 3), ([0.0, 0.0], 3), ([-0.1, 1.0], 3), ([np.nan, 1.0], 3), ([np.inf, 1.0], 3), ([[0.5, 0.5]], 3),
     ([0.5, 0.5], -1), ([0.5, 0.5], 2.0)],
)
def test_counts_reject_invalid_input(ratios: list, total: object) -> None:
    with pytest.raises(CwhawqError):
        largest_remainder_counts(np.array(ratios), total)  # type: ignore[arg-type]


# --- trace_order and bits -------------------------------------------------------------------------------------------


def test_trace_order_descending_with_stable_ties_and_negative_traces() -> None:
    traces = np.array([0.5, -2.0, 3.0, 0.5, -0.1, 3.0])
    assert trace_order(traces).tolist() == [2, 5, 0, 3, 4, 1]


def test_trace_order_rejects_nan_and_2d() -> None:
    with pytest.raises(CwhawqError):
        trace_order(np.array([1.0, np.nan]))
    with pytest.raises(CwhawqError):
        trace_order(np.ones((2, 2)))


@settings(max_examples=300, deadline=None)
@given(trace_lists, st.data(), bit_width_sets)
def test_higher_trace_never_gets_fewer_bits(traces: list[float], data: st.DataObject, widths: list[int]) -> None:
    t = np.array(traces)
    ratios = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(widths), max_size=len(widths))))
    if ratios.sum() == 0:
        ratios[0] = 1.0
    bits = bits_from_ratios(t, ratios, widths)
    assert bits.shape == t.shape and set(bits.tolist()) <= set(widths)
    higher = t[:, None] > t[None, :]
    assert np.all((bits[:, None] >= bits[None, :]) | ~higher)
    counts = largest_remainder_counts(ratios, t.size)
    assert [int(np.sum(bits == w)) for w in widths] == counts.tolist()


def test_bits_from_counts_hand_computed() -> None:
    traces = np.array([0.1, 5.0, -3.0, 2.0, 2.0])
    order = trace_order(traces)  # [1, 3, 4, 0, 2]
    bits = bits_from_counts(order, np.array([2, 1, 2]), (2, 4, 8))
    assert bits.tolist() == [2, 8, 2, 8, 4]
    assert bits_from_ratios(traces, np.array([0.4, 0.2, 0.4]), (2, 4, 8)).tolist() == [2, 8, 2, 8, 4]


def test_bits_from_counts_rejects_inconsistent_input() -> None:
    order = np.arange(4)
    with pytest.raises(CwhawqError, match="sum"):
        bits_from_counts(order, np.array([1, 1]), (4, 8))
    with pytest.raises(CwhawqError, match="one per bit-width"):
        bits_from_counts(order, np.array([1, 1, 2]), (4, 8))
    with pytest.raises(CwhawqError, match="permutation"):
        bits_from_counts(np.array([0, 0, 1, 2]), np.array([2, 2]), (4, 8))
    with pytest.raises(CwhawqError, match="one ratio per bit-width"):
        bits_from_ratios(np.ones(4), np.array([0.5, 0.5, 0.0]), (4, 8))


@pytest.mark.parametrize("widths", [(), (1, 4), (4, 17), (8, 4), (4, 4), (2.0, 4)])
def test_validate_bit_widths_rejects(widths: tuple) -> None:
    with pytest.raises(CwhawqError):
        validate_bit_widths(widths)


def test_validate_bit_widths_accepts_numpy_ints() -> None:
    assert validate_bit_widths(np.array([2, 3, 8])) == (2, 3, 8)
