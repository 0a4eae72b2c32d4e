"""Distillation: one policy cloned from several finished runs, on several architectures and budgets."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from agents.ddpg import make_agent
from agents.distill import HINT_FEATURE, LINEAR_PENALTY, distill_policy, distill_runs, fit_linear_actor, load_source_run
from agents.policy_bundle import load_bundle, read_metadata
from agents.rollout import play_actions, rollout
from cwhawq.baselines import run_method
from cwhawq.cli import main
from cwhawq.errors import CwhawqError
from cwhawq.settings import AgentSettings
from envs.channel_bits_env import ChannelBitsEnv
from envs.observation import static_feature_names

AGENT = AgentSettings(net_arch=(64, 64))


@pytest.fixture(scope="module")
def source_runs(cache_dir, tmp_path_factory):
    """Two finished runs on two architectures and budgets: the greedy on the digits CNN and on a toy MLP."""
    root = tmp_path_factory.mktemp("sources")
    runs = []
    for model, budget in (("digits_cnn", "2.5"), ("tests.toy_models:digits_mlp", "3.0")):
        out = root / model.replace(":", "_")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the toy MLP has random weights: the near-chance warning is expected
            status = main(
                ["baseline", "--method", "greedy-channel", "--model", model, "--dataset", "digits",
                 "--budget-bits", budget, "--cache-dir", str(cache_dir), "--trace-probes", "4",
                 "--trace-batches", "1", "--out", str(out), "--quiet"]
            )  # fmt: skip
        assert status == 0
        runs.append(out)
    return runs


def test_distilled_actor_reproduces_its_source(digits_problem):
    env = ChannelBitsEnv(digits_problem)
    assignment = run_method(digits_problem, "greedy-channel")
    model, error = distill_policy([(env, assignment)], AGENT, seed=0)
    assert error < 1e-3
    obs, _ = env.reset()
    for expected in env.actions_for(assignment):
        action, _ = model.predict(obs, deterministic=True)
        assert np.allclose(action, expected, atol=0.05)
        obs, *_ = env.step(expected)


def test_linear_actor_is_a_deterministic_least_squares_fit(digits_problem):
    linear = dataclasses.replace(AGENT, observation="v2", actor_arch=())
    env = ChannelBitsEnv.for_agent(digits_problem, linear)
    sources = [(env, run_method(digits_problem, method)) for method in ("greedy-channel", "ilp-layer", "uniform")]
    first, error = distill_policy(sources, linear, seed=0)
    second, _ = distill_policy(sources, linear, seed=1)
    for mine, theirs in zip(first.actor.parameters(), second.actor.parameters(), strict=True):
        assert torch.equal(mine, theirs)  # the seed only initialises what the fit then overwrites
    observations, actions = [], []
    for source_env, assignment in sources:
        played = source_env.actions_for(assignment)
        observations += [step[0] for step in play_actions(source_env, played)]
        actions += played
    predicted, _ = first.predict(np.stack(observations), deterministic=True)
    assert error == pytest.approx(np.mean((predicted - np.stack(actions)) ** 2), rel=1e-4)
    assert error < np.mean(np.stack(actions) ** 2)  # better than playing the middle level
    # The fit minimises the squared error of the played actions plus the ridge penalty toward the hint prior:
    # its gradient there is ~0, far below the gradient at the prior itself.
    obs = torch.as_tensor(np.stack(observations), dtype=torch.float64)
    target = torch.as_tensor(np.stack(actions), dtype=torch.float64)
    prior = torch.zeros(1, obs.shape[1], dtype=torch.float64)
    prior[0, static_feature_names("v2").index(HINT_FEATURE)] = 1.0

    def gradient_norm(weight: torch.Tensor, bias: torch.Tensor) -> float:
        weight, bias = weight.double().requires_grad_(), bias.double().requires_grad_()
        squared_error = ((torch.tanh(obs @ weight.T + bias) - target) ** 2).sum()
        loss = squared_error + LINEAR_PENALTY * ((weight - prior) ** 2).sum()
        loss.backward()
        return float(torch.cat([weight.grad.flatten(), bias.grad]).norm())

    fitted = next(module for module in first.actor.mu if isinstance(module, torch.nn.Linear))
    assert gradient_norm(fitted.weight.detach(), fitted.bias.detach()) < 1e-3 * gradient_norm(prior, torch.zeros(1))
    with pytest.raises(CwhawqError, match="needs a linear actor"):
        fit_linear_actor(make_agent(env, AGENT, env.n_steps, 0), env, np.stack(observations), np.stack(actions))


def test_runs_with_other_bit_widths_are_refused(digits_problem):
    env = ChannelBitsEnv(digits_problem)
    shares = ChannelBitsEnv(digits_problem, action="shares")
    assignment = run_method(digits_problem, "uniform")
    with pytest.raises(CwhawqError, match="run 2 has action=shares but run 1 has action=level"):
        distill_policy([(env, assignment), (shares, assignment)], AGENT, seed=0)
    with pytest.raises(CwhawqError, match="at least one run"):
        distill_policy([], AGENT, seed=0)


def test_distill_runs_writes_a_bundle_that_applies_to_both_sources(source_runs, cache_dir, tmp_path):
    trained_on = distill_runs(source_runs, tmp_path, AGENT, seed=0, cache_dir=str(cache_dir))
    metadata = read_metadata(tmp_path / "policy.zip")
    assert metadata["trained_on"] == json.loads(json.dumps(trained_on))
    assert [source["model"] for source in trained_on["distilled_from"]] == ["digits_cnn", "tests.toy_models:digits_mlp"]
    assert [round(source["budget_avg_bits"], 2) for source in trained_on["distilled_from"]] == [2.5, 3.0]
    for run in source_runs:
        source = load_source_run(run, str(cache_dir))
        env = ChannelBitsEnv(source.problem)
        model, _ = load_bundle(tmp_path / "policy.zip", env)
        demonstration = env.actions_for(source.assignment)
        observations = [step[0] for step in play_actions(env, demonstration)]
        predicted, _ = model.predict(np.stack(observations), deterministic=True)
        assert np.abs(predicted - np.stack(demonstration)).max() < 0.1
        assignment = rollout(model, env)["assignment"]
        assert source.problem.size_bits(assignment) <= source.problem.budget.total_bits


def test_distilled_is_deterministic_under_a_seed(source_runs, cache_dir, tmp_path):
    first = distill_runs(source_runs, tmp_path / "a", AGENT, seed=3, cache_dir=str(cache_dir))
    second = distill_runs(source_runs, tmp_path / "b", AGENT, seed=3, cache_dir=str(cache_dir))
    assert first["fit_mse"] == second["fit_mse"]


def test_runs_of_one_problem_share_its_build(source_runs, cache_dir, tmp_path, monkeypatch):
    import agents.distill as distill

    builds = []
    original = distill.build_problem
    monkeypatch.setattr(distill, "build_problem", lambda *a, **k: builds.append(1) or original(*a, **k))
    trained_on = distill_runs([*source_runs, source_runs[0]], tmp_path, AGENT, cache_dir=str(cache_dir))
    assert len(trained_on["distilled_from"]) == 3 and len(builds) == 2


@pytest.mark.parametrize("observation", ["v1", "v2"])
def test_distill_command_then_apply(capsys, source_runs, cache_dir, tmp_path, observation):
    out = tmp_path / "distilled"
    options = ["--out", str(out), "--cache-dir", str(cache_dir), "--observation", observation, "--quiet"]
    status = main(["distill", *map(str, source_runs), *options])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "distilled 2 runs" in captured.out and "digits_cnn, tests.toy_models:digits_mlp" in captured.out
    applied = tmp_path / "applied"
    status = main(
        ["apply", "--policy", str(out / "policy.zip"), "--cache-dir", str(cache_dir), "--trace-probes", "4",
         "--trace-batches", "1", "--out", str(applied), "--quiet"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    result = json.loads((applied / "result.json").read_text())
    assert result["method"] == "policy-zero-shot"
    assert len(result["policy"]["trained_on"]["distilled_from"]) == 2
    assert result["settings"]["agent"]["observation"] == observation


def test_bad_sources_give_one_line_errors(capsys, source_runs, cache_dir, tmp_path):
    def error_of(*runs):
        status = main(["distill", *map(str, runs), "--out", str(tmp_path / "out"), "--cache-dir", str(cache_dir)])
        assert status == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err

    assert "no result.json" in error_of(tmp_path / "missing")
    (tmp_path / "other.json").write_text("{}")
    assert "not a cwhawq result.json" in error_of(tmp_path / "other.json")
    result = json.loads((source_runs[0] / "result.json").read_text())
    result["layers"][0]["bits"] = result["layers"][0]["bits"][:-1]
    (tmp_path / "cut.json").write_text(json.dumps(result))
    assert "does not fit its rebuilt model" in error_of(tmp_path / "cut.json")


def test_linear_actor_is_distilled_then_fine_tuned_with_its_shape(capsys, source_runs, cache_dir, tmp_path):
    out = tmp_path / "linear"
    options = ["--out", str(out), "--cache-dir", str(cache_dir), "--linear-actor", "--quiet"]
    assert main(["distill", *map(str, source_runs), *options]) == 0, capsys.readouterr().err
    source = load_source_run(source_runs[0], str(cache_dir))
    model, _ = load_bundle(out / "policy.zip", ChannelBitsEnv(source.problem))
    linear = [module for module in model.actor.mu if isinstance(module, torch.nn.Linear)]
    assert len(linear) == 1  # tanh of one linear map of the observation
    applied = tmp_path / "applied"
    command = ["apply", "--policy", str(out / "policy.zip"), "--cache-dir", str(cache_dir), "--trace-probes", "4",
               "--trace-batches", "1", "--out", str(applied), "--quiet"]  # fmt: skip
    assert main([*command, "--finetune-episodes", "14"]) == 0, capsys.readouterr().err
    assert main([*command, "--finetune-episodes", "16", "--resume"]) == 0, capsys.readouterr().err
    result = json.loads((applied / "result.json").read_text())
    assert result["search"]["episodes"] == 16
    assert result["settings"]["agent"]["actor_arch"] == []
    assert result["settings"]["agent"]["net_arch"] == list(AgentSettings().net_arch)
