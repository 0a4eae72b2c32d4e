"""Model-independent observation features, so that a policy trained on one model runs on another.

Every feature is a ratio, a log-scaled size with a fixed scale, or a statistic normalised within the model;
none depends on the number of layers or on absolute trace values. Each version is a fixed list of features: add a
version whenever a feature changes meaning, since saved policies record theirs and are refused by an environment
with another. "v1" describes the layer alone; "v2" adds hints: the level (as a level action in [-1, 1]) that
each of `HINT_METHODS` gives the layer on this problem, so that a policy can learn how far to trust and where to
leave the cheap baselines' answer on any model (docs/BENCHMARKS.md, transfer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cwhawq.layers import LayerInfo

#: The default observation version; `OBSERVATION_VERSIONS` lists every one an environment can build.
OBSERVATION_VERSION = "v1"
OBSERVATION_VERSIONS: tuple[str, ...] = ("v1", "v2")
#: Deterministic baselines (`cwhawq.baselines`) whose per-layer level is a "v2" feature.
HINT_METHODS: tuple[str, ...] = ("greedy-channel", "ilp-layer")
#: Layer kinds with a one-hot feature; an "embedding" has none of them (all zero), which kept the versions' sizes.
KINDS: tuple[str, ...] = ("linear", "conv", "depthwise", "grouped")
STATIC_FEATURES: tuple[str, ...] = (
    "relative_depth",
    *(f"kind_{kind}" for kind in KINDS),
    "log_in_channels",
    "log_out_channels",
    "log_kernel_elements",
    "log_stride",
    "log_params",
    "params_share",
    "macs_share",
    "trace_level",
    "trace_concentration",
    "negative_trace_share",
)
DYNAMIC_FEATURES: tuple[str, ...] = ("budget_spent", "budget_left_per_weight")
#: Observations are clipped into [-OBS_LIMIT, OBS_LIMIT]; features are designed to stay well inside.
OBS_LIMIT = 5.0


def static_feature_names(version: str) -> tuple[str, ...]:
    """The per-layer features of an observation version, in vector order."""
    hints = tuple(f"hint_{method}" for method in HINT_METHODS) if version == "v2" else ()
    return (*STATIC_FEATURES, *hints)


def observation_size(action_size: int, version: str = OBSERVATION_VERSION) -> int:
    """Length of the observation vector for an action of `action_size` (the previous action is included)."""
    return len(static_feature_names(version)) + len(DYNAMIC_FEATURES) + action_size


def _gini(values: np.ndarray) -> float:
    """Concentration of non-negative values in [0, 1): 0 when all channels are equally sensitive."""
    values = np.sort(np.clip(values, 0.0, None))
    total = values.sum()
    if len(values) < 2 or total <= 0:
        return 0.0
    ranks = np.arange(1, len(values) + 1)
    return float((2 * ranks - len(values) - 1) @ values / (len(values) * total))


def static_features(
    searchable: Sequence[LayerInfo], all_layers: Sequence[LayerInfo], traces: dict[str, np.ndarray]
) -> np.ndarray:
    """One row of `STATIC_FEATURES` per searchable layer, in step order."""
    total_params = sum(layer.params for layer in all_layers)
    total_macs = max(sum(layer.macs for layer in all_layers), 1)
    mean_trace_per_weight = np.array(
        [max(float(np.mean(traces[layer.name])) / layer.params_per_channel, 1e-30) for layer in searchable]
    )
    log_level = np.log(mean_trace_per_weight)
    spread = log_level.std()
    trace_level = (log_level - log_level.mean()) / spread if spread > 0 else np.zeros_like(log_level)
    rows = []
    depth_scale = max(len(searchable) - 1, 1)
    for index, layer in enumerate(searchable):
        channel_traces = traces[layer.name]
        rows.append(
            [
                index / depth_scale,
                *(float(layer.kind == kind) for kind in KINDS),
                np.log2(layer.in_channels) / 10,
                np.log2(layer.out_channels) / 10,
                np.log2(float(np.prod(layer.kernel_size))) / 6 if layer.kernel_size else 0.0,
                np.log2(max(layer.stride)) / 2 if layer.stride else 0.0,
                np.log10(layer.params) / 7,
                layer.params / total_params,
                layer.macs / total_macs,
                np.clip(trace_level[index], -3.0, 3.0) / 3,
                _gini(channel_traces),
                float(np.mean(channel_traces < 0)),
            ]
        )
    return np.asarray(rows, dtype=np.float32)


def observation(
    static_row: np.ndarray,
    budget_spent: float,
    left_per_weight: float,
    previous_action: np.ndarray,
) -> np.ndarray:
    """Concatenate a layer's static row with the budget state and the previous action, clipped to the box."""
    n_static = len(static_row)
    vector = np.empty(n_static + 2 + len(previous_action), dtype=np.float32)
    vector[:n_static] = static_row
    vector[n_static] = budget_spent
    vector[n_static + 1] = left_per_weight
    vector[n_static + 2 :] = previous_action
    np.minimum(vector, OBS_LIMIT, out=vector)
    return np.maximum(vector, -OBS_LIMIT, out=vector)
