"""HAWQ-V2's perturbation metric at channel level: average Hessian trace times squared quantization error."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from cwhawq.allocation import trace_order
from cwhawq.errors import CwhawqError
from cwhawq.layers import layer_weight
from cwhawq.problem import QuantProblem
from cwhawq.quantizer import quantize_per_channel


def perturbation_table(problem: QuantProblem) -> dict[str, np.ndarray]:
    """Omega of every searchable channel at every candidate width: layer -> array (out_channels, K).

    Omega[c, k] = max(trace_c, 0) / params_per_channel * ||Q_{b_k}(w_c) - w_c||^2 on the model's current (folded)
    weights. A negative channel trace is a noisy or negative-curvature estimate; used as is, it would make more
    quantization error look *better* and a minimiser would spend the lowest bits on purpose there, so it is clamped
    to 0 (the channel then costs nothing at any width, and every method leaves it at the cheapest width).
    Pinned layers are left out: no method chooses their bits.
    """
    table: dict[str, np.ndarray] = {}
    for layer in problem.searchable:
        trace = problem.traces.traces.get(layer.name)
        if trace is None or np.shape(trace) != (layer.out_channels,):
            raise CwhawqError(f"no per-channel traces for layer {layer.name!r}; re-estimate the traces on this model")
        weight = layer_weight(problem.model, layer.name).detach()
        errors = np.empty((layer.out_channels, len(problem.bit_widths)), dtype=np.float64)
        for k, bits in enumerate(problem.bit_widths):
            full = torch.full((layer.out_channels,), bits, dtype=torch.long)
            diff = (quantize_per_channel(weight, full) - weight).reshape(layer.out_channels, -1).double()
            errors[:, k] = diff.square().sum(dim=1).cpu().numpy()
        sensitivity = np.maximum(np.asarray(trace, dtype=np.float64), 0.0) / layer.params_per_channel
        table[layer.name] = sensitivity[:, None] * errors
    return table


def channel_orders(problem: QuantProblem) -> dict[str, np.ndarray]:
    """Each searchable layer's channels in the order they get the higher widths under `problem.channel_order`.

    "trace": by descending Hessian trace. "perturbation": by descending fall of Omega when the channel moves from
    the lowest candidate width to the next, i.e. Hessian trace times the squared quantization error that the extra
    bit saves; the trace alone ignores how wide a channel's weights are, and so how much error a width leaves in it
    (docs/BENCHMARKS.md, change 35). Equal keys keep index order; a layer with one candidate width uses the traces.
    """
    if problem.channel_order == "trace" or len(problem.bit_widths) < 2:
        return {layer.name: trace_order(problem.traces.traces[layer.name]) for layer in problem.searchable}
    return {name: trace_order(omega[:, 0] - omega[:, 1]) for name, omega in perturbation_table(problem).items()}


def layer_perturbation(table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Layer-level Omega with one width for the whole layer: layer -> array (K,), the sum over its channels."""
    return {name: omega.sum(axis=0) for name, omega in table.items()}


def omega_objective(
    problem: QuantProblem, assignment: Mapping[str, np.ndarray], table: Mapping[str, np.ndarray] | None = None
) -> float:
    """Summed Omega of an assignment over the searchable channels (pass `table` to reuse a computed one)."""
    table = perturbation_table(problem) if table is None else table
    widths = np.asarray(problem.bit_widths)
    total = 0.0
    for layer in problem.searchable:
        bits = np.asarray(assignment[layer.name])
        k = np.minimum(np.searchsorted(widths, bits), widths.size - 1)
        if bits.shape != (layer.out_channels,) or np.any(widths[k] != bits):
            raise CwhawqError(
                f"assignment for {layer.name!r} uses widths outside {problem.bit_widths}; use candidate widths only"
            )
        total += float(table[layer.name][np.arange(layer.out_channels), k].sum())
    return total
