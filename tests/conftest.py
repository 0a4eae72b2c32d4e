"""Shared fixtures: one small digits problem per test session, with its own cache directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings

from agents.policy_bundle import load_bundle, save_bundle
from cwhawq.evaluation import Evaluation
from cwhawq.problem import QuantProblem, build_problem
from cwhawq.settings import ProblemSettings, TraceSettings
from envs.channel_bits_env import ChannelBitsEnv

# The test models are tiny: one thread avoids oversubscribing CI's 2 cores (2 threads are many times slower
# whenever another process is busy).
torch.set_num_threads(1)

# The same examples on every run, so that a CI result can be reproduced; `pytest --hypothesis-profile explore` draws
# new ones (its failures are saved in .hypothesis/ and replayed first).
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("reproducible")


def small_settings(cache_dir: Path, **overrides: object) -> ProblemSettings:
    """Digits CNN settings with few Hessian probes, for fast tests."""
    values = {"cache_dir": str(cache_dir), "traces": TraceSettings(max_probes=8, num_batches=2), **overrides}
    return ProblemSettings(**values)


@pytest.fixture(scope="session", autouse=True)
def sb3_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """stable-baselines3 gives an agent without a TensorBoard folder a fresh temporary folder per `learn`; keep
    the tests' in their own tmp directory instead of leaving them in the system's."""
    folder = tmp_path_factory.mktemp("sb3_logs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SB3_LOGDIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache shared by the session's tests, so the built-in model is trained once."""
    return tmp_path_factory.mktemp("cwhawq_cache")


@pytest.fixture(scope="session")
def digits_problem(cache_dir: Path) -> QuantProblem:
    """The default problem (digits CNN at 2.5 average bits) with cheap traces."""
    return build_problem(small_settings(cache_dir), progress=False)


@pytest.fixture()
def interrupt_at_measurement(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[str]]:
    """Arm a Ctrl-C at the n-th measurement of a model on a split by `cwhawq.problem` (its accuracy, or accuracy
    and KL divergence; 0: never); the returned list collects the split of every measurement (evaluations replayed
    from a memo measure nothing)."""
    from cwhawq import problem

    originals = {name: getattr(problem, name) for name in ("accuracy", "evaluate")}

    def arm(n: int) -> list[str]:
        measured: list[str] = []

        def counting(original: Callable) -> Callable:
            def measure(model: torch.nn.Module, split: object, *args: object, **kwargs: object) -> object:
                measured.append(split)
                if len(measured) == n:
                    raise KeyboardInterrupt
                return original(model, split, *args, **kwargs)

            return measure

        for name, original in originals.items():
            monkeypatch.setattr(problem, name, counting(original))
        return measured

    return arm


@pytest.fixture()
def interrupt_after_probe(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[int]]:
    """Arm `exception` to be raised once, right after the k-th probe from now; returns the probes counted."""
    from cwhawq import hessian

    done: list[int] = []
    real = hessian.progress_bar

    def arm(k: int, exception: type[BaseException] = KeyboardInterrupt) -> list[int]:
        fired = []

        def bar(*args, **kwargs):
            inner = real(*args, **kwargs)
            update = inner.update

            def counting_update(step: int = 1) -> None:
                update(step)
                done.append(step)
                if len(done) == k and not fired:
                    fired.append(k)
                    raise exception("stopped by the test")

            inner.update = counting_update
            return inner

        monkeypatch.setattr(hessian, "progress_bar", bar)
        return done

    return arm


def agent_saved_without(
    problem: QuantProblem, out: Path, attributes: tuple[str, ...], part: Callable[[Any], Any] = lambda model: model
) -> None:
    """Drop `attributes` from the agent saved in `out` (or from the `part` of it), as an agent pickled before they
    existed holds it."""
    env = ChannelBitsEnv(problem)
    model, metadata = load_bundle(out / "policy.zip", env)
    for name in attributes:
        del part(model).__dict__[name]
    save_bundle(model, out / "policy.zip", env, metadata["trained_on"])


def val_score(result: dict) -> float:
    """The validation score of a result.json's assignment under the objective its settings record."""
    accuracy = result["accuracy"]
    evaluation = Evaluation(accuracy["quantized_val"], accuracy["quantized_val_kl"])
    return evaluation.score(result["settings"]["problem"]["objective"])
