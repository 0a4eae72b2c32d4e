"""Tiny hand-built problems and brute-force solvers for the baseline tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

from cwhawq.baselines.groups import GroupTable
from cwhawq.cost import Budget
from cwhawq.data import DataSplits, Split
from cwhawq.evaluation import log_probs
from cwhawq.hessian import ChannelTraces
from cwhawq.layers import discover_layers
from cwhawq.problem import QuantProblem
from cwhawq.quantizer import WeightQuantizer


def tiny_problem(
    budget_bits: int | None = None,
    avg_bits: float = 4.0,
    pin: Mapping[str, int] | None = None,
    traces: Mapping[str, np.ndarray] | None = None,
    bit_widths: tuple[int, ...] = (2, 4, 8),
    seed: int = 0,
) -> QuantProblem:
    """A two-layer MLP (4 -> 3 -> 2, layers "0" and "2") on random data; budget in bits or average bits."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(8, 4)
    split = Split(x, torch.zeros(8, dtype=torch.int64))
    data = DataSplits("tiny", split, split, split, num_classes=2)
    layers = discover_layers(model, x, pin=pin)
    rng = np.random.default_rng(seed)
    values = dict(traces) if traces else {layer.name: rng.uniform(0.1, 1.0, layer.out_channels) for layer in layers}
    channel_traces = ChannelTraces(values, {k: np.zeros_like(v) for k, v in values.items()}, 1.0, 1, True)
    budget = Budget(budget_bits) if budget_bits is not None else Budget.from_average_bits(layers, avg_bits)
    quantizer = WeightQuantizer(model, layers)
    fp_log_probs = log_probs(model, split)
    return QuantProblem(model, data, layers, channel_traces, budget, bit_widths, 0.5, quantizer, fp_log_probs)


def brute_force(table: GroupTable) -> tuple[float, np.ndarray | None]:
    """Lowest summed omega of any choice within capacity, and one such choice (None if nothing fits)."""
    best, best_choice = np.inf, None
    n_groups, n_options = table.omega.shape
    for combo in itertools.product(range(n_options), repeat=n_groups):
        choice = np.array(combo, dtype=np.int64)
        size, omega = table.cost(choice)
        if size <= table.capacity and omega < best:
            best, best_choice = omega, choice
    return best, best_choice


def random_table(rng: np.random.Generator, n_groups: int, n_options: int, fill: float) -> GroupTable:
    """Random sizes (ascending per group) and omegas; capacity at `fill` of the way from cheapest to dearest."""
    sizes = np.cumsum(rng.integers(1, 20, (n_groups, n_options)), axis=1)
    omega = rng.uniform(0.0, 10.0, (n_groups, n_options))
    low, high = int(sizes[:, 0].sum()), int(sizes[:, -1].sum())
    return GroupTable(omega, sizes, low + int(fill * (high - low)))


def random_tables() -> st.SearchStrategy[GroupTable]:
    """Hypothesis strategy: random small group tables (1-4 groups x 1-4 options, some entries missing)."""
    return st.builds(
        lambda seed, g, k, fill: random_table(np.random.default_rng(seed), g, k, fill),
        st.integers(0, 2**32 - 1),
        st.integers(1, 4),
        st.integers(1, 4),
        st.floats(0.0, 1.0),
    )
