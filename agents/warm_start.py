"""Warm start: begin the search from a baseline's solution instead of from a random policy.

The start comes from a baseline's assignment: a named one, or by default ("best") every deterministic baseline.
Each is evaluated as it is and replayed: turned into the environment's actions (its shares per bit-width, channels
in the problem's channel order, each layer over at most two neighbouring widths with the level action) and played
as an episode, which can score far higher or lower than the baseline itself (ResNet-mini at 2.25 bits: the channel
greedy scores 83.3% validation as it places its bits, 89.1% replayed; docs/BENCHMARKS.md, change 35).
Every replay goes into the replay buffer, and the best on validation is cloned into the actor by a short
regression, so that exploration starts around the best start the policy can reproduce. All of these count as
evaluations of the search, which keeps the best assignment it measures. `known` outcomes (a transferred
policy's zero-shot outcomes in a fine-tune, a coarse phase's best) compete with the replays and are replayed when
they win, so that a fine-tune explores around the best start it knows rather than around a policy that may not
fit the new model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agents.ddpg import HaqDDPG
from agents.rollout import Outcome, Step, best_outcome, outcome, play_actions
from cwhawq.baselines import DETERMINISTIC_METHODS, run_method
from cwhawq.problem import Assignment
from envs.channel_bits_env import ChannelBitsEnv, evaluate_outcome

#: `warm_start` value that evaluates every deterministic baseline and starts from the best on validation.
BEST = "best"


@dataclass
class WarmStart:
    """What a warm start measured, for the search record, and the start it cloned into the actor: a baseline's
    replay ("greedy-channel, replayed") or the caller's label of the `known` outcomes."""

    evaluations: list[Outcome]
    start: str


def _replay(model: HaqDDPG, env: ChannelBitsEnv, assignment: Assignment) -> tuple[list[np.ndarray], list[Step]]:
    """Play the actions that reproduce `assignment` as an episode and store its steps in the replay buffer."""
    actions = env.actions_for(assignment)
    steps = play_actions(env, actions)
    for (obs, next_obs, reward, terminated, info), action in zip(steps, actions):
        model.replay_buffer.add(
            obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]), [info]
        )
    return actions, steps


def warm_start(
    model: HaqDDPG,
    env: ChannelBitsEnv,
    start: str,
    known: Sequence[Outcome] = (),
    baseline_actor: Mapping[str, torch.Tensor] | None = None,
    known_label: str = "a known outcome",
) -> WarmStart:
    """Evaluate the baseline(s) named by `start` as they are and replayed in `env`, then clone the best replay, or
    the replay of the best `known` outcome (already evaluated, e.g. a transferred policy's zero-shot outcomes)
    where that is better on validation, into the actor. With `baseline_actor`, a baseline's replay is cloned into
    an actor with those weights instead of the current ones (a fine-tune: the transferred actor is kept only when
    its own output is the best start; docs/BENCHMARKS.md, change 31). `known_label` names the known outcomes in the
    returned `WarmStart.start` when one of them wins.
    """
    names = list(DETERMINISTIC_METHODS) if start == BEST else [start]
    baselines = [evaluate_outcome(env.problem, run_method(env.problem, name)) for name in names]
    replays = [_replay(model, env, info["assignment"]) for info, _ in baselines]
    best = max(range(len(replays)), key=lambda index: outcome(replays[index][1])[0]["val_score"])
    (actions, steps), chosen = replays[best], f"{names[best]}, replayed"
    evaluations = [*baselines, *(outcome(played) for _, played in replays)]
    best_known = best_outcome(known)[0] if known else None
    if best_known is not None and best_known["val_score"] > outcome(steps)[0]["val_score"]:
        (actions, steps), chosen = _replay(model, env, best_known["assignment"]), known_label
        evaluations.append(outcome(steps))
    elif baseline_actor is not None:
        model.actor.load_state_dict(baseline_actor)
    model.imitate(np.stack([step[0] for step in steps]), np.stack(actions))
    model.explore_from_policy = True
    return WarmStart(evaluations, chosen)
