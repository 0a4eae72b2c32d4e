"""A short end-to-end search: outputs on disk, TensorBoard scalars, interruption and resume."""

import dataclasses
import json
import zipfile

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.ddpg import HaqDDPG
from agents.search import SearchRun, recorded_agent_settings
from cwhawq.errors import CwhawqError
from cwhawq.settings import AgentSettings, SearchSettings
from envs.channel_bits_env import ChannelBitsEnv
from tests.conftest import agent_saved_without, val_score

SCALARS = [
    "reward", "val_accuracy", "val_kl", "avg_bits", "size_mb", "best_val_accuracy", "noise_sigma", "actor_drift"
]


def settings_for(out, episodes, resume=False):
    from tests.conftest import small_settings

    return SearchSettings(
        problem=small_settings(out.parent / "unused"),
        agent=AgentSettings(warmup_episodes=2, batch_size=8, net_arch=(32, 32)),
        episodes=episodes,
        out=str(out),
        resume=resume,
        checkpoint_every=3,
        progress=False,
    )


def test_short_search_writes_everything(digits_problem, tmp_path):
    out = tmp_path / "run"
    result = SearchRun(digits_problem, settings_for(out, episodes=14)).run()
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["search"]["episodes"] == 14
    assert on_disk["search"]["start"].endswith(", replayed")  # the best baseline's replay started the exploration
    assert on_disk["totals"]["weight_bits"] <= digits_problem.budget.total_bits
    assert [layer["name"] for layer in on_disk["layers"]] == [layer.name for layer in digits_problem.layers]
    for layer in on_disk["layers"]:
        assert len(layer["bits"]) == layer["channels"]
        assert set(layer["bits"]) <= set(digits_problem.bit_widths)
    assert 0 <= on_disk["accuracy"]["quantized_test"] <= 1
    assert val_score(on_disk) == pytest.approx(result["search"]["best_val_score_curve"][-1]) or (
        on_disk["accuracy"]["quantized_val"] == on_disk["search"]["final_policy_val_accuracy"]
    )
    assert "cwhawq.json" in zipfile.ZipFile(out / "policy.zip").namelist()
    events = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    for tag in SCALARS:
        values = events.Scalars(f"search/{tag}")
        assert [v.step for v in values] == list(range(14)), tag
    drift = [v.value for v in events.Scalars("search/actor_drift")]
    assert drift[0] < 0.1 and min(drift) >= 0  # the warm start's best was just cloned into the actor
    assert events.Histograms("search/layer_avg_bits")


def test_existing_run_needs_resume(digits_problem, tmp_path):
    out = tmp_path / "run"
    SearchRun(digits_problem, settings_for(out, episodes=3)).run()
    with pytest.raises(CwhawqError, match="--resume"):
        SearchRun(digits_problem, settings_for(out, episodes=3))


def test_resume_with_other_settings_is_refused(digits_problem, tmp_path):
    out = tmp_path / "run"
    SearchRun(digits_problem, settings_for(out, episodes=8)).run()
    changed = settings_for(out, episodes=12, resume=True)
    changed.agent.noise_sigma = 0.1
    with pytest.raises(CwhawqError, match=r"other settings \(agent.noise_sigma\)"):
        SearchRun(digits_problem, changed)
    changed = settings_for(out, episodes=12, resume=True)
    changed.problem.budget_bits = 3.0
    with pytest.raises(CwhawqError, match=r"other settings \(problem.budget_bits\)"):
        SearchRun(digits_problem, changed)


def test_a_search_resumes_on_another_device(digits_problem, tmp_path):
    out = tmp_path / "run"
    SearchRun(digits_problem, settings_for(out, episodes=12)).run()
    elsewhere = settings_for(out, episodes=14, resume=True)
    elsewhere.problem.device = "cpu:0"  # where it runs, not what it searches
    result = SearchRun(digits_problem, elsewhere).run()
    assert result["search"]["episodes"] == 14 and result["settings"]["problem"]["device"] == "cpu:0"
    assert result["search"]["start"] == json.loads((out / "state.json").read_text())["start"] is not None


