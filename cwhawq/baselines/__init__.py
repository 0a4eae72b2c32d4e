"""Deterministic baselines on the Hessian-weighted perturbation Omega: uniform, HAWQ-V2, ILPs and a greedy."""

from __future__ import annotations

from collections.abc import Callable

# The modules, not their same-named functions, so that `cwhawq.baselines.ilp` always means the module.
from cwhawq.baselines import greedy, hawq_v2, ilp, uniform
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem


def ilp_layer(problem: QuantProblem) -> Assignment:
    """HAWQ-V3's ILP with one width per layer."""
    return ilp.ilp(problem, "layer")


def ilp_channel(problem: QuantProblem) -> Assignment:
    """The same ILP with one width per output channel."""
    return ilp.ilp(problem, "channel")


DETERMINISTIC_METHODS: dict[str, Callable[[QuantProblem], Assignment]] = {
    "uniform": uniform.uniform,
    "hawq-v2": hawq_v2.hawq_v2,
    "ilp-layer": ilp_layer,
    "ilp-channel": ilp_channel,
    "greedy-channel": greedy.greedy,
}


def run_method(problem: QuantProblem, name: str) -> Assignment:
    """Run the deterministic baseline `name` on a problem and return its full assignment."""
    method = DETERMINISTIC_METHODS.get(name)
    if method is None:
        raise CwhawqError(f"unknown baseline {name!r}; use one of {list(DETERMINISTIC_METHODS)}")
    return method(problem)
