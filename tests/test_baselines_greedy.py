"""Channel-wise knapsack greedy: convex hulls, feasibility, and the LP-relaxation bound on its gap."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cwhawq.baselines.greedy import greedy, lower_hull, solve_greedy
from cwhawq.baselines.groups import GroupTable
from cwhawq.errors import CwhawqError
from tests.baseline_problems import brute_force, random_table, random_tables, tiny_problem


def hull_steps(table: GroupTable) -> list[tuple[float, int, float]]:
    """(efficiency, extra bits, omega saved) of every hull upgrade of every group."""
    steps = []
    for sizes, omega in zip(table.sizes, table.omega):
        hull = lower_hull(sizes, omega)
        for a, b in zip(hull[:-1], hull[1:]):
            saved, cost = omega[a] - omega[b], int(sizes[b] - sizes[a])
            steps.append((saved / cost, cost, saved))
    return steps


def lp_bound(table: GroupTable) -> float:
    """Optimum of the LP relaxation: hull upgrades by efficiency, the last one taken fractionally."""
    hulls = [lower_hull(s, o) for s, o in zip(table.sizes, table.omega)]
    rows = np.arange(len(hulls))
    start = np.array([h[0] for h in hulls])
    value = float(table.omega[rows, start].sum())
    room = table.capacity - int(table.sizes[rows, start].sum())
    for _, cost, saved in sorted(hull_steps(table), key=lambda s: -s[0]):
        taken = min(1.0, room / cost)
        value -= taken * saved
        room -= taken * cost
        if taken < 1:
            break
    return value


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_hull_is_a_convex_descending_staircase(seed, n_options):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, n_options)
    omega = rng.uniform(0, 5, n_options)
    hull = lower_hull(sizes, omega)
    assert sizes[hull[0]] == sizes.min() and omega[hull[0]] == omega[sizes == sizes.min()].min()
    assert omega[hull[-1]] == omega.min()
    assert np.all(np.diff(sizes[hull]) > 0) and np.all(np.diff(omega[hull]) < 0)
    slopes = np.diff(omega[hull]) / np.diff(sizes[hull])
    assert np.all(np.diff(slopes) >= -1e-12)
    # No option lies below the hull's piecewise-linear curve.
    for s, o in zip(sizes, omega):
        if sizes[hull[0]] <= s <= sizes[hull[-1]]:
            assert o >= np.interp(s, sizes[hull], omega[hull]) - 1e-9


@settings(max_examples=200, deadline=None)
@given(random_tables())
def test_feasible_and_within_the_lp_gap(table):
    choices = solve_greedy(table)
    size, value = table.cost(choices)
    assert size <= table.capacity
    optimum, _ = brute_force(table)
    largest_step = max((saved for _, _, saved in hull_steps(table)), default=0.0)
    assert lp_bound(table) <= optimum + 1e-9
    assert optimum - 1e-9 <= value <= optimum + largest_step + 1e-9


@settings(max_examples=100, deadline=None)
@given(random_tables(), st.floats(0.0, 1.0))
def test_optimal_when_the_capacity_ends_on_a_whole_upgrade(table, quantile):
    # Capacity = the cheapest start plus every hull upgrade at or above an efficiency threshold: the LP optimum is
    # then integral, and the greedy takes exactly those upgrades.
    steps = hull_steps(table)
    if not steps:
        return
    threshold = np.quantile([s[0] for s in steps], quantile)
    start = sum(int(sizes[lower_hull(sizes, omega)[0]]) for sizes, omega in zip(table.sizes, table.omega))
    capacity = start + sum(cost for efficiency, cost, _ in steps if efficiency >= threshold)
    exact = GroupTable(table.omega, table.sizes, capacity)
    assert exact.cost(solve_greedy(exact))[1] == pytest.approx(brute_force(exact)[0], abs=1e-9)


def test_leftover_bits_buy_an_off_hull_option():
    # Option 1 is above the hull (2 -> 4 bits is a straight line to a better option), but when only 1 extra bit fits
    # it is the best move.
    table = GroupTable(np.array([[10.0, 8.0, 0.0]]), np.array([[2, 3, 4]]), 3)
    assert lower_hull(table.sizes[0], table.omega[0]).tolist() == [0, 2]
    assert solve_greedy(table).tolist() == [1]


def test_equal_omega_leftover_moves_take_the_cheaper_option():
    # Options 1 and 2 save the same omega off the hull; option 1 costs a bit more and is listed first.
    table = GroupTable(np.array([[10.0, 8.0, 8.0, 0.0]]), np.array([[2, 4, 3, 5]]), 4)
    assert lower_hull(table.sizes[0], table.omega[0]).tolist() == [0, 3]
    assert solve_greedy(table).tolist() == [2]


def test_infeasible_raises():
    with pytest.raises(CwhawqError, match="cheapest"):
        solve_greedy(GroupTable(np.zeros((1, 2)), np.array([[3, 4]]), 2))


def test_fast_on_thousands_of_channels():
    table = random_table(np.random.default_rng(0), 2000, 5, 0.4)
    started = time.perf_counter()
    choices = solve_greedy(table)
    assert time.perf_counter() - started < 1.0
    assert table.cost(choices)[0] <= table.capacity


def test_full_assignment_on_a_problem():
    problem = tiny_problem(avg_bits=4.5, pin={"0": 4})
    assignment = greedy(problem)
    problem.check_assignment(assignment)
    assert assignment["0"].tolist() == [4, 4, 4]
