"""The uniform baseline: the highest single candidate width for every searchable channel that fits the budget."""

from __future__ import annotations

from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem


def uniform(problem: QuantProblem) -> Assignment:
    """Every searchable channel at the highest candidate width whose size fits the budget; pinned layers keep pins."""
    for bits in sorted(problem.bit_widths, reverse=True):
        assignment = problem.uniform_assignment(bits)
        if problem.size_bits(assignment) <= problem.budget.total_bits:
            return assignment
    raise CwhawqError(
        f"no single width of {problem.bit_widths} fits the budget; raise the budget or add a lower candidate width"
    )
