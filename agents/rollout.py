"""Playing episodes without learning: a policy's deterministic rollout, a fixed list of actions, and the rollout of
a reused policy with its levels fitted to the new model's budget.

A policy trained on one model and applied to another often asks for more bits on its first layers than the
budget allows for the rest; the environment's guard then charges the whole overspend to the last layers (LeNet-5
under a policy distilled from the other models: fc1, 78% of the weights, starved to 2.2 bits at a 3.0-bit budget).
`reuse_outcomes` therefore also plays the rollout's actions shifted by one common amount so that their storage
fits the budget (`ChannelBitsEnv.fit_to_budget`): the policy's preferences between layers survive, and the
correction is spread over every layer instead of the last ones (docs/BENCHMARKS.md, change 18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agents.ddpg import HaqDDPG
from envs.channel_bits_env import ChannelBitsEnv

#: One step of a played episode: (observation, next observation, reward, terminated, info).
Step = tuple[np.ndarray, np.ndarray, float, bool, dict[str, Any]]
#: The terminal (info, reward) of an evaluated episode or assignment.
Outcome = tuple[dict[str, Any], float]
#: A deterministic policy: the action for an observation.
Act = Callable[[np.ndarray], np.ndarray]
#: What `reuse_outcomes` returns, in order (the second only for a scalar action).
ZERO_SHOT_OUTCOMES = ("rollout", "fitted_to_budget")


def play_actions(env: ChannelBitsEnv, actions: Sequence[np.ndarray]) -> list[Step]:
    """Play `actions` as one episode of `env` (evaluated at its end): (obs, next_obs, reward, terminated, info) of
    every step."""
    steps = []
    obs, _ = env.reset()
    for action in actions:
        next_obs, reward, terminated, _, info = env.step(action)
        steps.append((obs, next_obs, float(reward), bool(terminated), info))
        obs = next_obs
    return steps


def outcome(steps: Sequence[Step]) -> Outcome:
    """The (terminal info, reward) of a played episode."""
    _, _, reward, _, info = steps[-1]
    return info, reward


def _deterministic(model: HaqDDPG) -> Act:
    """The agent's action without exploration noise."""
    return lambda obs: model.predict(obs, deterministic=True)[0]


def _policy_episode(act: Act, env: ChannelBitsEnv) -> tuple[list[np.ndarray], Outcome]:
    """One episode of a deterministic policy: its actions and terminal (info, reward)."""
    actions = []
    obs, _ = env.reset()
    while True:
        action = act(obs)
        actions.append(np.asarray(action, dtype=np.float32))
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return actions, (info, float(reward))


def rollout_with_reward(model: HaqDDPG, env: ChannelBitsEnv) -> Outcome:
    """One deterministic episode of the policy; returns its terminal (info, reward)."""
    return _policy_episode(_deterministic(model), env)[1]


def rollout(model: HaqDDPG, env: ChannelBitsEnv) -> dict[str, Any]:
    """One deterministic episode of the policy; returns the terminal info (assignment, size, accuracy)."""
    return rollout_with_reward(model, env)[0]


def reuse_outcomes(model: HaqDDPG, env: ChannelBitsEnv) -> list[Outcome]:
    """A reused policy's deterministic rollout and, for a scalar action, the same actions fitted to the budget.

    Both are evaluated on validation (two evaluations; one for the "shares" action, which has no single level to
    shift). Callers keep the better one (`best_outcome`) or hand both to a fine-tune's warm start.
    """
    return zero_shot_outcomes(_deterministic(model), env)


def zero_shot_outcomes(act: Act, env: ChannelBitsEnv) -> list[Outcome]:
    """`reuse_outcomes` for any deterministic policy `act`, e.g. a rule that is not an agent."""
    actions, played = _policy_episode(act, env)
    if env.action == "shares":
        return [played]
    return [played, outcome(play_actions(env, env.fit_to_budget(actions)))]


def best_outcome(outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome with the highest validation score (the first of equals)."""
    return max(outcomes, key=lambda candidate: candidate[0]["val_score"])
