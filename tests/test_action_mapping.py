"""The per-step budget guard: counts stay in bounds and ratios map sensibly."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.allocation import hamilton_counts
from envs.action_mapping import (
    action_to_ratios,
    fit_counts,
    fit_uniform,
    layer_action_to_ratios,
    level_action_for,
    level_action_to_ratios,
)

WIDTHS = (2, 3, 4, 6, 8)


@given(st.lists(st.floats(-3, 3), min_size=1, max_size=6))
def test_ratios_are_a_distribution(action):
    ratios = action_to_ratios(np.array(action))
    assert np.all(ratios >= 0)
    assert np.isclose(ratios.sum(), 1.0)


def test_ratio_corners():
    assert np.allclose(action_to_ratios(np.array([1.0, -1.0, -1.0])), [1, 0, 0])
    assert np.allclose(action_to_ratios(np.zeros(4)), 0.25)
    assert np.allclose(layer_action_to_ratios(np.array([-1.0]), 5), [1, 0, 0, 0, 0])
    assert np.allclose(layer_action_to_ratios(np.array([1.0]), 5), [0, 0, 0, 0, 1])


@given(st.floats(-3, 3), st.integers(1, 7))
def test_level_ratios_are_two_neighbours_with_the_asked_mean(action, n_widths):
    ratios = level_action_to_ratios(np.array([action]), n_widths)
    assert np.all(ratios >= 0) and np.isclose(ratios.sum(), 1.0)
    used = np.flatnonzero(ratios)
    assert len(used) <= 2 and (len(used) < 2 or used[1] == used[0] + 1)
    if n_widths > 1:
        expected = (np.clip(action, -1, 1) + 1) / 2 * (n_widths - 1)
        assert np.isclose(ratios @ np.arange(n_widths), expected)


def test_level_corners():
    assert np.allclose(level_action_to_ratios(np.array([-1.0]), 5), [1, 0, 0, 0, 0])
    assert np.allclose(level_action_to_ratios(np.array([1.0]), 5), [0, 0, 0, 0, 1])
    assert np.allclose(level_action_to_ratios(np.array([0.0]), 5), [0, 0, 1, 0, 0])
    assert np.allclose(level_action_to_ratios(np.array([0.125]), 5), [0, 0, 0.75, 0.25, 0])


@given(n=st.integers(1, 300), lower=st.integers(0, 3), upper_share=st.floats(0, 1))
def test_level_action_for_inverts_neighbouring_counts(n, lower, upper_share):
    counts = np.zeros(5, dtype=np.int64)
    counts[lower + 1] = round(upper_share * n)
    counts[lower] = n - counts[lower + 1]
    ratios = level_action_to_ratios(level_action_for(counts), 5)
    assert hamilton_counts(ratios, n).tolist() == counts.tolist()


@settings(max_examples=300, deadline=None)
@given(
    ratios=st.lists(st.floats(0, 1), min_size=5, max_size=5).filter(lambda r: sum(r) > 1e-6),
    n=st.integers(1, 200),
    ppc=st.integers(1, 50),
    low_frac=st.floats(0, 1),
    high_frac=st.floats(0, 1),
)
def test_fit_counts_respects_bounds(ratios, n, ppc, low_frac, high_frac):
    unit = n * ppc
    high = unit * 2 + high_frac * unit * 6
    low = unit * 2 * low_frac + low_frac * (high - unit * 2)
    counts = fit_counts(np.array(ratios) / sum(ratios), n, ppc, WIDTHS, low, high)
    assert counts.sum() == n and np.all(counts >= 0)
    cost = ppc * int(counts @ np.array(WIDTHS))
    assert cost <= high
    # The low bound is met up to one channel's smallest step.
    assert cost >= low - ppc * 2


def test_fit_counts_keeps_feasible_ratios():
    counts = fit_counts(np.array([0.5, 0, 0, 0, 0.5]), 10, 1, WIDTHS, 0, 1e9)
    assert counts.tolist() == [5, 0, 0, 0, 5]


@settings(max_examples=200, deadline=None)
@given(choice=st.integers(0, 4), n=st.integers(1, 100), ppc=st.integers(1, 20), high_frac=st.floats(0, 1))
def test_fit_uniform_is_one_width_under_the_limit(choice, n, ppc, high_frac):
    high = n * ppc * (2 + 6 * high_frac)
    counts = fit_uniform(np.eye(5)[choice], n, ppc, WIDTHS, 0, high)
    assert np.count_nonzero(counts) == 1 and counts.sum() == n
    assert ppc * int(counts @ np.array(WIDTHS)) <= high
