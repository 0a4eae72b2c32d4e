"""A quantization problem as a multiple-choice knapsack: groups (layers or channels) x candidate widths.

Each group takes exactly one width k; it then costs sizes[g, k] bits and adds omega[g, k] to the objective. The
solvers work on this table only, so they can be tested on hand-built instances without a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cwhawq.baselines.perturbation import layer_perturbation, perturbation_table
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem

Granularity = Literal["layer", "channel"]
GRANULARITIES: tuple[str, ...] = ("layer", "channel")


@dataclass(frozen=True)
class GroupTable:
    """omega (G, K) float, sizes (G, K) int64 bits, and the capacity in bits left for the searchable groups."""

    omega: np.ndarray
    sizes: np.ndarray
    capacity: int

    def __post_init__(self) -> None:
        if self.omega.ndim != 2 or self.omega.shape != self.sizes.shape or self.omega.shape[1] == 0:
            raise CwhawqError(
                f"omega {self.omega.shape} and sizes {self.sizes.shape} must be equal (groups, widths) tables"
            )
        if not np.all(np.isfinite(self.omega)):
            raise CwhawqError("the perturbation table holds NaN or infinity; check the traces and weights")

    @property
    def minimum_size(self) -> int:
        """Size with every group at its cheapest option."""
        return int(self.sizes.min(axis=1).sum()) if self.sizes.size else 0

    def cost(self, choices: np.ndarray) -> tuple[int, float]:
        """(size in bits, summed omega) of one option index per group."""
        rows = np.arange(self.omega.shape[0])
        return int(self.sizes[rows, choices].sum()), float(self.omega[rows, choices].sum())

    def require_feasible(self) -> None:
        """CwhawqError unless the cheapest option of every group fits the capacity."""
        if self.minimum_size > self.capacity:
            raise CwhawqError(
                f"even the cheapest widths need {self.minimum_size} bits but only {self.capacity} are left "
                "after the pinned layers; raise the budget or add a lower candidate width"
            )

    def cheapest_equal(self, choices: np.ndarray) -> np.ndarray:
        """Per group, the cheapest option whose omega is no larger than the chosen one's.

        Solvers indifferent between options of equal omega (e.g. channels with zero trace) may pick a costly one;
        this keeps the objective and never raises the size.
        """
        rows = np.arange(self.omega.shape[0])
        chosen = self.omega[rows, choices]
        masked = np.where(self.omega <= chosen[:, None], self.sizes, np.iinfo(np.int64).max)
        return np.argmin(masked, axis=1)


def pinned_bits(problem: QuantProblem) -> int:
    """Storage bits of the pinned layers, which every assignment pays."""
    return sum(layer.pinned_bits * layer.params for layer in problem.layers if layer.pinned_bits is not None)


def group_table(
    problem: QuantProblem, granularity: Granularity, table: Mapping[str, np.ndarray] | None = None
) -> GroupTable:
    """The knapsack of a problem: one group per searchable layer ("layer") or per searchable channel ("channel").

    Groups follow `problem.searchable` order (channels in index order within a layer). Pass `table` to reuse a
    computed perturbation table.
    """
    if granularity not in GRANULARITIES:
        raise CwhawqError(f"unknown granularity {granularity!r}; use one of {list(GRANULARITIES)}")
    table = perturbation_table(problem) if table is None else table
    widths = np.asarray(problem.bit_widths, dtype=np.int64)
    capacity = problem.budget.total_bits - pinned_bits(problem)
    layers = problem.searchable
    if granularity == "layer":
        per_layer = layer_perturbation(table)
        omega = np.array([per_layer[layer.name] for layer in layers], dtype=np.float64).reshape(-1, widths.size)
        sizes = np.array([widths * layer.params for layer in layers], dtype=np.int64).reshape(-1, widths.size)
    else:
        omega = np.concatenate([table[layer.name] for layer in layers] or [np.empty((0, widths.size))])
        per_channel = np.repeat(
            np.array([layer.params_per_channel for layer in layers], dtype=np.int64),
            [layer.out_channels for layer in layers],
        )
        sizes = per_channel[:, None] * widths[None, :]
    return GroupTable(omega.astype(np.float64), sizes.astype(np.int64), int(capacity))


def assignment_from_choices(problem: QuantProblem, granularity: Granularity, choices: np.ndarray) -> Assignment:
    """Full assignment in layer order (pinned layers at their pins) from one width index per group of `group_table`."""
    widths = np.asarray(problem.bit_widths, dtype=np.int64)
    choices = np.asarray(choices, dtype=np.int64)
    out: Assignment = {}
    start = 0
    for i, layer in enumerate(problem.searchable):
        if granularity == "layer":
            out[layer.name] = np.full(layer.out_channels, widths[choices[i]], dtype=np.int64)
        else:
            out[layer.name] = widths[choices[start : start + layer.out_channels]]
            start += layer.out_channels
    out.update(problem.pinned_assignment())
    return {layer.name: out[layer.name] for layer in problem.layers}
