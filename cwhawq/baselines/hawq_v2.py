"""HAWQ-V2: one width per layer, chosen on the exact Pareto frontier of (size, summed layer Omega)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cwhawq.baselines.groups import GroupTable, assignment_from_choices, group_table, pinned_bits
from cwhawq.problem import Assignment, QuantProblem


@dataclass(frozen=True)
class ParetoFrontier:
    """Non-dominated (size, omega) points within the capacity, by ascending size and strictly descending omega.

    choices[i] holds one option index per group for point i.
    """

    sizes: np.ndarray
    omegas: np.ndarray
    choices: np.ndarray

    def points(self, offset_bits: int = 0) -> list[tuple[int, float]]:
        """The frontier as (size_bits + offset_bits, omega) pairs, e.g. offset by the pinned layers' bits to plot."""
        return [(int(s) + offset_bits, float(o)) for s, o in zip(self.sizes, self.omegas)]

    @property
    def best(self) -> np.ndarray:
        """Choices of the lowest-omega point (the largest size that fits)."""
        return self.choices[-1]


def pareto_frontier(table: GroupTable) -> ParetoFrontier:
    """Exact Pareto frontier by dynamic programming over the groups.

    After each group only the non-dominated partial states are kept (a state is dropped if another one is no larger
    and has no more omega) and states above the capacity are pruned; since a dominated partial state can never
    complete to a better full one, the final frontier is exact.
    """
    table.require_feasible()
    sizes = np.zeros(1, dtype=np.int64)
    omegas = np.zeros(1, dtype=np.float64)
    parents: list[np.ndarray] = []
    options: list[np.ndarray] = []
    n_options = table.omega.shape[1]
    for group_sizes, group_omega in zip(table.sizes, table.omega):
        cand_sizes = (sizes[:, None] + group_sizes[None, :]).ravel()
        cand_omegas = (omegas[:, None] + group_omega[None, :]).ravel()
        index = np.flatnonzero(cand_sizes <= table.capacity)
        index = index[np.lexsort((cand_omegas[index], cand_sizes[index]))]
        ordered = cand_omegas[index]
        # Along ascending size, a state survives only if it beats every smaller-or-equal state's omega.
        best_before = np.concatenate(([np.inf], np.minimum.accumulate(ordered)[:-1]))
        index = index[ordered < best_before]
        sizes, omegas = cand_sizes[index], cand_omegas[index]
        parents.append(index // n_options)
        options.append(index % n_options)
    choices = np.empty((sizes.size, len(options)), dtype=np.int64)
    state = np.arange(sizes.size)
    for g in range(len(options) - 1, -1, -1):
        choices[:, g] = options[g][state]
        state = parents[g][state]
    return ParetoFrontier(sizes, omegas, choices)


def hawq_v2_frontier(problem: QuantProblem) -> tuple[ParetoFrontier, int]:
    """The layer-wise frontier of a problem and the pinned layers' bits to add to its sizes."""
    return pareto_frontier(group_table(problem, "layer")), pinned_bits(problem)


def hawq_v2(problem: QuantProblem) -> Assignment:
    """One width per searchable layer minimising summed layer Omega under the budget (HAWQ-V2)."""
    frontier, _ = hawq_v2_frontier(problem)
    return assignment_from_choices(problem, "layer", frontier.best)