def search_saved_without(problem, out, part: str, setting: str, episodes: int = 8) -> None:
    """Run a search into `out`, then drop `part.setting` from its saved state, as a search saved before that
    setting existed would have it."""
    SearchRun(problem, settings_for(out, episodes=episodes)).run()
    state = json.loads((out / "state.json").read_text())
    del state["settings"][part][setting]
    (out / "state.json").write_text(json.dumps(state))


def test_resuming_a_search_saved_before_objectives_keeps_accuracy(digits_problem, tmp_path):
    out = tmp_path / "run"
    search_saved_without(digits_problem, out, "problem", "objective")  # every search then used accuracy
    with pytest.raises(CwhawqError, match=r"other settings \(problem.objective\)"):
        SearchRun(digits_problem, settings_for(out, episodes=12, resume=True))
    old = settings_for(out, episodes=12, resume=True)
    old.problem.objective = "accuracy"
    assert SearchRun(dataclasses.replace(digits_problem, objective="accuracy"), old).run()["search"]["episodes"] == 12


def test_resuming_a_search_saved_before_channel_orders_keeps_the_trace_order(digits_problem, tmp_path):
    out = tmp_path / "run"
    search_saved_without(digits_problem, out, "problem", "channel_order")  # every search then ranked by trace
    with pytest.raises(CwhawqError, match=r"other settings \(problem.channel_order\)"):
        SearchRun(digits_problem, settings_for(out, episodes=12, resume=True))


def test_resuming_a_search_saved_before_training_inputs_joined_the_kl_is_refused(digits_problem, tmp_path):
    out = tmp_path / "run"
    search_saved_without(digits_problem, out, "problem", "kl_train_samples")  # every search then used validation
    with pytest.raises(CwhawqError, match=r"other settings \(problem.kl_train_samples\)"):
        SearchRun(digits_problem, settings_for(out, episodes=12, resume=True))


def test_resuming_a_search_saved_before_the_anchor_needs_anchor_steps_0(digits_problem, tmp_path):
    out = tmp_path / "run"
    search_saved_without(digits_problem, out, "agent", "anchor_steps")  # every search then trained without it
    agent_saved_without(digits_problem, out, ("anchor_steps", "anchor"))
    with pytest.raises(CwhawqError, match=r"other settings \(agent.anchor_steps\)"):
        SearchRun(digits_problem, settings_for(out, episodes=12, resume=True))
    old = settings_for(out, episodes=12, resume=True)
    old.agent.anchor_steps = 0
    run = SearchRun(digits_problem, old)
    assert run.model.anchor_steps == 0 and run.model.anchor is None
    assert run.run()["search"]["episodes"] == 12


def test_resuming_a_search_saved_before_sparse_noise_keeps_noise_on_every_layer(digits_problem, tmp_path):
    out = tmp_path / "run"
    search_saved_without(digits_problem, out, "agent", "noise_layers", episodes=12)
    noise_attributes = ("layers", "steps_per_episode", "_step", "_noisy_steps")  # the noise as pickled then
    agent_saved_without(digits_problem, out, noise_attributes, part=lambda model: model.action_noise)
    with pytest.raises(CwhawqError, match=r"other settings \(agent.noise_layers\)"):
        SearchRun(digits_problem, settings_for(out, episodes=16, resume=True))
    old = settings_for(out, episodes=16, resume=True)
    old.agent.noise_layers = 0
    run = SearchRun(digits_problem, old)
    assert run.model.action_noise.layers == 0
    assert run.run()["search"]["episodes"] == 16


def test_a_resumed_search_goes_on_as_the_uninterrupted_one(digits_problem, tmp_path):
    # The checkpoint holds the agent after its update, the noise schedule and the global generators, so stopping
    # after 17 episodes (not a checkpoint boundary: the final checkpoint) and resuming changes nothing.
    full = SearchRun(digits_problem, settings_for(tmp_path / "full", episodes=30))
    full.run()
    SearchRun(digits_problem, settings_for(tmp_path / "part", episodes=17)).run()
    resumed = SearchRun(digits_problem, settings_for(tmp_path / "part", episodes=30, resume=True))
    resumed.run()
    assert [h["val_score"] for h in resumed.record.history] == [h["val_score"] for h in full.record.history]
    assert resumed.record.to_dict() == full.record.to_dict()


