"""Policy bundles: save/load round trip, refusal of mismatched policies, reuse on other models."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

import agents.policy_bundle as policy_bundle
from agents.policy_bundle import load_bundle, read_metadata
from agents.rollout import best_outcome, reuse_outcomes, rollout
from agents.search import SearchRun
from cwhawq.cli import main
from cwhawq.errors import CwhawqError
from cwhawq.export import QUANTIZED_MODEL_FILE
from cwhawq.settings import AgentSettings, SearchSettings
from envs.channel_bits_env import ChannelBitsEnv
from tests.conftest import small_settings, val_score


@pytest.fixture(scope="module")
def trained_policy(digits_problem, tmp_path_factory):
    out = tmp_path_factory.mktemp("policy") / "run"
    settings = SearchSettings(
        problem=small_settings(out.parent),
        agent=AgentSettings(warmup_episodes=2, batch_size=8, net_arch=(32, 32)),
        episodes=5,
        out=str(out),
        progress=False,
    )
    run = SearchRun(digits_problem, settings)
    run.run()
    return out / "policy.zip", run.model


def fine_tune_settings(tmp_path) -> SearchSettings:
    """A short fine-tune: more episodes than the zero-shot outcomes and the warm start's evaluations."""
    return SearchSettings(
        problem=small_settings(tmp_path),
        agent=AgentSettings(warmup_episodes=2, batch_size=8, net_arch=(32, 32)),
        episodes=14,
        out=str(tmp_path / "ft"),
        progress=False,
    )


def test_round_trip_gives_the_same_actions(digits_problem, trained_policy):
    path, original = trained_policy
    env = ChannelBitsEnv(digits_problem)
    loaded, metadata = load_bundle(path, env)
    assert metadata["bit_widths"] == list(digits_problem.bit_widths)
    assert metadata["trained_on"]["model"] == "digits_cnn"
    obs, _ = env.reset()
    for _ in range(env.n_steps):
        expected, _ = original.predict(obs, deterministic=True)
        action, _ = loaded.predict(obs, deterministic=True)
        np.testing.assert_array_equal(action, expected)
        obs, *_ = env.step(action)


def test_other_bit_widths_are_refused(digits_problem, trained_policy):
    path, _ = trained_policy
    other = dataclasses.replace(digits_problem, bit_widths=(2, 4, 8))
    with pytest.raises(CwhawqError, match="bit_widths"):
        load_bundle(path, ChannelBitsEnv(other))


def test_other_observation_version_is_refused(digits_problem, trained_policy):
    path, _ = trained_policy
    with pytest.raises(CwhawqError, match="observation_version=v1 but this run has observation_version=v2"):
        load_bundle(path, ChannelBitsEnv(digits_problem, observation="v2"))


def test_other_action_is_refused(digits_problem, trained_policy):
    path, _ = trained_policy
    with pytest.raises(CwhawqError, match="action=level but this run has action=shares"):
        load_bundle(path, ChannelBitsEnv(digits_problem, action="shares"))


