"""Episodes played without learning: a policy's rollout, fixed actions, and a reused policy's zero-shot outcomes."""

import pytest

from agents.ddpg import make_agent
from agents.rollout import (
    ZERO_SHOT_OUTCOMES,
    best_outcome,
    outcome,
    play_actions,
    reuse_outcomes,
    rollout,
    rollout_with_reward,
)
from cwhawq.settings import AgentSettings
from envs.channel_bits_env import ChannelBitsEnv


def agent_on(env):
    return make_agent(env, AgentSettings(net_arch=(16, 16)), env.n_steps, seed=0)


@pytest.fixture(scope="module")
def level_env(digits_problem):
    return ChannelBitsEnv(digits_problem)


def test_rollout_is_the_policy_played_deterministically(level_env):
    model = agent_on(level_env)
    actions = []
    obs, _ = level_env.reset()
    for _ in range(level_env.n_steps):
        action, _ = model.predict(obs, deterministic=True)
        actions.append(action)
        obs, *_ = level_env.step(action)
    info, reward = outcome(play_actions(level_env, actions))
    assert rollout(model, level_env)["val_accuracy"] == info["val_accuracy"]
    assert rollout_with_reward(model, level_env)[1] == reward


def test_reuse_outcomes_add_the_rollout_fitted_to_the_budget(level_env):
    model = agent_on(level_env)
    evaluations = level_env.problem.evaluations
    played, fitted = reuse_outcomes(model, level_env)
    assert level_env.problem.evaluations == evaluations + len(ZERO_SHOT_OUTCOMES)
    assert played[0]["val_accuracy"] == rollout(model, level_env)["val_accuracy"]
    budget = level_env.problem.budget.total_bits
    assert 0.98 * budget <= fitted[0]["size_bits"] <= budget


def test_reuse_outcomes_of_a_shares_policy_is_its_rollout(digits_problem):
    env = ChannelBitsEnv(digits_problem, action="shares")
    (played,) = reuse_outcomes(agent_on(env), env)
    assert played[0]["size_bits"] <= digits_problem.budget.total_bits


def test_best_outcome_is_the_first_of_the_best_scored():
    outcomes = [({"val_score": score, "n": n}, 0.0) for n, score in enumerate([0.5, 0.9, 0.9])]
    assert best_outcome(outcomes)[0]["n"] == 1
