"""`cwhawq/ChannelBits-v0`: one step per searchable layer, choosing the shares of its channels at each bit-width.

Reward (terminal step only; every other step gives 0): ``10 * (score_q - score_fp)`` on validation, where the
score is the problem's objective (`QuantProblem.score`). With the accuracy objective (fractions) that is HAQ's
``0.1 * (acc_q - acc_fp)`` in percentage points: 0 for a lossless assignment and about -1 per 10 points lost; with
the "kl" objective it is -10 times the mean KL divergence from the full-precision predictions. No size term is
needed because the budget guard makes every episode end inside the budget and using (up to rounding) all of it,
so episodes differ only in how the bits are spread; the discount is 1, so the terminal reward is the return of
every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cwhawq.allocation import place_bits
from cwhawq.baselines import run_method
from cwhawq.baselines.perturbation import channel_orders
from cwhawq.cost import layer_weight_bits
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.settings import AgentSettings, ProblemSettings
from envs.action_mapping import (
    action_to_ratios,
    fit_counts,
    fit_uniform,
    layer_action_to_ratios,
    level_action_for,
    level_action_to_ratios,
)
from envs.observation import (
    HINT_METHODS,
    OBS_LIMIT,
    OBSERVATION_VERSION,
    OBSERVATION_VERSIONS,
    observation,
    observation_size,
    static_features,
)

GRANULARITIES = ("channel", "layer")
#: Channel-granularity action parameterisations (see `envs.action_mapping`).
ACTIONS = ("level", "shares")
REWARD_SCALE = 10.0


class ChannelBitsEnv(gym.Env):
    """Mixed-precision search over a `QuantProblem`, one layer per step, under a budget enforced at every step.

    Args:
        problem: the model, traces, budget and evaluator; built from `settings` (default: the digits CNN at 2.5
            average bits) when omitted.
        settings: used only when `problem` is omitted.
        granularity: "channel" (the action sets how many channels get each bit-width, channels get bits in the
            problem's channel order, `cwhawq.baselines.perturbation.channel_orders`) or "layer" (HAQ-style
            ablation: a scalar action picks one bit-width for the whole layer).
        action: how a channel-granularity action sets the counts: "level" (a scalar fractional position on
            the bit-width ladder, split over two neighbouring widths) or "shares" (one share per bit-width).
        observation: the observation version (`envs.observation`): "v1" describes each layer, "v2" adds the
            level two deterministic baselines give it.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        problem: QuantProblem | None = None,
        settings: ProblemSettings | None = None,
        granularity: str = "channel",
        action: str = "level",
        observation: str = OBSERVATION_VERSION,
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        if observation not in OBSERVATION_VERSIONS:
            raise CwhawqError(f"unknown observation version {observation!r}; use one of {list(OBSERVATION_VERSIONS)}")
        self.problem = problem if problem is not None else build_problem(settings or ProblemSettings())
        self.granularity = granularity
        self.action = action if granularity == "channel" else "layer"
        self.observation = observation
        self.layers = self.problem.searchable
        if not self.layers:
            raise CwhawqError(
                "every layer is pinned, so there is nothing to search; unpin a layer, or report the pinned "
                "assignment with `cwhawq baseline --method uniform`"
            )
        if len(self.problem.bit_widths) < 2:
            raise CwhawqError(
                f"a search needs at least two candidate bit-widths, not {list(self.problem.bit_widths)}; pass more "
                "--bits, or use `cwhawq baseline --method uniform` for a single width"
            )
        widths = np.asarray(self.problem.bit_widths, dtype=np.int64)
        self.bit_widths = widths
        action_size = len(widths) if self.action == "shares" else 1
        self.action_space = spaces.Box(-1.0, 1.0, (action_size,), dtype=np.float32)
        self.observation_space = spaces.Box(
            -OBS_LIMIT, OBS_LIMIT, (observation_size(action_size, observation),), np.float32
        )

        traces = self.problem.traces.traces
        self._static = static_features(self.layers, self.problem.layers, traces)
        if observation == "v2":
            self._static = np.hstack([self._static, self._hints()])
        orders = channel_orders(self.problem)
        self._orders = [orders[layer.name] for layer in self.layers]
        full_cost = np.array([layer.params for layer in self.layers], dtype=np.int64)
        self._params_left = np.cumsum(full_cost[::-1])[::-1]
        rest = np.append(self._params_left[1:], 0)
        self._rest_min = rest * int(widths[0])
        self._rest_max = rest * int(widths[-1])
        self._pinned = self.problem.pinned_assignment()
        # Only the pinned layers: `size_bits` of this partial assignment would count every other layer as FP32.
        pinned_cost = sum(layer_weight_bits(layer, None) for layer in self.problem.layers if layer.pinned_bits)
        # A budget above the all-highest cost cannot be used up; aim at what can be reached.
        reachable = pinned_cost + int(self._params_left[0]) * int(widths[-1])
        self._target = min(self.problem.budget.total_bits, reachable)
        self._pinned_cost = pinned_cost
        self._reset_state()

    @classmethod
    def for_agent(cls, problem: QuantProblem, agent: AgentSettings, granularity: str = "channel") -> ChannelBitsEnv:
        """The environment an agent with `agent` settings searches in: its action and observation version."""
        return cls(problem, granularity=granularity, action=agent.action, observation=agent.observation)

    @property
    def n_steps(self) -> int:
        """Steps per episode: one per searchable layer."""
        return len(self.layers)

    def _reset_state(self) -> None:
        self._index = 0
        self._spent = self._pinned_cost
        self._assignment: Assignment = dict(self._pinned)
        self._previous_action = np.zeros(self.action_space.shape, dtype=np.float32)

    def _observe(self) -> np.ndarray:
        index = min(self._index, self.n_steps - 1)
        widths = self.bit_widths
        left_per_weight = (self._target - self._spent) / self._params_left[index]
        return observation(
            self._static[index],
            self._spent / self._target,
            (left_per_weight - widths[0]) / (widths[-1] - widths[0]),
            self._previous_action,
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new assignment at the first searchable layer."""
        super().reset(seed=seed)
        self._reset_state()
        return self._observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Give the current layer's channels their bits; evaluate the model after the last layer."""
        layer = self.layers[self._index]
        action = np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)
        ratios = self._ratios(action)
        fit = fit_uniform if self.action == "layer" else fit_counts
        left = self._target - self._spent
        counts = fit(
            ratios,
            layer.out_channels,
            layer.params_per_channel,
            self.bit_widths,
            low_bits=left - self._rest_max[self._index],
            high_bits=left - self._rest_min[self._index],
        )
        self._assignment[layer.name] = place_bits(self._orders[self._index], counts, self.bit_widths)
        self._spent += layer.params_per_channel * int(counts @ self.bit_widths)
        self._previous_action = np.minimum(np.maximum(action, -1.0), 1.0)
        self._index += 1
        if self._index < self.n_steps:
            return self._observe(), 0.0, False, False, {}
        return self._observe(), *self._finish()

    def _ratios(self, action: np.ndarray) -> np.ndarray:
        """The share of a layer's channels that `action` asks for at each candidate bit-width, before the guard."""
        if self.action == "shares":
            return action_to_ratios(action)
        if self.action == "level":
            return level_action_to_ratios(action, len(self.bit_widths))
        return layer_action_to_ratios(action, len(self.bit_widths))

    def fit_to_budget(self, actions: Sequence[np.ndarray], iterations: int = 60) -> list[np.ndarray]:
        """Shift one episode's scalar actions by a common amount so that the storage they ask for fits the budget.

        The shift is the largest (found by bisection; storage grows with it) whose layers' storage, before
        rounding to whole channels, fits in what the budget leaves after pinned layers. Played as an episode,
        the shifted actions keep the order the original ones put the layers in, and the guard only rounds;
        played as they are, the guard charges everything the first layers overspent to the last ones.
        """
        if self.action == "shares":
            raise CwhawqError("only a scalar action (level or layer) can be fitted to the budget, not 'shares'")
        if len(actions) != self.n_steps:
            raise CwhawqError(f"need one action per searchable layer ({self.n_steps}), got {len(actions)}")
        levels = np.array([float(np.asarray(action).reshape(-1)[0]) for action in actions])
        params = np.array([layer.params for layer in self.layers], dtype=np.float64)
        available = self._target - self._pinned_cost

        def shifted(shift: float) -> np.ndarray:
            return np.clip(levels + shift, -1.0, 1.0)

        def storage(shift: float) -> float:
            bits = [self._ratios(np.array([level])) @ self.bit_widths for level in shifted(shift)]
            return float(params @ np.asarray(bits))

        low, high = -2.0, 2.0  # from every layer at the lowest width to every layer at the highest
        if storage(high) <= available:
            return [np.array([level], dtype=np.float32) for level in shifted(high)]
        for _ in range(iterations):
            middle = (low + high) / 2.0
            low, high = (middle, high) if storage(middle) <= available else (low, middle)
        return [np.array([level], dtype=np.float32) for level in shifted(low)]

    def _hints(self) -> np.ndarray:
        """Per searchable layer, the level action of each of `HINT_METHODS`' assignments (one column each)."""
        columns = []
        for method in HINT_METHODS:
            assignment = run_method(self.problem, method)
            columns.append([level_action_for(self._counts(assignment, layer.name))[0] for layer in self.layers])
        return np.asarray(columns, dtype=np.float32).T

    def _counts(self, assignment: Assignment, name: str) -> np.ndarray:
        """Channels of layer `name` at each candidate bit-width in `assignment`."""
        return (np.asarray(assignment[name])[:, None] == self.bit_widths[None, :]).sum(axis=0)

    def actions_for(self, assignment: Assignment) -> list[np.ndarray]:
        """Actions that reproduce `assignment`'s share of channels at each bit-width, layer by layer.

        Shares: ``2 * r / max(r) - 1`` for the shares r, which `action_to_ratios` maps back to r exactly (which
        channel gets which bits then follows the channel order). Level: the channels' mean position on the
        bit-width ladder, exact when the layer uses at most two neighbouring widths. Layer granularity: the
        centre of the action interval of the layer's most common bit-width.
        """
        actions = []
        for layer in self.layers:
            counts = self._counts(assignment, layer.name)
            if self.action == "shares":
                action = 2.0 * counts / counts.max() - 1.0
            elif self.action == "level":
                action = level_action_for(counts)
            else:
                action = np.array([2.0 * (int(np.argmax(counts)) + 0.5) / len(self.bit_widths) - 1.0])
            actions.append(action.astype(np.float32))
        return actions

    def _finish(self) -> tuple[float, bool, bool, dict[str, Any]]:
        info, reward = evaluate_outcome(self.problem, self._assignment, size_bits=self._spent)
        return reward, True, False, info


def evaluate_outcome(
    problem: QuantProblem, assignment: Assignment, size_bits: int | None = None
) -> tuple[dict[str, Any], float]:
    """Evaluate a complete assignment on validation: the terminal step's (info, reward).

    Also used for assignments that do not come from an episode (warm-start baselines), so that they are recorded
    exactly like episodes. `size_bits` is the assignment's storage when the caller already knows it.
    """
    size = problem.size_bits(assignment) if size_bits is None else size_bits
    evaluation = problem.validate(assignment)
    score = problem.score(evaluation)
    info = {
        "assignment": {name: np.asarray(bits).copy() for name, bits in assignment.items()},
        "size_bits": size,
        "budget_bits": problem.budget.total_bits,
        "avg_bits": size / problem.n_weights,
        "val_accuracy": evaluation.accuracy,
        "val_kl": evaluation.kl,
        "val_score": score,
        "fp_val_accuracy": problem.fp_val_accuracy,
    }
    return info, REWARD_SCALE * (score - problem.fp_score)