def test_a_search_shorter_than_its_warm_start_warns(digits_problem, tmp_path):
    with pytest.warns(UserWarning, match="did not train"):
        result = SearchRun(digits_problem, settings_for(tmp_path / "run", episodes=4)).run()
    assert result["search"]["episodes"] == 10  # the 5 baselines as they are and replayed: all evaluated, all kept


def test_interrupt_keeps_best_and_resume_continues(digits_problem, tmp_path, monkeypatch):
    out = tmp_path / "run"
    env = ChannelBitsEnv(digits_problem)
    finished = []
    original_finish = env._finish

    def finish_then_interrupt():
        outcome = original_finish()
        finished.append(outcome)
        if len(finished) == 8:
            raise KeyboardInterrupt
        return outcome

    monkeypatch.setattr(env, "_finish", finish_then_interrupt)
    result = SearchRun(digits_problem, settings_for(out, episodes=18), env=env).run()
    assert result["search"]["interrupted"]
    # The warm start's evaluations (the 5 baselines as they are, then replayed as the first 5 env episodes), then
    # two agent episodes; the eighth env episode was interrupted.
    assert result["search"]["episodes"] == 12
    assert json.loads((out / "best.json").read_text())["best_assignment"]

    resumed = SearchRun(digits_problem, settings_for(out, episodes=16, resume=True)).run()
    assert resumed["search"]["episodes"] == 16
    assert not resumed["search"]["interrupted"]
    assert resumed["search"]["best_val_score_curve"][:12] == result["search"]["best_val_score_curve"]


def test_warm_start_is_the_floor(digits_problem, tmp_path):
    from cwhawq.baselines import DETERMINISTIC_METHODS, run_method

    best_baseline = max(
        digits_problem.score(digits_problem.validate(run_method(digits_problem, name), count=False))
        for name in DETERMINISTIC_METHODS
    )
    result = SearchRun(digits_problem, settings_for(tmp_path / "w", episodes=8)).run()
    assert result["search"]["best_val_score_curve"][-1] >= best_baseline


def test_random_warm_up_without_warm_start(digits_problem, tmp_path):
    settings = settings_for(tmp_path / "r", episodes=4)
    settings.agent.warm_start = None
    result = SearchRun(digits_problem, settings).run()
    assert result["search"]["episodes"] == 4
    curve = result["search"]["best_val_score_curve"]
    assert len(curve) == 4 and np.all(np.isfinite(curve)) and curve == sorted(curve)
    assert not result["search"]["interrupted"]


def test_seeded_searches_are_identical(digits_problem, tmp_path):
    # 12 episodes: 6 warm-start evaluations, then 6 agent episodes, the last 4 with gradient updates.
    first = SearchRun(digits_problem, settings_for(tmp_path / "a", episodes=12)).run()
    second = SearchRun(digits_problem, settings_for(tmp_path / "b", episodes=12)).run()
    assert first["search"]["best_val_score_curve"] == second["search"]["best_val_score_curve"]
    assert first["search"]["final_policy_val_accuracy"] == second["search"]["final_policy_val_accuracy"]
    assert [layer["bits"] for layer in first["layers"]] == [layer["bits"] for layer in second["layers"]]
    assert np.isclose(first["totals"]["avg_bits"], second["totals"]["avg_bits"])


def test_imitate_best_clones_each_new_best_episode(digits_problem, tmp_path, monkeypatch):
    imitated = []
    monkeypatch.setattr(HaqDDPG, "imitate", lambda model, obs, actions: imitated.append((obs, actions)))
    settings = settings_for(tmp_path / "run", episodes=12)
    settings.agent.warm_start = None  # every improvement then comes from an episode
    settings.agent.imitate_best = True
    run = SearchRun(digits_problem, settings)
    run.run()
    assert imitated and all(obs.shape[0] == actions.shape[0] == run.env.n_steps for obs, actions in imitated)
    # The last episode passed on replays to the best assignment of the search.
    env = ChannelBitsEnv(digits_problem)
    obs, _ = env.reset()
    for expected_obs, action in zip(*imitated[-1]):
        np.testing.assert_allclose(obs, expected_obs, atol=1e-6)
        obs, _, _, _, info = env.step(action)
    for name, bits in run.record.best_assignment.items():
        assert np.array_equal(info["assignment"][name], bits), name


