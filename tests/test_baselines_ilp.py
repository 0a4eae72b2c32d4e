"""HAWQ-V3-style ILP with CBC: exact against brute force, per layer and per channel."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.baselines.groups import GroupTable
from cwhawq.baselines.ilp import ilp, solve_ilp
from cwhawq.baselines.perturbation import omega_objective
from cwhawq.errors import CwhawqError
from tests.baseline_problems import brute_force, random_table, tiny_problem


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 4), st.floats(0.0, 1.0))
def test_matches_brute_force(seed, n_groups, n_options, fill):
    table = random_table(np.random.default_rng(seed), n_groups, n_options, fill)
    choices = solve_ilp(table)
    size, omega = table.cost(choices)
    assert size <= table.capacity
    assert omega == pytest.approx(brute_force(table)[0], rel=1e-9, abs=1e-9)


def test_three_groups_three_widths_by_hand():
    # 6 bits above the start (1, 1, 1): two full upgrades to size 4 save 5 + 5, but one full upgrade of group 0
    # and two small ones save 5 + 4 + 4 in 5 bits; that beats every other fitting combination.
    omega = np.array([[6.0, 3.0, 1.0], [9.0, 5.0, 4.0], [8.0, 4.0, 3.5]])
    sizes = np.array([[1, 2, 4], [1, 2, 4], [1, 2, 4]])
    table = GroupTable(omega, sizes, 9)
    choices = solve_ilp(table)
    assert choices.tolist() == [2, 1, 1]
    assert table.cost(choices) == (8, 10.0) and brute_force(table)[0] == 10.0


def test_tiny_omega_scales_are_solved_exactly():
    # Real Omega values are ~1e-6 and sizes ~1e5 bits; the rescaling must keep the answer exact.
    rng = np.random.default_rng(3)
    table = random_table(rng, 4, 4, 0.5)
    scaled = GroupTable(table.omega * 1e-9, table.sizes * 4096, table.capacity * 4096)
    assert solve_ilp(scaled).tolist() == solve_ilp(table).tolist()


def test_equal_omega_takes_the_cheapest_width():
    # With bits to spare, CBC is indifferent between equal-omega options (and picks costly ones on these tables).
    omega = np.array([[0.0, 0.0, 0.0], [5.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    table = GroupTable(omega, np.tile([1, 2, 4], (3, 1)), 100)
    assert solve_ilp(table).tolist() == [0, 2, 1]


def test_errors():
    with pytest.raises(CwhawqError, match="cheapest"):
        solve_ilp(GroupTable(np.zeros((2, 1)), np.full((2, 1), 3, dtype=np.int64), 5))
    table = GroupTable(np.zeros((1, 2)), np.array([[1, 2]]), 5)
    with pytest.raises(CwhawqError, match="time_limit_s"):
        solve_ilp(table, time_limit_s=0)
    with pytest.raises(CwhawqError, match="granularity"):
        ilp(tiny_problem(), "block")


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_full_assignment_within_budget(granularity):
    problem = tiny_problem(avg_bits=4.5, pin={"2": 8})
    assignment = ilp(problem, granularity)
    problem.check_assignment(assignment)
    assert assignment["2"].tolist() == [8, 8]
    assert all(bits.dtype == np.int64 for bits in assignment.values())


def test_channel_ilp_is_at_least_as_good_as_layer_ilp():
    problem = tiny_problem(avg_bits=4.5)
    per_layer = omega_objective(problem, ilp(problem, "layer"))
    assert omega_objective(problem, ilp(problem, "channel")) <= per_layer + 1e-12


def test_deterministic():
    table = random_table(np.random.default_rng(7), 300, 5, 0.4)
    assert solve_ilp(table).tolist() == solve_ilp(table).tolist()
