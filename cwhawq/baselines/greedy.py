"""Channel-wise multiple-choice knapsack greedy on Omega (in the style of Chen et al., ICCV 2021)."""

from __future__ import annotations

import heapq

import numpy as np

from cwhawq.baselines.groups import GroupTable, assignment_from_choices, group_table
from cwhawq.problem import Assignment, QuantProblem


def lower_hull(sizes: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Option indices on the lower convex hull of one group's (size, omega) points, from the cheapest option on.

    Only options that lower omega are kept, so consecutive hull points are upgrades: each costs more bits, saves
    omega, and saves less per bit than the one before (collinear points stay, as finer steps of equal efficiency).
    """
    order = np.lexsort((omega, sizes))
    # The Pareto staircase: ascending size, strictly descending omega.
    stairs: list[int] = []
    for k in order.tolist():
        if not stairs or (sizes[k] > sizes[stairs[-1]] and omega[k] < omega[stairs[-1]]):
            stairs.append(k)
    hull: list[int] = []
    for k in stairs:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies above the chord a -> k: its slope from a is worse (less negative) than k's slope from b.
            if (omega[b] - omega[a]) * (sizes[k] - sizes[b]) > (omega[k] - omega[b]) * (sizes[b] - sizes[a]):
                hull.pop()
            else:
                break
        hull.append(k)
    return np.asarray(hull, dtype=np.int64)


def solve_greedy(table: GroupTable) -> np.ndarray:
    """Option index per group: start at each group's cheapest option, then take hull upgrades by omega saved per bit.

    Upgrades come off a heap, best efficiency first, while they fit; an upgrade that no longer fits ends its group's
    climb and the cheaper upgrades of other groups are still tried. Finally the leftover bits go, one move at a time,
    to the single option change (on or off the hull) that saves the most omega and fits.
    """
    table.require_feasible()
    hulls = [lower_hull(s, o) for s, o in zip(table.sizes, table.omega)]
    choices = np.array([h[0] for h in hulls], dtype=np.int64)
    rows = np.arange(len(hulls))
    room = table.capacity - int(table.sizes[rows, choices].sum())

    def step(g: int, i: int) -> tuple[float, int, int, int]:
        a, b = hulls[g][i], hulls[g][i + 1]
        cost = int(table.sizes[g, b] - table.sizes[g, a])
        return (-(table.omega[g, a] - table.omega[g, b]) / cost, g, i, cost)

    heap = [step(g, 0) for g, h in enumerate(hulls) if h.size > 1]
    heapq.heapify(heap)
    while heap:
        _, g, i, cost = heapq.heappop(heap)
        if cost > room:
            continue
        room -= cost
        choices[g] = hulls[g][i + 1]
        if i + 2 < hulls[g].size:
            heapq.heappush(heap, step(g, i + 1))

    while True:
        current_size = table.sizes[rows, choices][:, None]
        saving = table.omega[rows, choices][:, None] - table.omega
        fits = (table.sizes - current_size <= room) & (saving > 0)
        if not fits.any():
            return table.cheapest_equal(choices)
        g, k = np.unravel_index(np.argmax(np.where(fits, saving, -np.inf)), saving.shape)
        room -= int(table.sizes[g, k] - current_size[g, 0])
        choices[g] = k


def greedy(problem: QuantProblem) -> Assignment:
    """Per-channel widths from the knapsack greedy on the channels' Omega under the budget."""
    return assignment_from_choices(problem, "channel", solve_greedy(group_table(problem, "channel")))
