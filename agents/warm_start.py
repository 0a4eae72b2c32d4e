"""Warm start: begin the search from a baseline's solution instead of from a random policy.

The baseline assignment (by default the channel-wise greedy knapsack on the Hessian-weighted perturbation) is
evaluated as it is (one evaluation: the baseline chooses channels by perturbation, which can beat trace order),
then turned into the environment's actions (its shares per bit-width, channels in trace order), played as an
episode, stored in the replay buffer, and cloned into the actor by a short regression, so that exploration
starts around it. Both count as evaluations of the search, which keeps the best assignment it measures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.ddpg import HaqDDPG
from cwhawq.problem import Assignment, QuantProblem
from envs.channel_bits_env import REWARD_SCALE, ChannelBitsEnv

#: Regression targets are kept inside tanh's reach.
TARGET_LIMIT = 0.98


def clone_actions(model: HaqDDPG, observations: np.ndarray, actions: np.ndarray, steps: int = 300) -> float:
    """Fit the actor (and its target) to output `actions` for `observations`; return the final mean squared error."""
    obs = torch.as_tensor(observations, dtype=torch.float32, device=model.device)
    target = torch.as_tensor(np.clip(actions, -TARGET_LIMIT, TARGET_LIMIT), dtype=torch.float32, device=model.device)
    optimizer = torch.optim.Adam(model.actor.parameters(), lr=1e-3)
    model.actor.set_training_mode(True)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model.actor(obs), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.actor.set_training_mode(False)
    model.actor_target.load_state_dict(model.actor.state_dict())
    return loss.item()


def evaluate_candidate(problem: QuantProblem, assignment: Assignment) -> tuple[dict[str, Any], float]:
    """Evaluate an assignment as the search would an episode: (terminal-info-like dict, reward)."""
    size = problem.size_bits(assignment)
    accuracy = problem.evaluate(assignment)
    info = {
        "assignment": assignment,
        "size_bits": size,
        "avg_bits": size / problem.n_weights,
        "val_accuracy": accuracy,
        "fp_val_accuracy": problem.fp_val_accuracy,
    }
    return info, REWARD_SCALE * (accuracy - problem.fp_val_accuracy)


def warm_start(model: HaqDDPG, env: ChannelBitsEnv, assignment: Assignment) -> list[tuple[dict[str, Any], float]]:
    """Evaluate `assignment`, play its shares as an episode into the replay buffer, and clone it into the actor.

    Returns (terminal info, reward) of both evaluations, for the search record.
    """
    outcomes = [evaluate_candidate(env.problem, assignment)]
    actions = env.actions_for(assignment)
    observations = []
    obs, _ = env.reset()
    for action in actions:
        next_obs, reward, terminated, _, info = env.step(action)
        model.replay_buffer.add(
            obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]), [info]
        )
        observations.append(obs)
        obs = next_obs
    clone_actions(model, np.stack(observations), np.stack(actions))
    model.explore_from_policy = True
    return [*outcomes, (info, reward)]