def test_apply_runs_a_policy_with_its_own_action_and_observation(capsys, cache_dir, digits_problem, tmp_path):
    trained = tmp_path / "shares"
    settings = SearchSettings(
        problem=small_settings(cache_dir),
        agent=AgentSettings(warmup_episodes=1, batch_size=4, net_arch=(8,), action="shares", observation="v2"),
        episodes=2,
        out=str(trained),
        progress=False,
    )
    SearchRun(digits_problem, settings).run()
    metadata = read_metadata(trained / "policy.zip")
    assert (metadata["action"], metadata["observation_version"]) == ("shares", "v2")
    status = main(
        ["apply", "--policy", str(trained / "policy.zip"), "--cache-dir", str(cache_dir), "--trace-probes", "4",
         "--trace-batches", "1", "--out", str(tmp_path / "applied"), "--quiet"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    agent = json.loads((tmp_path / "applied" / "result.json").read_text())["settings"]["agent"]
    assert (agent["action"], agent["observation"]) == ("shares", "v2")


def test_bundle_from_an_older_version_is_refused(digits_problem, trained_policy, tmp_path):
    import zipfile

    path, _ = trained_policy
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == policy_bundle.METADATA_NAME:
                metadata = json.loads(data)
                del metadata["action"]
                data = json.dumps(metadata).encode()
            target.writestr(item, data)
    with pytest.raises(CwhawqError, match="older cwhawq without 'action'"):
        load_bundle(old, ChannelBitsEnv(digits_problem))


def test_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(CwhawqError, match="not found"):
        read_metadata(tmp_path / "nope.zip")
    (tmp_path / "x.zip").write_text("not a zip")
    with pytest.raises(CwhawqError, match="not a cwhawq policy"):
        read_metadata(tmp_path / "x.zip")


@pytest.mark.parametrize("finetune", [0, 14])
def test_apply_on_another_architecture(capsys, cache_dir, trained_policy, tmp_path, finetune):
    path, _ = trained_policy
    out = tmp_path / "applied"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: the near-chance warning is expected
        status = main(
            ["apply", "--policy", str(path), "--model", "tests.toy_models:digits_mlp", "--dataset", "digits",
             "--cache-dir", str(cache_dir), "--trace-probes", "4", "--trace-batches", "1",
             "--finetune-episodes", str(finetune), "--out", str(out), "--quiet"]
        )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == ("policy-finetune" if finetune else "policy-zero-shot")
    if not finetune:  # the better on validation of the policy's rollout and that rollout fitted to the budget
        candidates, scores = result["zero_shot"]["val_accuracy"], result["zero_shot"]["val_score"]
        assert result["zero_shot"]["evaluations"] == 2 and list(candidates) == ["rollout", "fitted_to_budget"]
        assert result["accuracy"]["quantized_val"] == candidates[max(scores, key=scores.get)]
        assert val_score(result) == max(scores.values())
    assert [layer["name"] for layer in result["layers"]] == ["1", "3", "5"]
    assert result["totals"]["avg_bits"] <= 2.5
    assert (out / QUANTIZED_MODEL_FILE).is_file()
    if finetune:
        assert result["search"]["episodes"] == finetune


def test_apply_refuses_mismatched_bits(capsys, cache_dir, trained_policy, tmp_path):
    path, _ = trained_policy
    status = main(
        ["apply", "--policy", str(path), "--bits", "2", "4", "8", "--cache-dir", str(cache_dir),
         "--trace-probes", "4", "--trace-batches", "1", "--out", str(tmp_path / "o"), "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "bit_widths" in err


def test_zero_shot_rollout_is_deterministic(digits_problem, trained_policy):
    path, _ = trained_policy
    env = ChannelBitsEnv(digits_problem)
    model, _ = load_bundle(path, env)
    first, second = rollout(model, env), rollout(model, env)
    assert first["val_accuracy"] == second["val_accuracy"]
    for name in first["assignment"]:
        np.testing.assert_array_equal(first["assignment"][name], second["assignment"][name])


def test_fine_tune_starts_from_the_best_it_knows(digits_problem, trained_policy, tmp_path):
    from cwhawq.baselines import DETERMINISTIC_METHODS, run_method

    path, _ = trained_policy
    env = ChannelBitsEnv(digits_problem)
    outcomes = reuse_outcomes(load_bundle(path, env)[0], env)
    zero_shot = best_outcome(outcomes)[0]["val_score"]
    baselines = [
        digits_problem.score(digits_problem.validate(run_method(digits_problem, name), count=False))
        for name in DETERMINISTIC_METHODS
    ]
    settings = SearchSettings(
        problem=small_settings(tmp_path),
        agent=AgentSettings(warmup_episodes=2, batch_size=8, net_arch=(32, 32), coarse_share=0.5),
        episodes=9,
        out=str(tmp_path / "ft"),
        progress=False,
    )
    run = SearchRun(digits_problem, settings, start_from=path)
    assert run.coarse is None  # a fine-tune starts from the policy, not from a layer-wise phase
    # The zero-shot outcomes (rollout, rollout fitted to the budget), the baselines as they are, the baselines
    # replayed, then the best zero-shot outcome replayed only if it beats every replay (the replays are the starts
    # the actor can reproduce).
    n, first = len(DETERMINISTIC_METHODS), len(outcomes)
    assert [episode["val_score"] for episode in run.record.history[:first]] == [
        info["val_score"] for info, _ in outcomes
    ]
    replays = [episode["val_score"] for episode in run.record.history[first + n : first + 2 * n]]
    assert run.record.episodes == first + 2 * n + (zero_shot > max(replays))
    assert run.record.best_val_score >= max(zero_shot, *baselines)
    result = run.run()
    assert val_score(result) >= max(zero_shot, *baselines)
    # The first update waits for the warm-up episodes, as in a fresh search.
    assert run.model.learning_starts == 2 * env.n_steps


def test_resumed_fine_tune_is_still_a_fine_tune(digits_problem, trained_policy, tmp_path):
    path, _ = trained_policy
    settings = fine_tune_settings(tmp_path)
    SearchRun(digits_problem, settings, start_from=path).run()
    # The resuming command need not know the bundle's network shape (32, 32): a fine-tune keeps its bundle's.
    resuming = dataclasses.replace(settings, agent=AgentSettings(warmup_episodes=2, batch_size=8), resume=True)
    resumed = SearchRun(digits_problem, dataclasses.replace(resuming, episodes=16)).run()
    assert resumed["method"] == "policy-finetune" and resumed["search"]["episodes"] == 16
    assert tuple(resumed["settings"]["agent"]["net_arch"]) == (32, 32)


def test_fine_tune_keeps_the_actor_and_learns_a_new_critic(digits_problem, trained_policy, tmp_path):
    import torch

    path, _ = trained_policy
    source, _ = load_bundle(path, ChannelBitsEnv(digits_problem))
    settings = SearchSettings(
        problem=small_settings(tmp_path),
        agent=AgentSettings(warm_start=None, net_arch=(7,)),
        episodes=2,
        seed=1,  # another initialisation than the bundle's, whose critic may not have been updated yet
        out=str(tmp_path / "ft"),
        progress=False,
    )
    run = SearchRun(digits_problem, settings, start_from=path)
    assert run.settings.agent.net_arch == tuple(source.policy_kwargs["net_arch"])  # the bundle's shape wins
    for mine, theirs in zip(run.model.actor.parameters(), source.actor.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    critic = zip(run.model.critic.parameters(), source.critic.parameters(), strict=True)
    assert not all(torch.equal(mine, theirs) for mine, theirs in critic)


def test_fine_tune_interrupted_in_its_warm_start_resumes_as_a_fine_tune(
    digits_problem, trained_policy, tmp_path, interrupt_at_measurement
):
    path, _ = trained_policy
    settings = fine_tune_settings(tmp_path)
    reference = SearchRun(digits_problem, dataclasses.replace(settings, out=str(tmp_path / "ref")), start_from=path)
    reference_result = reference.run()
    interrupt_at_measurement(5)  # after the zero-shot outcomes, in the baselines
    with pytest.raises(KeyboardInterrupt):
        SearchRun(digits_problem, settings, start_from=path)
    interrupt_at_measurement(0)
    resumed = SearchRun(digits_problem, dataclasses.replace(settings, resume=True)).run()
    assert resumed["method"] == "policy-finetune"
    assert resumed["search"]["best_val_score_curve"] == reference_result["search"]["best_val_score_curve"]


@pytest.mark.parametrize("policy_wins", [False, True])
def test_fine_tune_keeps_the_transferred_actor_only_when_its_output_is_the_best_start(
    digits_problem, trained_policy, tmp_path, monkeypatch, policy_wins
):
    import torch

    import agents.search as search

    path, _ = trained_policy
    # The policy's own outcomes are scored far above (or below) every baseline's replay.
    zero_shot, forced = search.reuse_outcomes, 1e9 if policy_wins else -1e9
    monkeypatch.setattr(
        search,
        "reuse_outcomes",
        lambda model, env: [(info | {"val_score": forced}, reward) for info, reward in zero_shot(model, env)],
    )
    settings = fine_tune_settings(tmp_path)
    fine_tune = SearchRun(digits_problem, settings, start_from=path)
    fresh = SearchRun(digits_problem, dataclasses.replace(settings, out=str(tmp_path / "fresh")))
    source, _ = load_bundle(path, ChannelBitsEnv(digits_problem))
    # Both clone the same best start; only the weights they clone into differ.
    same_as_fresh = all(
        torch.equal(mine, theirs)
        for mine, theirs in zip(fine_tune.model.actor.parameters(), fresh.model.actor.parameters(), strict=True)
    )
    assert same_as_fresh != policy_wins
    # and result.json says which start it explored from
    assert (fine_tune.start == search.TRANSFERRED_START) == policy_wins
    assert policy_wins or fine_tune.start.endswith(", replayed")
    if policy_wins:  # cloned into the transferred weights, which moved from the bundle's
        assert any(
            not torch.equal(mine, theirs)
            for mine, theirs in zip(fine_tune.model.actor.parameters(), source.actor.parameters(), strict=True)
        )
