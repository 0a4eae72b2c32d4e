"""Settings: what result.json records can be read back."""

from dataclasses import asdict

import pytest

from cwhawq.settings import AgentSettings, ProblemSettings, TraceSettings
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
