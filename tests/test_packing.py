"""Tests for cwhawq.packing: b-bit codes stored in exactly b bits each, and read back unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.packing import PACKED_BITS, pack_codes, packed_size, unpack_codes


@st.composite
def codes_and_width(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A width from PACKED_BITS and codes anywhere in its symmetric range, extremes included."""
    bits = draw(st.sampled_from(list(PACKED_BITS)))
    limit = 2 ** (bits - 1) - 1
    values = draw(st.lists(st.integers(-limit, limit) | st.sampled_from([-limit, limit]), max_size=200))
    return np.array(values, dtype=np.int64), bits


@settings(max_examples=200, deadline=None)
@given(codes_and_width())
def test_codes_round_trip_in_exactly_their_bits(case: tuple[np.ndarray, int]) -> None:
    codes, bits = case
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.size == packed_size(codes.size, bits) == -(-codes.size * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, codes.size), codes)


def test_codes_are_read_in_c_order_and_packed_least_significant_bit_first() -> None:
    # 3 bits: offset 3, so the codes are stored as 2, 4, 3, 5 = 010, 100, 011, 101 (read from the right)
    packed = [0b11_100_010, 0b1010]
    assert np.array_equal(pack_codes(np.array([[-1, 1], [0, 2]]), 3), packed)
    assert np.array_equal(unpack_codes(np.array(packed, dtype=np.uint8), 3, 4), [-1, 1, 0, 2])


def test_what_cannot_be_packed_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the symmetric 2-bit range"):
        pack_codes(np.array([2]), 2)
    with pytest.raises(ValueError, match="outside the symmetric 4-bit range"):
        pack_codes(np.array([-8]), 4)
    with pytest.raises(ValueError, match="cannot pack 17-bit codes"):
        pack_codes(np.array([0]), 17)
    with pytest.raises(ValueError, match="cannot hold exactly 5 codes of 3 bits"):
        unpack_codes(np.zeros(1, dtype=np.uint8), 3, 5)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 100])
def test_chunks_pack_as_one_stream(monkeypatch, count: int) -> None:
    codes = np.random.default_rng(count).integers(-3, 4, size=count)
    whole = pack_codes(codes, 3)
    monkeypatch.setattr("cwhawq.packing.CHUNK", 8)
    assert np.array_equal(pack_codes(codes, 3), whole)
    assert np.array_equal(unpack_codes(whole, 3, count), codes)
