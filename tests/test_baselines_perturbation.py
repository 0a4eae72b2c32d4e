"""Omega table: HAWQ-V2's average trace times squared quantization error, per channel and width."""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.baselines.perturbation import channel_orders, layer_perturbation, omega_objective, perturbation_table
from cwhawq.errors import CwhawqError
from tests.baseline_problems import tiny_problem


def reference_omega(weight: np.ndarray, trace: float, bits: int) -> float:
    """The formula written out for one channel, independently of the quantizer module (float32, like the weights)."""
    levels = np.float32(2 ** (bits - 1) - 1)
    scale = np.abs(weight).max() / levels
    q = np.clip(np.round(weight / scale), -levels, levels) * scale
    return max(trace, 0.0) / weight.size * float(((q.astype(np.float64) - weight) ** 2).sum())


def test_matches_the_formula_channel_by_channel():
    traces = {"0": np.array([0.5, 2.0, 1.0]), "2": np.array([3.0, 0.25])}
    problem = tiny_problem(traces=traces)
    table = perturbation_table(problem)
    for layer in problem.layers:
        weight = problem.model.get_submodule(layer.name).weight.detach().numpy()
        assert table[layer.name].shape == (layer.out_channels, len(problem.bit_widths))
        for c in range(layer.out_channels):
            for k, bits in enumerate(problem.bit_widths):
                expected = reference_omega(weight[c], traces[layer.name][c], bits)
                assert table[layer.name][c, k] == pytest.approx(expected, rel=1e-6)


def test_negative_traces_are_clamped_to_zero():
    problem = tiny_problem(traces={"0": np.array([-1.0, 0.0, 1.0]), "2": np.array([-0.5, 2.0])})
    table = perturbation_table(problem)
    assert np.all(table["0"][:2] == 0) and np.all(table["0"][2] > 0)
    assert np.all(table["2"][0] == 0) and np.all(table["2"][1] > 0)


def test_uses_the_current_weights():
    problem = tiny_problem()
    before = perturbation_table(problem)["0"]
    with torch.no_grad():
        problem.model.get_submodule("0").weight.mul_(2.0)
    # Scaling a channel by 2 scales its grid by 2 too, so the squared error grows exactly 4x.
    np.testing.assert_allclose(perturbation_table(problem)["0"], 4 * before, rtol=1e-5)


def test_pinned_layers_are_left_out():
    problem = tiny_problem(pin={"2": 8})
    assert list(perturbation_table(problem)) == ["0"]


def test_missing_traces_raise():
    problem = tiny_problem()
    del problem.traces.traces["2"]
    with pytest.raises(CwhawqError, match="traces"):
        perturbation_table(problem)


def test_layer_level_is_the_channel_sum_and_objective_matches():
    problem = tiny_problem()
    table = perturbation_table(problem)
    per_layer = layer_perturbation(table)
    for k, bits in enumerate(problem.bit_widths):
        expected = sum(per_layer[name][k] for name in table)
        assert omega_objective(problem, problem.uniform_assignment(bits)) == pytest.approx(expected)
    mixed = {"0": np.array([2, 8, 4]), "2": np.array([4, 2])}
    expected = table["0"][0, 0] + table["0"][1, 2] + table["0"][2, 1] + table["2"][0, 1] + table["2"][1, 0]
    assert omega_objective(problem, mixed, table) == pytest.approx(expected)


def test_objective_rejects_non_candidate_widths():
    problem = tiny_problem()
    with pytest.raises(CwhawqError, match="candidate"):
        omega_objective(problem, {"0": np.array([2, 3, 4]), "2": np.array([2, 2])})


def test_digits_table_is_finite_and_non_negative(digits_problem):
    table = perturbation_table(digits_problem)
    assert set(table) == {layer.name for layer in digits_problem.searchable}
    for layer in digits_problem.searchable:
        omega = table[layer.name]
        assert omega.shape == (layer.out_channels, len(digits_problem.bit_widths))
        assert np.all(np.isfinite(omega)) and np.all(omega >= 0)
        negative = digits_problem.traces.traces[layer.name] <= 0
        assert np.all(omega[negative] == 0)
        # More bits give a finer grid; on trained weights the error falls from the lowest to the highest width.
        assert np.all(omega[~negative, 0] > omega[~negative, -1])


def test_trace_order_ranks_by_trace_and_perturbation_order_by_the_error_the_next_width_saves():
    problem = tiny_problem(traces={"0": np.array([1.0, 1.0, 1.0]), "2": np.array([-1.0, 1.0])})
    with torch.no_grad():
        # One weight pattern at three scales: channel 1 is the widest, so it loses most at 2 bits.
        problem.model.get_submodule("0").weight.copy_(torch.tensor([[1.0], [4.0], [2.0]]) * torch.randn(1, 4))
    by_trace = channel_orders(dataclasses.replace(problem, channel_order="trace"))
    assert [order.tolist() for order in by_trace.values()] == [[0, 1, 2], [1, 0]]
    by_error = channel_orders(dataclasses.replace(problem, channel_order="perturbation"))
    assert by_error["0"].tolist() == [1, 2, 0]  # equal traces: by width
    assert by_error["2"].tolist() == [1, 0]  # a negative trace saves nothing, so it comes last


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bit_widths=st.sampled_from([(2, 4, 8), (2, 3), (3, 4, 6)]))
def test_perturbation_order_is_a_permutation_by_falling_gain(seed, bit_widths):
    problem = dataclasses.replace(tiny_problem(seed=seed, bit_widths=bit_widths), channel_order="perturbation")
    table = perturbation_table(problem)
    for name, order in channel_orders(problem).items():
        assert sorted(order.tolist()) == list(range(len(order)))
        gain = table[name][:, 0] - table[name][:, 1]
        assert np.all(np.diff(gain[order]) <= 0), name
