"""The warm start: baselines evaluated as they are and replayed, the best replay cloned into the actor."""

import numpy as np
import pytest

from agents.ddpg import make_agent
from agents.rollout import play_actions
from agents.warm_start import BEST, warm_start
from cwhawq.baselines import DETERMINISTIC_METHODS, run_method
from cwhawq.settings import AgentSettings
from envs.channel_bits_env import ChannelBitsEnv


@pytest.fixture()
def agent_and_env(digits_problem):
    env = ChannelBitsEnv(digits_problem)
    return make_agent(env, AgentSettings(net_arch=(32, 32)), env.n_steps, seed=0), env


def replayed_val(env, name):
    """Validation score of baseline `name`'s counts played as an episode, and its actions."""
    actions = env.actions_for(run_method(env.problem, name))
    return play_actions(env, actions)[-1][4]["val_score"], actions


def test_every_baseline_is_evaluated_as_is_and_replayed(agent_and_env):
    model, env = agent_and_env
    outcomes = warm_start(model, env, BEST).evaluations
    n = len(DETERMINISTIC_METHODS)
    assert len(outcomes) == 2 * n
    problem = env.problem
    as_is = [problem.score(problem.validate(run_method(problem, name), count=False)) for name in DETERMINISTIC_METHODS]
    assert [info["val_score"] for info, _ in outcomes[:n]] == as_is
    replayed = [replayed_val(env, m)[0] for m in DETERMINISTIC_METHODS]
    assert [info["val_score"] for info, _ in outcomes[n:]] == replayed
    assert model.replay_buffer.size() == n * env.n_steps  # every replay, step by step


def test_the_best_replay_is_cloned_into_the_actor(agent_and_env):
    model, env = agent_and_env
    started = warm_start(model, env, BEST).start
    replays = [replayed_val(env, name) for name in DETERMINISTIC_METHODS]
    _, best_actions = max(replays, key=lambda replay: replay[0])
    best_name = max(DETERMINISTIC_METHODS, key=lambda name: replayed_val(env, name)[0])
    assert started == f"{best_name}, replayed"
    obs, _ = env.reset()
    for expected in best_actions:
        action, _ = model.predict(obs, deterministic=True)
        assert action == pytest.approx(np.clip(expected, -0.98, 0.98), abs=0.05)
        obs, *_ = env.step(expected)


def test_a_better_known_outcome_is_replayed_and_cloned(agent_and_env):
    model, env = agent_and_env
    known = run_method(env.problem, "ilp-layer")
    warm = warm_start(
        model, env, "uniform", known=[({"assignment": known, "val_score": 1.0}, 0.0)], known_label="the ILP's answer"
    )
    outcomes = warm.evaluations
    assert warm.start == "the ILP's answer"
    assert len(outcomes) == 3  # uniform as is, uniform replayed, the known assignment replayed
    assert model.replay_buffer.size() == 2 * env.n_steps
    obs, _ = env.reset()
    for expected in env.actions_for(known):
        action, _ = model.predict(obs, deterministic=True)
        assert action == pytest.approx(np.clip(expected, -0.98, 0.98), abs=0.05)
        obs, *_ = env.step(expected)
