"""HAWQ-V3-style integer linear program: minimise summed Omega under the size budget, per layer or per channel."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pulp

from cwhawq.baselines.groups import GRANULARITIES, Granularity, GroupTable, assignment_from_choices, group_table
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem

_FOUND = (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)


def _cbc(time_limit_s: float) -> pulp.LpSolver:
    # PuLP 3.x flags its bundled CBC as going away in PuLP 4.0; it is still the only solver that needs no install,
    # so keep it (pin pulp < 4) without printing the notice on every solve.
    # CBC's CGL preprocessing returns wrong "optimal" answers on some of these tiny knapsacks (found by the brute-force
    # test; see coin-or/Cbc issues 283, 720, 723), so it is switched off; the solves stay fast without it.
    # No `threads` option: CBC's default is its serial, deterministic search, while threads=1 starts a worker thread
    # that now and then idles 10 s before starting (CBC 2.10.3, "waiting to start 10.0").
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, options=["preprocess off"])


def solve_ilp(table: GroupTable, time_limit_s: float = 60) -> np.ndarray:
    """Option index per group minimising summed omega with sum of sizes <= capacity, by CBC.

    The model is rescaled for the solver's tolerances (omega shifted to 0 at each group's minimum and divided by the
    largest remaining value; sizes counted above each group's cheapest option, in units of their gcd); neither
    change moves the optimum. Options of equal omega resolve to the cheapest.
    """
    if not time_limit_s > 0:
        raise CwhawqError(f"time_limit_s must be positive, got {time_limit_s!r}")
    table.require_feasible()
    n_groups, n_options = table.omega.shape
    if n_groups == 0:
        return np.zeros(0, dtype=np.int64)
    omega = table.omega - table.omega.min(axis=1, keepdims=True)
    omega = omega / omega.max() if omega.max() > 0 else omega
    extra = table.sizes - table.sizes.min(axis=1, keepdims=True)
    unit = math.gcd(*extra.ravel().tolist()) or 1
    room = (table.capacity - table.minimum_size) // unit

    prob = pulp.LpProblem("mixed_precision", pulp.LpMinimize)
    x = [[prob.add_variable(f"x_{g}_{k}", cat=pulp.LpBinary) for k in range(n_options)] for g in range(n_groups)]
    prob += pulp.LpAffineExpression(
        (x[g][k], float(omega[g, k])) for g in range(n_groups) for k in range(n_options) if omega[g, k] != 0
    )
    for g in range(n_groups):
        prob += pulp.lpSum(x[g]) == 1, f"one_{g}"
    prob += (
        pulp.LpAffineExpression(
            (x[g][k], int(extra[g, k]) // unit) for g in range(n_groups) for k in range(n_options) if extra[g, k]
        )
        <= room,
        "budget",
    )
    prob.solve(_cbc(time_limit_s))
    if prob.sol_status not in _FOUND:
        raise CwhawqError(
            f"the ILP found no assignment within the budget in {time_limit_s} s "
            f"({pulp.LpStatus[prob.status]}); raise the budget or time_limit_s"
        )
    values = np.array([[var.value() or 0.0 for var in row] for row in x])
    choices = table.cheapest_equal(np.argmax(values, axis=1))
    if table.cost(choices)[0] > table.capacity:
        raise CwhawqError("the ILP solution breaks the budget by rounding; report this as a bug with the model")
    return choices


def ilp(problem: QuantProblem, granularity: Granularity, time_limit_s: float = 60) -> Assignment:
    """Minimum-Omega assignment under the budget with one width per layer or per channel (HAWQ-V3's ILP)."""
    if granularity not in GRANULARITIES:
        raise CwhawqError(f"unknown granularity {granularity!r}; use one of {list(GRANULARITIES)}")
    choices = solve_ilp(group_table(problem, granularity), time_limit_s)
    return assignment_from_choices(problem, granularity, choices)
