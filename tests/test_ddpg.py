"""The DDPG agent's HAQ schedule: decaying noise, split learning rates, how warm-up episodes act, the anchor."""

import dataclasses

import numpy as np
import pytest
from stable_baselines3.common.logger import configure

from agents.ddpg import DecayingNormalNoise, make_agent
from cwhawq.settings import AgentSettings
from envs.channel_bits_env import ChannelBitsEnv


def test_noise_is_constant_during_warm_up_then_decays():
    noise = DecayingNormalNoise(size=3, sigma=0.5, decay=0.9, warmup_episodes=2, seed=0)
    sigmas = []
    for _ in range(5):
        sigmas.append(noise.sigma)
        noise.reset()
    assert sigmas == pytest.approx([0.5, 0.5, 0.5, 0.45, 0.405])


@pytest.mark.parametrize(("layers", "noisy_per_episode"), [(0, 4), (1, 1), (2, 2), (4, 4), (9, 4)])
def test_noise_moves_the_given_number_of_layers_per_episode(layers, noisy_per_episode):
    noise = DecayingNormalNoise(
        size=1, sigma=0.5, decay=1.0, warmup_episodes=0, seed=0, layers=layers, steps_per_episode=4
    )
    chosen = []
    for _ in range(20):
        steps = [noise() for _ in range(4)]
        noise.reset()
        chosen.append(tuple(i for i, step in enumerate(steps) if step.any()))
    assert {len(steps) for steps in chosen} == {noisy_per_episode}
    assert len(set(chosen)) > 1 or noisy_per_episode == 4  # a new choice of layers per episode


def test_geometric_law_draws_a_number_of_noisy_layers_per_episode_with_the_given_mean():
    steps_per_episode, episodes = 10, 4000
    noise = DecayingNormalNoise(
        size=1, sigma=0.5, decay=1.0, warmup_episodes=0, seed=0, layers=2, steps_per_episode=steps_per_episode,
        layers_law="geometric",
    )  # fmt: skip
    counts = []
    for _ in range(episodes):
        counts.append(sum(bool(noise().any()) for _ in range(steps_per_episode)))
        noise.reset()
    counts = np.array(counts)
    assert counts.min() == 1 and counts.max() == steps_per_episode  # one layer up to every layer
    assert np.mean(counts == 1) == pytest.approx(0.5, abs=0.03)  # geometric with mean 2: half the episodes move one
    assert counts.mean() == pytest.approx(2.0, abs=0.1)  # the cap at 10 layers barely lowers the mean


def test_unknown_noise_layers_law_is_refused():
    with pytest.raises(ValueError, match="unknown noise layers law"):
        DecayingNormalNoise(size=1, sigma=0.5, decay=1.0, warmup_episodes=0, seed=0, layers_law="poisson")


def test_actor_learns_slower_than_critic(digits_problem):
    env = ChannelBitsEnv(digits_problem)
    agent = make_agent(env, AgentSettings(net_arch=(8,)), env.n_steps, seed=0)
    agent.set_logger(configure(None, []))
    agent._update_learning_rate([agent.actor.optimizer, agent.critic.optimizer])
    assert agent.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert agent.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(("share", "random_episodes"), [(0.0, []), (0.5, [1, 3, 5, 7]), (1.0, list(range(8)))])
def test_warm_up_random_share_is_spread_evenly(digits_problem, share, random_episodes):
    env = ChannelBitsEnv(digits_problem)
    agent = make_agent(env, AgentSettings(net_arch=(8,), warmup_random_share=share), env.n_steps, seed=0)
    chosen = []
    for episode in range(8):
        agent._episode_num = episode
        if agent._random_episode(agent.warmup_random_share):
            chosen.append(episode)
    assert chosen == random_episodes


