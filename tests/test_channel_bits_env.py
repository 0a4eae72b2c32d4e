"""The Gymnasium environment: API checks, budget at every step, determinism, terminal info."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from cwhawq.baselines import run_method
from cwhawq.baselines.perturbation import perturbation_table
from cwhawq.errors import CwhawqError
from cwhawq.problem import build_problem
from envs.channel_bits_env import ChannelBitsEnv
from envs.observation import HINT_METHODS, STATIC_FEATURES
from tests.conftest import small_settings


@pytest.fixture(scope="module", params=[("level", "v1"), ("shares", "v1"), ("level", "v2")])
def env(digits_problem, request):
    action, observation = request.param
    return ChannelBitsEnv(digits_problem, action=action, observation=observation)


def run_episode(env, actions):
    obs, _ = env.reset(seed=0)
    for action in actions:
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    return reward, info


def test_gymnasium_check_env(env):
    gym_check_env(env, skip_render_check=True)


def test_sb3_check_env(env):
    sb3_check_env(env, warn=True)


def test_registered(digits_problem):
    made = gym.make(envs.ENV_ID, problem=digits_problem)
    obs, _ = made.reset(seed=1)
    assert made.observation_space.contains(obs)


@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_layer_granularity_gives_uniform_layers(digits_problem, granularity):
    env = ChannelBitsEnv(digits_problem, granularity=granularity)
    rng = np.random.default_rng(0)
    _, info = run_episode(env, [rng.uniform(-1, 1, env.action_space.shape) for _ in range(env.n_steps)])
    if granularity == "layer":
        assert all(len(np.unique(bits)) == 1 for bits in info["assignment"].values())


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_budget_holds_and_is_used(env, data):
    size = env.action_space.shape[0]
    actions = [
        np.array(data.draw(st.lists(st.floats(-1, 1), min_size=size, max_size=size)), dtype=np.float32)
        for _ in range(env.n_steps)
    ]
    reward, info = run_episode(env, actions)
    problem = env.problem
    assert problem.size_bits(info["assignment"]) == info["size_bits"]
    assert info["size_bits"] <= problem.budget.total_bits
    assert info["size_bits"] >= 0.98 * problem.budget.total_bits
    assert reward == pytest.approx(10 * (info["val_score"] - problem.fp_score))


@pytest.fixture(scope="module")
def pinned_env(cache_dir):
    problem = build_problem(small_settings(cache_dir, pin={"conv1": 8}), progress=False)
    return ChannelBitsEnv(problem)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=3, max_size=3))
def test_pinned_layers_keep_their_bits_and_the_budget_holds(pinned_env, levels):
    assert [layer.name for layer in pinned_env.layers] == ["conv2", "fc1", "fc2"]
    _, info = run_episode(pinned_env, [np.array([level], dtype=np.float32) for level in levels])
    problem = pinned_env.problem
    assert np.all(info["assignment"]["conv1"] == 8)
    assert problem.size_bits(info["assignment"]) == info["size_bits"]
    assert 0.98 * problem.budget.total_bits <= info["size_bits"] <= problem.budget.total_bits


def test_channels_get_bits_in_trace_order(env):
    problem = dataclasses.replace(env.problem, channel_order="trace")
    env = ChannelBitsEnv(problem, action=env.action, observation=env.observation)
    _, info = run_episode(env, [np.zeros(env.action_space.shape, dtype=np.float32)] * env.n_steps)
    for layer in env.layers:
        traces = env.problem.traces.traces[layer.name]
        bits = info["assignment"][layer.name]
        order = np.argsort(-traces, kind="stable")
        assert np.all(np.diff(bits[order]) <= 0), layer.name


def test_perturbation_channel_order_places_the_same_counts_by_the_error_saved(digits_problem):
    problem = dataclasses.replace(digits_problem, channel_order="perturbation")
    actions = [np.full(1, 0.2, dtype=np.float32)] * len(problem.searchable)
    _, by_trace = run_episode(ChannelBitsEnv(dataclasses.replace(problem, channel_order="trace")), actions)
    _, by_error = run_episode(ChannelBitsEnv(problem), actions)
    table = perturbation_table(problem)
    moved = 0
    for layer in problem.searchable:
        bits = by_error["assignment"][layer.name]
        assert np.array_equal(np.sort(bits), np.sort(by_trace["assignment"][layer.name])), layer.name
        order = np.argsort(table[layer.name][:, 1] - table[layer.name][:, 0], kind="stable")
        assert np.all(np.diff(bits[order]) <= 0), layer.name
        moved += int(np.sum(bits != by_trace["assignment"][layer.name]))
    assert moved > 0  # on trained weights the two orders differ


def test_unknown_channel_order_is_refused(cache_dir):
    with pytest.raises(CwhawqError, match="unknown channel order 'random'"):
        build_problem(small_settings(cache_dir, channel_order="random"), progress=False)


def test_seeded_episodes_are_identical(env):
    actions = [np.full(env.action_space.shape, 0.3, dtype=np.float32)] * env.n_steps
    first = run_episode(env, actions)
    second = run_episode(env, actions)
    assert first[0] == second[0]
    for name, bits in first[1]["assignment"].items():
        assert np.array_equal(bits, second[1]["assignment"][name])


def test_level_actions_use_two_neighbouring_widths(digits_problem):
    env = ChannelBitsEnv(digits_problem, action="level")
    rng = np.random.default_rng(1)
    _, info = run_episode(env, [rng.uniform(-1, 1, 1).astype(np.float32) for _ in range(env.n_steps)])
    widths = list(env.bit_widths)
    # The budget guard may push the last layers further; the first layer is played as asked.
    first = np.unique(info["assignment"][env.layers[0].name])
    assert len(first) <= 2 and (len(first) == 1 or widths.index(first[1]) == widths.index(first[0]) + 1)


def test_shares_actions_for_reproduce_a_baselines_counts(digits_problem):
    # The greedy places bits by perturbation; the environment places the same counts in trace order. On the last
    # layer the guard spends what the budget has left: where that cannot buy a whole upgrade, it may trade channels
    # between widths at equal storage (two 6-bit channels for a 4 and an 8, say), depending on the weights.
    env = ChannelBitsEnv(digits_problem, action="shares")
    assignment = run_method(digits_problem, "greedy-channel")
    _, replayed = run_episode(env, env.actions_for(assignment))
    *first, last = env.layers
    for layer in first:
        assert np.array_equal(np.sort(assignment[layer.name]), np.sort(replayed["assignment"][layer.name])), layer.name
    assert replayed["assignment"][last.name].sum() == assignment[last.name].sum()
    assert replayed["size_bits"] == digits_problem.size_bits(assignment)


def test_v2_observation_adds_the_baselines_levels(digits_problem):
    v1 = ChannelBitsEnv(digits_problem, action="level")
    v2 = ChannelBitsEnv(digits_problem, action="level", observation="v2")
    n_static = len(STATIC_FEATURES)
    hints = np.hstack([np.stack(v2.actions_for(run_method(digits_problem, m))) for m in HINT_METHODS])
    obs1, _ = v1.reset()
    obs2, _ = v2.reset()
    for index in range(v1.n_steps):
        np.testing.assert_array_equal(obs2[:n_static], obs1[:n_static])
        np.testing.assert_allclose(obs2[n_static : n_static + len(HINT_METHODS)], hints[index], atol=1e-6)
        np.testing.assert_array_equal(obs2[n_static + len(HINT_METHODS) :], obs1[n_static:])
        obs1, *_ = v1.step(np.zeros(1, dtype=np.float32))
        obs2, *_ = v2.step(np.zeros(1, dtype=np.float32))


def test_unknown_observation_version_is_refused(digits_problem):
    with pytest.raises(CwhawqError, match="unknown observation version 'v9'"):
        ChannelBitsEnv(digits_problem, observation="v9")


@pytest.fixture(scope="module")
def level_env(digits_problem):
    return ChannelBitsEnv(digits_problem)


def nominal_storage(env, actions):
    """The storage the actions ask for before the guard and rounding (what `fit_to_budget` fits)."""
    return sum(layer.params * (env._ratios(action) @ env.bit_widths) for layer, action in zip(env.layers, actions))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4))
def test_fit_to_budget_shifts_every_level_alike_and_uses_the_budget(level_env, levels):
    actions = [np.array([level], dtype=np.float32) for level in levels]
    fitted = np.array([action[0] for action in level_env.fit_to_budget(actions)])
    shifts = fitted - np.float32(levels)
    inside = np.abs(fitted) < 1 - 1e-6  # a clipped level moves less than the common shift
    if inside.any():
        assert np.ptp(shifts[inside]) < 1e-5
    assert np.all(np.diff(fitted[np.argsort(levels, kind="stable")]) >= -1e-6)  # the layers' order is kept
    budget = level_env.problem.budget.total_bits
    assert nominal_storage(level_env, [np.array([level]) for level in fitted]) <= budget + 1e-6 * budget
    _, info = run_episode(level_env, [np.array([level], dtype=np.float32) for level in fitted])
    assert 0.98 * budget <= info["size_bits"] <= budget


def test_fit_to_budget_raises_too_low_levels_to_the_budget(level_env):
    lowest = [np.array([-1.0], dtype=np.float32)] * level_env.n_steps
    fitted = level_env.fit_to_budget(lowest)
    assert len({float(action[0]) for action in fitted}) == 1 and fitted[0][0] > -1.0
    budget = level_env.problem.budget.total_bits
    assert nominal_storage(level_env, fitted) == pytest.approx(budget, rel=1e-4)


def test_fit_to_budget_needs_a_scalar_action_and_one_per_layer(digits_problem, level_env):
    shares = ChannelBitsEnv(digits_problem, action="shares")
    with pytest.raises(CwhawqError, match="scalar action"):
        shares.fit_to_budget([np.zeros(3, dtype=np.float32)] * shares.n_steps)
    with pytest.raises(CwhawqError, match="one action per searchable layer"):
        level_env.fit_to_budget([np.zeros(1, dtype=np.float32)])
