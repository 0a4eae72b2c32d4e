"""Settings: what result.json records can be read back."""

import dataclasses
from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cwhawq.errors import CwhawqError
from cwhawq.settings import DEFAULT_EPISODES, MAX_SEED, AgentSettings, ProblemSettings, SearchSettings, TraceSettings
from envs.observation import OBSERVATION_VERSION


@pytest.mark.parametrize(
    "settings",
    [
        ProblemSettings(),
        ProblemSettings(model="lenet5", budget_bits=None, budget_mb=0.01, bit_widths=(2, 4, 8), pin={"fc*": 8},
                        traces=TraceSettings(max_probes=4, num_batches=1), cache_dir="/tmp/x"),  # fmt: skip
    ],
)
def test_problem_settings_round_trip(settings):
    assert ProblemSettings.from_dict(asdict(settings)) == settings


def test_unknown_keys_are_not_silently_dropped():
    with pytest.raises(TypeError):
        ProblemSettings.from_dict({**asdict(ProblemSettings()), "future_option": 1})


def test_default_observation_is_the_environments():
    assert AgentSettings().observation == OBSERVATION_VERSION


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 1.5, True, "3"])
@pytest.mark.parametrize("settings_type", [ProblemSettings, SearchSettings])
def test_a_seed_the_seeded_libraries_refuse_is_refused_in_one_line(seed, settings_type):
    with pytest.raises(CwhawqError, match="seed must be an integer from 0 to 2\\*\\*32 - 1"):
        settings_type(seed=seed)


@pytest.mark.parametrize("seed", [0, MAX_SEED])
def test_seeds_at_the_ends_of_the_range_are_accepted(seed):
    assert ProblemSettings(seed=seed).seed == SearchSettings(seed=seed).seed == seed


def test_settings_recorded_before_the_ranking_rule_rebuild_the_traces_they_had():
    recorded = asdict(ProblemSettings())
    del recorded["traces"]["reliability"]
    assert ProblemSettings.from_dict(recorded).traces.reliability == 0.0


def test_settings_recorded_before_channel_orders_searched_in_trace_order():
    recorded = asdict(ProblemSettings())
    assert recorded["channel_order"] == "perturbation"
    assert ProblemSettings.from_dict(recorded).channel_order == "perturbation"
    del recorded["channel_order"]
    assert ProblemSettings.from_dict(recorded).channel_order == "trace"


def test_settings_recorded_before_training_inputs_measured_the_kl_on_validation_alone():
    recorded = asdict(ProblemSettings())
    assert ProblemSettings.from_dict(recorded).kl_train_samples == ProblemSettings.kl_train_samples > 0
    del recorded["kl_train_samples"]
    assert ProblemSettings.from_dict(recorded).kl_train_samples == 0


def test_the_default_search_length_keeps_the_default_schedule():
    assert AgentSettings().schedule_for(DEFAULT_EPISODES) == AgentSettings()


@given(episodes=st.integers(1, 3000))
def test_a_schedule_for_other_lengths_warms_up_as_long_and_ends_as_quiet(episodes):
    default = AgentSettings()
    scaled = default.schedule_for(episodes)
    share = default.warmup_episodes / DEFAULT_EPISODES
    assert abs(scaled.warmup_episodes - share * episodes) <= 0.5
    # the noise left after the whole search, warm-up aside, is the default search's
    assert scaled.noise_decay**episodes == pytest.approx(default.noise_decay**DEFAULT_EPISODES, rel=1e-9)
    assert 0 < scaled.noise_decay <= 1
    assert dataclasses.replace(scaled, warmup_episodes=20, noise_decay=0.99) == default


def test_a_schedule_keeps_the_values_it_is_given():
    scaled = AgentSettings().schedule_for(100, warmup_episodes=3, noise_decay=0.9)
    assert (scaled.warmup_episodes, scaled.noise_decay) == (3, 0.9)
    assert AgentSettings().schedule_for(100, noise_decay=0.9).warmup_episodes == 7


def test_a_schedule_for_no_episodes_is_refused():
    with pytest.raises(CwhawqError, match="episodes must be at least 1, not 0"):
        AgentSettings().schedule_for(0)
