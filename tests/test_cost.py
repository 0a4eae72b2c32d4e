"""Tests for cwhawq.cost: storage sizes of per-channel assignments and the size budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.cost import (
    FP32_BITS,
    SCALE_BITS,
    Budget,
    assignment_bits,
    average_bits,
    fp32_bits,
    layer_weight_bits,
    minimum_bits,
    scale_overhead_bits,
)
from cwhawq.errors import CwhawqError
from cwhawq.layers import LayerInfo


def layer(name: str, out_channels: int, per_channel: int, pinned: int | None = None) -> LayerInfo:
    """A LayerInfo built directly; only the size fields matter to the cost model."""
    return LayerInfo(
        name=name, kind="conv", dims=2, in_channels=per_channel, out_channels=out_channels, kernel_size=(1, 1),
        stride=(1, 1), groups=1, params=out_channels * per_channel, params_per_channel=per_channel, macs=0,
        input_size=(4, 4), pinned_bits=pinned,
    )


# conv1: 4 channels x 9 weights = 36; fc: 3 channels x 8 weights = 24; 60 weights in all.
LAYERS = [layer("conv1", 4, 9), layer("fc", 3, 8)]
PINNED = [layer("conv1", 4, 9, pinned=8), layer("fc", 3, 8)]


def test_constants() -> None:
    assert FP32_BITS == 32 and SCALE_BITS == 32


def test_layer_weight_bits_hand_computed() -> None:
    assert layer_weight_bits(LAYERS[0], np.array([2, 4, 8, 2])) == (2 + 4 + 8 + 2) * 9
    assert layer_weight_bits(PINNED[0], np.array([2, 2, 2, 2])) == 8 * 36  # pinned cost wins
    assert layer_weight_bits(PINNED[0], None) == 8 * 36


def test_assignment_and_average_bits_hand_computed() -> None:
    assignment = {"conv1": np.array([2, 4, 8, 2]), "fc": np.array([3, 3, 6])}
    assert assignment_bits(LAYERS, assignment) == 144 + 96
    assert average_bits(LAYERS, assignment) == 240 / 60
    assert assignment_bits(PINNED, {"fc": np.array([3, 3, 6])}) == 288 + 96
    assert assignment_bits(PINNED, assignment) == 288 + 96
    # A layer left out of the assignment stays FP32, as WeightQuantizer.apply leaves it.
    assert assignment_bits(LAYERS, {"fc": np.array([3, 3, 6])}) == 32 * 36 + 96


def test_fp32_and_scale_overhead() -> None:
    assert fp32_bits(LAYERS) == 32 * 60
    assert scale_overhead_bits(LAYERS) == 32 * 7


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_assignment_bits_equals_sum_over_weights(data: st.DataObject) -> None:
    layers = [layer(f"l{i}", data.draw(st.integers(1, 20)), data.draw(st.integers(1, 50))) for i in range(3)]
    assignment = {
        lay.name: np.array(
            data.draw(st.lists(st.integers(2, 16), min_size=lay.out_channels, max_size=lay.out_channels))
        )
        for lay in layers
    }
    per_weight = sum(int(np.repeat(assignment[lay.name], lay.params_per_channel).sum()) for lay in layers)
    assert assignment_bits(layers, assignment) == per_weight


def test_assignment_errors() -> None:
    with pytest.raises(CwhawqError, match="unknown layers"):
        assignment_bits(LAYERS, {"nope": np.array([2])})
    with pytest.raises(CwhawqError, match="one bit-width per output channel"):
        assignment_bits(LAYERS, {"conv1": np.array([2, 2, 2])})
    with pytest.raises(CwhawqError, match="integer"):
        assignment_bits(LAYERS, {"conv1": np.array([2.0, 2.0, 2.0, 2.0])})


def test_minimum_bits() -> None:
    assert minimum_bits(LAYERS, (2, 4, 8)) == 2 * 60
    assert minimum_bits(PINNED, (3, 4)) == 8 * 36 + 3 * 24


# --- Budget ---------------------------------------------------------------------------------------------------------


def test_budget_conversions_are_exact() -> None:
    assert Budget.from_average_bits(LAYERS, 2.5).total_bits == 150
    assert Budget.from_average_bits(LAYERS, 4.1).total_bits == 246  # 4.1 * 60, not 245 from float noise
    assert Budget.from_average_bits([layer("big", 1000, 1000)], 2.3).total_bits == 2_300_000
    assert Budget.from_average_bits(LAYERS, 2.999).total_bits == 179  # floor(179.94)
    assert Budget.from_megabytes(0.1).total_bits == 800_000
    assert Budget.from_megabytes(1.7).total_bits == 13_600_000
    assert Budget.from_megabytes(2).total_bits == 16_000_000
    assert Budget.from_compression(LAYERS, 8).total_bits == 240
    assert Budget.from_compression(LAYERS, 7).total_bits == 274  # floor(1920 / 7 = 274.28)
    assert Budget.from_compression(LAYERS, 7.5).total_bits == 256


def test_budget_views() -> None:
    budget = Budget(150)
    assert budget.average_bits(LAYERS) == 2.5
    assert Budget(8_000_000).megabytes == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_budget_rejects_bad_numbers(bad: object) -> None:
    with pytest.raises(CwhawqError):
        Budget.from_average_bits(LAYERS, bad)  # type: ignore[arg-type]
    with pytest.raises(CwhawqError):
        Budget.from_megabytes(bad)  # type: ignore[arg-type]
    with pytest.raises(CwhawqError):
        Budget.from_compression(LAYERS, bad)  # type: ignore[arg-type]


def test_budget_rejects_bad_total_and_empty_layers() -> None:
    with pytest.raises(CwhawqError):
        Budget(-1)
    with pytest.raises(CwhawqError):
        Budget(1.5)  # type: ignore[arg-type]
    with pytest.raises(CwhawqError, match="no weights"):
        Budget.from_average_bits([], 4.0)


def test_check_accepts_budgets_between_minimum_and_fp32() -> None:
    Budget(120).check(LAYERS, (2, 4, 8))  # exactly every channel at 2 bits
    Budget(32 * 60 - 1).check(LAYERS, (2, 4, 8))


def test_check_messages() -> None:
    with pytest.raises(CwhawqError) as info:
        Budget.from_average_bits(LAYERS, 1.2).check(LAYERS, (2, 4, 8))
    assert str(info.value) == (
        "budget of 1.20 average bits (9e-06 MB) is below the smallest possible size (2.00 bits, 1.5e-05 MB: every "
        "channel at 2 bits); raise the budget or add a lower candidate bit-width"
    )
    with pytest.raises(CwhawqError) as info:
        Budget.from_average_bits(LAYERS, 32).check(LAYERS, (2, 4, 8))
    assert str(info.value) == (
        "budget of 32.00 average bits (0.00024 MB) is at or above the FP32 size (0.00024 MB); give a smaller budget"
    )
    assert "\n" not in str(info.value)


def test_check_counts_pinned_layers_at_their_pins() -> None:
    smallest = 8 * 36 + 2 * 24  # 336 bits = 5.60 average bits
    Budget(smallest).check(PINNED, (2, 4))
    with pytest.raises(CwhawqError, match=r"5\.60 bits, 4\.2e-05 MB: every channel at 2 bits, pinned layers at their"):
        Budget(smallest - 1).check(PINNED, (2, 4))


def test_check_validates_bit_widths() -> None:
    with pytest.raises(CwhawqError, match="ascending"):
        Budget(500).check(LAYERS, (4, 2))