def test_warm_up_explores_around_the_policy(digits_problem):
    # With explore_from_policy and no random share, warm-up actions are the policy's plus noise, never uniform.
    env = ChannelBitsEnv(digits_problem)
    settings = AgentSettings(net_arch=(8,), noise_sigma=1e-6)
    agent = make_agent(env, settings, env.n_steps, seed=0)
    agent.explore_from_policy = True
    obs, _ = env.reset()
    agent._last_obs = obs[None]
    action, _ = agent._sample_action(learning_starts=10**6, action_noise=agent.action_noise)
    expected, _ = agent.predict(obs, deterministic=True)
    np.testing.assert_allclose(action[0], expected, atol=1e-4)


@pytest.mark.parametrize("updates_per_step", [1, 3])
def test_each_update_makes_updates_per_step_gradient_steps_per_env_step(digits_problem, updates_per_step):
    env = ChannelBitsEnv(digits_problem)
    settings = AgentSettings(net_arch=(8,), warmup_episodes=1, batch_size=2, updates_per_step=updates_per_step)
    agent = make_agent(env, settings, env.n_steps, seed=0)
    agent.learn(total_timesteps=3 * env.n_steps)
    # Warm-up episode 1 makes no update; episodes 2 and 3 make one each, of n_steps * updates_per_step steps.
    assert agent._n_updates == 2 * env.n_steps * updates_per_step


@pytest.mark.parametrize("random_share", [0.0, 0.5])
def test_random_share_samples_uniformly_after_warm_up(digits_problem, random_share):
    # After warm-up, random episodes ignore the policy; the others act with the policy (plus tiny noise).
    env = ChannelBitsEnv(digits_problem)
    settings = AgentSettings(net_arch=(8,), noise_sigma=1e-6, random_share=random_share)
    agent = make_agent(env, settings, env.n_steps, seed=0)
    obs, _ = env.reset()
    agent._last_obs = obs[None]
    agent.num_timesteps = agent.learning_starts  # warm-up is over
    expected, _ = agent.predict(obs, deterministic=True)
    uniform = []
    for episode in range(4):
        agent._episode_num = episode
        action, _ = agent._sample_action(agent.learning_starts, action_noise=agent.action_noise)
        uniform.append(not np.allclose(action[0], expected, atol=1e-4))
    assert uniform == [False, True, False, True] if random_share else uniform == [False] * 4


def test_imitate_clones_an_episode_and_anchors_the_actor_there(digits_problem):
    env = ChannelBitsEnv(digits_problem)
    agent = make_agent(env, AgentSettings(net_arch=(32,)), env.n_steps, seed=0)
    observations = np.random.default_rng(0).uniform(-1, 1, (env.n_steps, *env.observation_space.shape))
    actions = np.linspace(-0.5, 0.5, env.n_steps * env.action_space.shape[0]).reshape(env.n_steps, -1)
    assert agent.anchor is None and agent.anchor_drift() is None
    agent.imitate(observations, actions)
    assert agent.anchor[0] is observations and agent.anchor[1] is actions
    assert agent.anchor_drift() < 0.05
    predicted, _ = agent.predict(observations, deterministic=True)
    assert agent.anchor_drift() == pytest.approx(np.abs(predicted - actions).max(), abs=1e-6)


def test_updates_pull_the_actor_back_toward_the_anchor(digits_problem):
    # DDPG's updates move the actor away from the episode it imitated; with anchor steps, each update ends with
    # a regression back toward it, so the actor stays closer than without.
    env = ChannelBitsEnv(digits_problem)
    settings = AgentSettings(net_arch=(8,), warmup_episodes=1, batch_size=4, actor_lr=1e-3, updates_per_step=10)
    drifts = {}
    for steps in (0, 30):
        agent = make_agent(env, dataclasses.replace(settings, anchor_steps=steps), env.n_steps, seed=0)
        observations = np.stack([env.reset()[0]] * env.n_steps)
        actions = np.full((env.n_steps, env.action_space.shape[0]), 0.5)
        agent.imitate(observations, actions)
        agent.learn(total_timesteps=6 * env.n_steps)
        drifts[steps] = agent.anchor_drift()
    assert drifts[0] > 0.5  # the updates alone carry the actor far off the episode
    assert drifts[30] < 0.7 * drifts[0]
