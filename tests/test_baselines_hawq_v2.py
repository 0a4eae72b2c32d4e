"""HAWQ-V2's layer-wise Pareto frontier: exact against brute force."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings

from cwhawq.baselines.groups import GroupTable
from cwhawq.baselines.hawq_v2 import hawq_v2, hawq_v2_frontier, pareto_frontier
from cwhawq.baselines.perturbation import omega_objective
from cwhawq.errors import CwhawqError
from tests.baseline_problems import brute_force, random_tables, tiny_problem


@settings(max_examples=150, deadline=None)
@given(random_tables())
def test_frontier_is_exact(table):
    frontier = pareto_frontier(table)
    assert np.all(np.diff(frontier.sizes) > 0) and np.all(np.diff(frontier.omegas) < 0)
    assert frontier.sizes[-1] <= table.capacity
    for size, omega, choice in zip(frontier.sizes, frontier.omegas, frontier.choices):
        assert table.cost(choice) == (size, pytest.approx(omega))
    best, _ = brute_force(table)
    assert table.cost(frontier.best)[1] == pytest.approx(best)
    # Every feasible combination is matched or beaten by some frontier point.
    for combo in itertools.product(range(table.omega.shape[1]), repeat=table.omega.shape[0]):
        size, omega = table.cost(np.array(combo))
        if size <= table.capacity:
            better = (frontier.sizes <= size) & (frontier.omegas <= omega + 1e-9)
            assert better.any()


def test_frontier_of_a_known_table():
    table = GroupTable(np.array([[4.0, 1.0], [3.0, 0.0]]), np.array([[1, 2], [1, 3]]), 5)
    # (size 4, omega 4) is dominated by (3, 4); the capacity of 4 would cut (5, 1).
    frontier = pareto_frontier(table)
    assert frontier.points() == [(2, 7.0), (3, 4.0), (5, 1.0)]
    assert frontier.points(offset_bits=10)[0] == (12, 7.0)
    assert frontier.best.tolist() == [1, 1]
    capped = pareto_frontier(GroupTable(table.omega, table.sizes, 4))
    assert capped.points() == [(2, 7.0), (3, 4.0)] and capped.best.tolist() == [1, 0]


def test_infeasible_table_raises():
    with pytest.raises(CwhawqError, match="cheapest"):
        pareto_frontier(GroupTable(np.zeros((1, 1)), np.full((1, 1), 5, dtype=np.int64), 4))


def test_one_width_per_layer_and_best_on_the_problem():
    problem = tiny_problem(avg_bits=5.0)
    assignment = hawq_v2(problem)
    problem.check_assignment(assignment)
    assert all(len(set(bits.tolist())) == 1 for bits in assignment.values())
    objective = omega_objective(problem, assignment)
    for combo in itertools.product(problem.bit_widths, repeat=2):
        other = {layer.name: np.full(layer.out_channels, b) for layer, b in zip(problem.layers, combo)}
        if problem.size_bits(other) <= problem.budget.total_bits:
            assert objective <= omega_objective(problem, other) + 1e-12


def test_frontier_sizes_include_the_pinned_layers():
    problem = tiny_problem(avg_bits=6.0, pin={"2": 8})
    frontier, offset = hawq_v2_frontier(problem)
    assert offset == 48
    assert max(size for size, _ in frontier.points(offset)) <= problem.budget.total_bits
    assignment = hawq_v2(problem)
    problem.check_assignment(assignment)
    assert assignment["2"].tolist() == [8, 8]