def coarse_settings_for(out, episodes, coarse_share=0.5, resume=False):
    settings = settings_for(out, episodes, resume=resume)
    settings.agent.coarse_share = coarse_share
    return settings


def test_coarse_phase_starts_the_channel_search(digits_problem, tmp_path, monkeypatch):
    from agents import search

    starts = []
    original_warm_start = search.warm_start

    def recording_warm_start(model, env, start, known=(), **kwargs):
        starts.append(list(known))
        return original_warm_start(model, env, start, known=known, **kwargs)

    monkeypatch.setattr(search, "warm_start", recording_warm_start)
    out = tmp_path / "run"
    run = SearchRun(digits_problem, coarse_settings_for(out, episodes=30))
    result = run.run()
    coarse = json.loads((out / "coarse" / "result.json").read_text())
    assert coarse["method"] == "ddpg-layer" and coarse["search"]["episodes"] == 15
    assert all(len(set(layer["bits"])) == 1 for layer in coarse["layers"])
    # The coarse phase's episodes and its final rollout are the first of the search's evaluations.
    assert result["method"] == "ddpg-channel"
    assert result["search"]["episodes"] == 30
    assert result["search"]["best_val_score_curve"][:15] == coarse["search"]["best_val_score_curve"]
    assert run.record.history[15]["val_accuracy"] == coarse["search"]["final_policy_val_accuracy"]
    # The channel-wise warm start knows the coarse phase's best (a layer-wise assignment) besides the baselines.
    coarse_start, channel_start = starts
    assert coarse_start == []
    (known_info, _), = channel_start
    assert known_info["val_score"] == max(h["val_score"] for h in run.record.history[:16])
    assert all(len(set(bits.tolist())) == 1 for bits in known_info["assignment"].values())
    assert val_score(result) >= val_score(coarse)
    events = EventAccumulator(str(out / "coarse" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [v.step for v in events.Scalars("search/val_accuracy")] == list(range(15))


def test_progress_bars_name_each_phase(digits_problem, tmp_path, capsys):
    # 15 + 1 layer-wise, 10 or 11 warm-start, the rest channel-wise
    settings = coarse_settings_for(tmp_path / "out", episodes=30)
    settings.progress = True
    SearchRun(digits_problem, settings).run()
    err = capsys.readouterr().err
    assert "layer-wise search:" in err and "channel-wise search:" in err
    assert err.index("layer-wise search:") < err.index("channel-wise search:")


def test_coarse_phase_interrupt_and_resume(digits_problem, tmp_path, monkeypatch):
    out = tmp_path / "run"
    layer_episodes = []
    original_finish = ChannelBitsEnv._finish

    def finish_then_interrupt(env):
        outcome = original_finish(env)
        if env.granularity == "layer":
            layer_episodes.append(outcome)
            if len(layer_episodes) == 4:
                raise KeyboardInterrupt
        return outcome

    monkeypatch.setattr(ChannelBitsEnv, "_finish", finish_then_interrupt)
    interrupted = SearchRun(digits_problem, coarse_settings_for(out, episodes=30)).run()
    assert interrupted["search"]["interrupted"] and interrupted["method"] == "ddpg-layer"
    # The layer-wise baseline, its replay and two agent episodes; the fourth env episode was interrupted.
    assert interrupted["search"]["episodes"] == 4
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(interrupted))
    with pytest.raises(CwhawqError, match="--resume"):
        SearchRun(digits_problem, coarse_settings_for(out, episodes=30))
    # Before the channel-wise phase has a state, the schedule to resume on is the coarse phase's (the same).
    assert not (out / "state.json").exists()
    recorded = recorded_agent_settings(out)
    agent = coarse_settings_for(out, episodes=30).agent
    assert (recorded["warmup_episodes"], recorded["noise_decay"]) == (agent.warmup_episodes, agent.noise_decay)
    assert recorded_agent_settings(tmp_path / "nothing") == {}

    monkeypatch.setattr(ChannelBitsEnv, "_finish", original_finish)
    resumed = SearchRun(digits_problem, coarse_settings_for(out, episodes=30, resume=True)).run()
    assert not resumed["search"]["interrupted"] and resumed["method"] == "ddpg-channel"
    assert resumed["search"]["episodes"] == 30
    assert resumed["search"]["best_val_score_curve"][:4] == interrupted["search"]["best_val_score_curve"]


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_coarse_share_outside_unit_interval_is_refused(digits_problem, tmp_path, share):
    with pytest.raises(CwhawqError, match="coarse share"):
        SearchRun(digits_problem, coarse_settings_for(tmp_path / "run", episodes=4, coarse_share=share))


def test_negative_anchor_steps_are_refused_in_one_line(digits_problem, tmp_path):
    settings = settings_for(tmp_path / "run", episodes=4)
    settings.agent.anchor_steps = -1
    with pytest.raises(CwhawqError, match="anchor steps must be 0 .* or more, not -1"):
        SearchRun(digits_problem, settings)


def test_unknown_noise_layers_law_is_refused_in_one_line(digits_problem, tmp_path):
    settings = settings_for(tmp_path / "run", episodes=4)
    settings.agent.noise_layers_law = "poisson"
    with pytest.raises(CwhawqError, match="unknown noise layers law 'poisson'"):
        SearchRun(digits_problem, settings)


def test_interrupted_warm_start_resumes_as_if_never_stopped(digits_problem, tmp_path, interrupt_at_measurement):
    reference = SearchRun(digits_problem, settings_for(tmp_path / "reference", episodes=12)).run()
    out = tmp_path / "run"
    interrupt_at_measurement(4)
    with pytest.raises(KeyboardInterrupt):
        SearchRun(digits_problem, settings_for(out, episodes=12))
    assert json.loads((out / "state.json").read_text())["record"] is None  # started, no checkpoint yet
    with pytest.raises(CwhawqError, match="--resume"):
        SearchRun(digits_problem, settings_for(out, episodes=12))

    measured = interrupt_at_measurement(0)
    resumed_run = SearchRun(digits_problem, settings_for(out, episodes=12, resume=True))
    assert resumed_run.memo.hits >= 3  # the three evaluations made before Ctrl-C are read back, not measured
    resumed = resumed_run.run()
    assert resumed["search"]["best_val_score_curve"] == reference["search"]["best_val_score_curve"]
    assert [layer["bits"] for layer in resumed["layers"]] == [layer["bits"] for layer in reference["layers"]]
    assert len(measured) < reference["search"]["evaluations"] + 2  # fewer than its evaluations and the report's


def test_interrupt_in_the_channel_warm_start_after_the_coarse_phase(digits_problem, tmp_path, monkeypatch):
    from agents import search

    original_warm_start = search.warm_start

    def interrupt_the_channel_warm_start(model, env, start, known=(), **kwargs):
        if env.granularity == "channel":
            raise KeyboardInterrupt
        return original_warm_start(model, env, start, known=known, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(search, "warm_start", interrupt_the_channel_warm_start)
    with pytest.raises(KeyboardInterrupt):
        SearchRun(digits_problem, coarse_settings_for(out, episodes=30)).run()
    monkeypatch.setattr(search, "warm_start", original_warm_start)
    coarse = json.loads((out / "coarse" / "result.json").read_text())
    resumed = SearchRun(digits_problem, coarse_settings_for(out, episodes=30, resume=True)).run()
    assert resumed["method"] == "ddpg-channel" and resumed["search"]["episodes"] == 30
    assert resumed["search"]["best_val_score_curve"][:15] == coarse["search"]["best_val_score_curve"]
