"""The knapsack view of a problem: group tables, and assignments back from option choices."""

import numpy as np
import pytest

from cwhawq.baselines.groups import GroupTable, assignment_from_choices, group_table, pinned_bits
from cwhawq.baselines.perturbation import omega_objective, perturbation_table
from cwhawq.errors import CwhawqError
from tests.baseline_problems import tiny_problem


@pytest.mark.parametrize("granularity, n_groups", [("layer", 2), ("channel", 5)])
def test_tables_price_assignments_like_the_problem(granularity, n_groups):
    problem = tiny_problem(budget_bits=100)
    table = group_table(problem, granularity)
    assert table.omega.shape == table.sizes.shape == (n_groups, 3)
    assert table.capacity == 100
    choices = np.arange(n_groups) % 3
    assignment = assignment_from_choices(problem, granularity, choices)
    size, omega = table.cost(choices)
    assert size == problem.size_bits(assignment)
    assert omega == pytest.approx(omega_objective(problem, assignment))
    assert all(bits.dtype == np.int64 for bits in assignment.values())


def test_pinned_layers_leave_the_table_and_reduce_the_capacity():
    problem = tiny_problem(budget_bits=100, pin={"0": 8})
    assert pinned_bits(problem) == 8 * 12
    table = group_table(problem, "channel")
    assert table.omega.shape == (2, 3) and table.capacity == 100 - 96
    assignment = assignment_from_choices(problem, "channel", np.array([0, 1]))
    assert assignment["0"].tolist() == [8, 8, 8] and assignment["2"].tolist() == [2, 4]
    assert list(assignment) == ["0", "2"]


def test_reuses_a_given_perturbation_table():
    problem = tiny_problem()
    fake = {name: np.ones_like(omega) for name, omega in perturbation_table(problem).items()}
    assert np.all(group_table(problem, "layer", fake).omega == [[3, 3, 3], [2, 2, 2]])


def test_unknown_granularity_raises():
    with pytest.raises(CwhawqError, match="granularity"):
        group_table(tiny_problem(), "block")


def test_table_validation():
    with pytest.raises(CwhawqError, match="tables"):
        GroupTable(np.zeros((2, 3)), np.zeros((2, 2), dtype=np.int64), 10)
    with pytest.raises(CwhawqError, match="NaN"):
        GroupTable(np.array([[np.nan]]), np.ones((1, 1), dtype=np.int64), 10)
    with pytest.raises(CwhawqError, match="cheapest"):
        GroupTable(np.zeros((2, 1)), np.full((2, 1), 6, dtype=np.int64), 11).require_feasible()


def test_cheapest_equal_never_raises_size_or_omega():
    table = GroupTable(np.array([[1.0, 0.0, 0.0], [2.0, 2.0, 1.0]]), np.array([[1, 2, 3], [1, 2, 3]]), 6)
    assert table.cheapest_equal(np.array([2, 1])).tolist() == [1, 0]
