"""The baseline registry, and every method on the real digits problem."""

import numpy as np
import pytest

from cwhawq.baselines import DETERMINISTIC_METHODS, run_method
from cwhawq.baselines.hawq_v2 import hawq_v2_frontier
from cwhawq.baselines.perturbation import omega_objective, perturbation_table
from cwhawq.errors import CwhawqError

NAMES = ["uniform", "hawq-v2", "ilp-layer", "ilp-channel", "greedy-channel"]


def test_registry_names():
    assert list(DETERMINISTIC_METHODS) == NAMES


def test_unknown_name_lists_the_choices(digits_problem):
    with pytest.raises(CwhawqError, match="unknown baseline 'haq'.*greedy-channel"):
        run_method(digits_problem, "haq")


@pytest.fixture(scope="module")
def digits_results(digits_problem):
    return {name: run_method(digits_problem, name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_full_assignment_within_budget(digits_problem, digits_results, name):
    assignment = digits_results[name]
    digits_problem.check_assignment(assignment)
    assert list(assignment) == [layer.name for layer in digits_problem.layers]
    for layer in digits_problem.layers:
        bits = assignment[layer.name]
        assert bits.dtype == np.int64 and bits.shape == (layer.out_channels,)
        assert set(bits.tolist()) <= set(digits_problem.bit_widths)


def test_objectives_are_ordered_as_the_search_spaces(digits_problem, digits_results):
    table = perturbation_table(digits_problem)
    omega = {name: omega_objective(digits_problem, a, table) for name, a in digits_results.items()}
    tol = 1e-9 * omega["uniform"]
    # Both layer-wise methods are exact on the same search space.
    assert omega["hawq-v2"] == pytest.approx(omega["ilp-layer"], rel=1e-9)
    assert omega["ilp-layer"] <= omega["uniform"] + tol
    assert omega["ilp-channel"] <= omega["ilp-layer"] + tol
    assert omega["ilp-channel"] <= omega["greedy-channel"] + tol
    assert omega["greedy-channel"] <= omega["uniform"] + tol
    for name in ("hawq-v2", "ilp-layer"):
        assert all(len(set(bits.tolist())) == 1 for bits in digits_results[name].values())


def test_frontier_ends_at_the_hawq_v2_choice(digits_problem, digits_results):
    frontier, offset = hawq_v2_frontier(digits_problem)
    size, omega = frontier.points(offset)[-1]
    assert size == digits_problem.size_bits(digits_results["hawq-v2"]) <= digits_problem.budget.total_bits
    assert omega == pytest.approx(omega_objective(digits_problem, digits_results["hawq-v2"]))
