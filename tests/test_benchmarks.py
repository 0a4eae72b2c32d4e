"""Fast smoke versions of the benchmark scripts (the full runs are the scripts themselves)."""

import contextlib
import dataclasses
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_search  # noqa: E402
import benchmark  # noqa: E402
import benchmark_transfer  # noqa: E402
import channel_order_study  # noqa: E402
import choose_bit_widths  # noqa: E402
import objective_study  # noqa: E402
import selection_study  # noqa: E402
import compare_runs  # noqa: E402
import target_summary  # noqa: E402
import zero_shot_study  # noqa: E402

from agents.policy_bundle import read_metadata  # noqa: E402
from cwhawq.settings import ProblemSettings  # noqa: E402

ALL_METHODS = [*benchmark.DETERMINISTIC_METHODS, *benchmark.STOCHASTIC_METHODS]


@pytest.fixture(scope="module")
def quick_benchmark(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rows = benchmark.main(["--quick", "--out", str(out), "--cache-dir", str(cache_dir)])
    return out, rows


def test_quick_benchmark_table_and_budget(quick_benchmark):
    out, rows = quick_benchmark
    assert {row["method"] for row in rows} == set(ALL_METHODS)
    assert len(rows) == len(benchmark.DETERMINISTIC_METHODS) + 2 * len(benchmark.STOCHASTIC_METHODS)
    assert all(row["within_budget"] and row["avg_bits"] <= 2.5 for row in rows)
    for row in rows:
        if row["method"] in benchmark.STOCHASTIC_METHODS:
            assert row["evaluations"] == 16, row["method"]
    text = (out / "BENCHMARKS.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| 2.5 |")]
    assert [line.split(" | ")[1] for line in table] == ALL_METHODS
    assert all(line.count("|") == 10 and line.rstrip().endswith("| yes |") for line in table)
    greedy = next(line for line in table if line.startswith("| 2.5 | greedy-channel |"))
    greedy_kl = next(row["test_kl"] for row in rows if row["method"] == "greedy-channel")
    assert greedy.split(" | ")[4] == f"{greedy_kl:.4f}"
    assert "![digits_cnn](digits_cnn.png)" in text and (out / "digits_cnn.png").stat().st_size > 0
    # per seed: evaluations to random search's best, and where each run found its own best
    assert re.search(r"^- 2\.5 bits: (\d+|-) of 15, (\d+|-) of 15; own best at \d+, \d+ \(random search: \d+, \d+\)$",
                     text, flags=re.M)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)


def test_rows_record_which_test_images_each_answer_gets_right(quick_benchmark):
    _, rows = quick_benchmark
    for row in rows:
        correct = benchmark.unpack_correct(row)
        assert correct.shape == (row["test_samples"],) and set(np.unique(correct)) <= {0.0, 1.0}
        assert correct.mean() == pytest.approx(row["test_accuracy"], abs=1e-12), row["method"]
        assert 0 < row["test_kl"] < float("inf")


def test_compare_runs_sets_the_shared_seeds_side_by_side(quick_benchmark, tmp_path):
    out, rows = quick_benchmark
    shifted = [
        {**row, "val_accuracy": row["val_accuracy"] + 0.01, "curve": [v - 1 for v in row.get("curve", [])]}
        for row in rows
        if row["seed"] == 0
    ]
    benchmark.save_rows(tmp_path / "other" / "results.jsonl", shifted)
    text = compare_runs.main([str(out / "results.jsonl"), str(tmp_path / "other" / "results.jsonl")])
    agent = next(row for row in rows if row["method"] == "ddpg-channel" and row["seed"] == 0)
    line = next(line for line in text.splitlines() if line.startswith("| digits_cnn | 2.5 | ddpg-channel |"))
    val = 100 * agent["val_accuracy"]
    assert line == f"| digits_cnn | 2.5 | ddpg-channel | 1 | {val:.2f} | {100 * agent['test_accuracy']:.2f} | " \
        f"{val + 1:.2f} | {100 * agent['test_accuracy']:.2f} |"  # seed 1 is left out: the second run lacks it
    assert "other/results against " in text and "ddpg-channel: validation +1.00, test +0.00 points" in text
    assert "(best validation score higher in 0, lower in 1 of 1 cells)" in text  # each curve moved down by 1
    assert {(row["objective"], row["kl_train_samples"]) for row in rows} == {("kl", 1000)}
    on_validation = [{**row, "kl_train_samples": 0} for row in shifted]  # scores measured on other inputs
    benchmark.save_rows(tmp_path / "other" / "results.jsonl", on_validation)
    text = compare_runs.main([str(out / "results.jsonl"), str(tmp_path / "other" / "results.jsonl")])
    assert "validation +1.00" in text and "best validation score" not in text


def test_compare_runs_tells_apart_files_of_the_same_name(tmp_path):
    paths = [tmp_path / "a" / "transfer" / "transfer.jsonl", tmp_path / "b" / "transfer" / "transfer.jsonl"]
    assert compare_runs.run_names(paths) == ["a/transfer/transfer", "b/transfer/transfer"]
    assert compare_runs.run_names([tmp_path / "a" / "results.jsonl", tmp_path / "b" / "results.jsonl"]) == [
        "a/results",
        "b/results",
    ]
    with pytest.raises(SystemExit, match="the same results file is given twice"):
        compare_runs.run_names([paths[0], paths[0]])


def test_target_summary_of_the_quick_benchmark(quick_benchmark):
    out, rows = quick_benchmark
    text = target_summary.main([str(out / "results.jsonl")])
    by_method: dict[str, list[float]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row["test_accuracy"])
    agent = np.mean(by_method.pop("ddpg-channel"))
    met = all(agent >= np.mean(values) - 1e-12 for values in by_method.values())
    line = next(line for line in text.splitlines() if line.startswith("| digits_cnn | 2.5 |"))
    assert line.split(" | ")[2].startswith(f"{100 * agent:.2f} ± ")
    assert line.split(" | ")[4] == ("yes" if met else "no")
    best = max(np.mean(values) for values in by_method.values())
    lead, low, high = map(float, re.fullmatch(r"([-+]\S+) \[(\S+), (\S+)\]", line.split(" | ")[5]).groups())
    assert lead == pytest.approx(100 * (agent - best), abs=0.006) and low <= lead <= high
    agent_kl = np.mean([row["test_kl"] for row in rows if row["method"] == "ddpg-channel"])
    kl_by_method: dict[str, list[float]] = {}
    for row in rows:
        kl_by_method.setdefault(row["method"], []).append(row["test_kl"])
    lowest_other = min(np.mean(values) for method, values in kl_by_method.items() if method != "ddpg-channel")
    assert line.split(" | ")[6].startswith(f"{agent_kl:.4f} / ")
    assert f"the lowest test KL divergence in {int(agent_kl <= lowest_other)} of 1 cells." in text
    assert re.search(r"in [01] of 1 cells; random search's best reached within half of its evaluations in [0-2] of 2 ",
                     text)
    joined = target_summary.main([f"{out / 'results.jsonl'}+{out / 'results.jsonl'}"])  # one run of both files
    assert re.search(r"^- \S+/results \+ \S+/results: .* in [0-4] of 4 runs; the lowest test KL .*\.$", joined,
                     flags=re.M)
    with pytest.raises(SystemExit, match="no rows at"):
        target_summary.main([str(out / "missing.jsonl")])


def test_target_summary_refuses_rows_with_nothing_to_compare_in_one_line(quick_benchmark, tmp_path):
    out, _ = quick_benchmark
    agent_only = tmp_path / "results.jsonl"
    agent_only.write_text("".join(line for line in (out / "results.jsonl").read_text().splitlines(keepends=True)
                                  if '"method": "ddpg-channel"' in line))
    assert agent_only.read_text()
    with pytest.raises(SystemExit, match="no model and budget has both ddpg-channel rows and another method's"):
        target_summary.main([str(agent_only)])


def test_target_summary_says_how_far_short_of_random_search_a_slow_run_falls():
    def row(method, seed, curve):
        return {"model": "m", "budget": 2.0, "method": method, "seed": seed, "curve": curve, "test_accuracy": 0.5}

    rows = [row("random", 0, [-0.9, -0.5, -0.4, -0.2]), row("ddpg-channel", 0, [-0.6, -0.3, -0.3, -0.1]),
            row("random", 1, [-0.9, -0.5, -0.4, -0.2]), row("ddpg-channel", 1, [-0.3, -0.2, -0.2, -0.1])]
    summary = target_summary.cell_summary(rows, "m", 2.0)
    assert summary["fast"] == 1 and summary["paired"] == 2  # seed 1 reaches -0.2 at its 2nd evaluation of 4
    assert summary["shortfalls"] == [pytest.approx(0.5)]  # seed 0: best -0.3 in its first half against -0.2


def _rows(correct: np.ndarray) -> list[dict]:
    """Benchmark-like rows, one per seed, from a (seeds x images) 0/1 array."""
    return [{"test_correct": np.packbits(seed.astype(bool)).tobytes().hex(), "test_samples": seed.size}
            for seed in correct]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 300), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_paired_difference_is_the_gap_of_the_means_inside_its_interval(images, first_seeds, second_seeds, seed):
    rng = np.random.default_rng(seed)
    first = rng.random((first_seeds, images)) < 0.9
    second = rng.random((second_seeds, images)) < 0.8
    mean, low, high = benchmark.paired_difference(_rows(first), _rows(second))
    assert mean == pytest.approx(first.mean() - second.mean(), abs=1e-12)
    assert low <= mean <= high
    assert mean - low == pytest.approx(high - mean, abs=1e-12)


def test_paired_difference_interval_narrows_with_more_images_and_needs_the_images():
    rng = np.random.default_rng(0)
    few, many = (rng.random((2, 3, n)) < 0.9 for n in (100, 10_000))
    widths = []
    for correct in (few, many):
        _, low, high = benchmark.paired_difference(_rows(correct[0]), _rows(correct[1]))
        widths.append(high - low)
    assert widths[1] < widths[0] / 5
    same = _rows(few[0])
    assert benchmark.paired_difference(same, same) == (0.0, 0.0, 0.0)
    assert benchmark.paired_difference(same, [{"test_accuracy": 0.9}]) is None


def test_benchmark_resumes_without_rerunning(quick_benchmark, cache_dir):
    out, rows = quick_benchmark
    again = benchmark.main(["--quick", "--out", str(out), "--cache-dir", str(cache_dir)])
    assert again == rows


def test_quick_transfer(quick_benchmark, cache_dir):
    out, _ = quick_benchmark
    rows = benchmark_transfer.main(
        ["--quick", "--targets", "digits_cnn", "--out", str(out), "--cache-dir", str(cache_dir)]
    )
    assert [row["method"] for row in rows] == ["policy-zero-shot", "policy-finetune"]
    assert all(row["within_budget"] for row in rows)
    # 15 fine-tune episodes (its zero-shot rollout, the 5 warm-start baselines as they are and replayed, agent
    # episodes) + the final rollout
    assert rows[1]["evaluations"] == 16
    curve = rows[1]["curve"]  # the fine-tune's best-so-far validation scores, one per evaluation
    assert 0 < len(curve) <= 16 and curve == sorted(curve) and "curve" not in rows[0]
    from_policy = rows[1]["start"] == benchmark_transfer.TRANSFERRED_START  # else a baseline's replay
    assert from_policy or rows[1]["start"].endswith(", replayed")
    text = (out / "BENCHMARKS.md").read_text()
    assert "<!-- transfer:start -->" in text and "| digits_cnn | 2.5 | policy-zero-shot |" in text
    assert "<!-- benchmark:start -->" in text  # the method comparison is kept
    assert json.loads((out / "transfer.jsonl").read_text().splitlines()[0])["model"] == "digits_cnn"
    greedy = next(r for r in benchmark.load_rows(out / "results.jsonl") if r["method"] == "greedy-channel")
    line = next(line for line in text.splitlines() if line.startswith("| digits_cnn | 2.5 | policy-zero-shot |"))
    lead = float(line.split(" | ")[-1].split(" [")[0])
    assert lead == pytest.approx(100 * (rows[0]["test_accuracy"] - greedy["test_accuracy"]), abs=0.006)
    assert "| digits_cnn | 2.5 | greedy-channel |" in text and text.count("| - |") >= 1  # no interval against itself
    fine_tune = next(line for line in text.splitlines() if line.startswith("| digits_cnn | 2.5 | policy-finetune |"))
    assert fine_tune.split(" | ")[-2] == f"{int(from_policy)}/1" and line.split(" | ")[-2] == "-"


def test_transfer_fine_tune_schedule_leaves_the_source_search_alone(quick_benchmark, cache_dir, tmp_path):
    out, _ = quick_benchmark
    argv = ["--quick", "--targets", "digits_cnn", "--out", str(tmp_path), "--cache-dir", str(cache_dir),
            "--reference", str(out / "results.jsonl"), "--finetune-warmup-episodes", "3",
            "--finetune-noise-decay", "0.9"]  # fmt: skip
    benchmark_transfer.main(argv)
    recorded = {
        name: json.loads((tmp_path / "work" / path / "result.json").read_text())["settings"]["agent"]
        for name, path in (("source", "policies/2.5_s0"), ("fine-tune", "runs/digits_cnn_2.5_s0"))
    }
    assert (recorded["source"]["warmup_episodes"], recorded["source"]["noise_decay"]) == (20, 0.99)
    assert (recorded["fine-tune"]["warmup_episodes"], recorded["fine-tune"]["noise_decay"]) == (3, 0.9)


@pytest.fixture(scope="module")
def quick_distilled(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("distilled")
    argv = ["--quick", "--distill-from", "mlp1d", "digits_cnn", "--targets", "digits_cnn", "--out", str(out),
            "--cache-dir", str(cache_dir), "--objective", "accuracy"]  # fmt: skip
    return out, benchmark_transfer.main(argv)


def test_quick_distilled_transfer(quick_distilled):
    out, rows = quick_distilled
    assert [row["method"] for row in rows] == ["policy-zero-shot", "policy-finetune"]
    assert all(row["within_budget"] for row in rows)
    trained_on = read_metadata(out / "work" / "distilled" / "digits_cnn_s0" / "policy.zip")["trained_on"]
    assert [source["model"] for source in trained_on["distilled_from"]] == ["mlp1d"]  # the target is left out
    assert "mlp1d, digits_cnn, the target left out" in (out / "BENCHMARKS.md").read_text()
    for run in [out / "work" / "sources" / "mlp1d_2.5_s0", out / "work" / "runs" / "digits_cnn_2.5_s0"]:
        recorded = json.loads((run / "result.json").read_text())["settings"]["problem"]["objective"]
        assert recorded == "accuracy", run  # --objective reaches the source searches and the fine-tune


def test_quick_distilled_transfer_with_a_linear_actor(quick_distilled, cache_dir):
    out, _ = quick_distilled
    argv = ["--quick", "--distill-from", "mlp1d", "digits_cnn", "--targets", "digits_cnn", "--linear-actor",
            "--work", str(out / "work"), "--out", str(out / "linear"), "--cache-dir", str(cache_dir),
            "--objective", "accuracy"]  # fmt: skip
    rows = benchmark_transfer.main(argv)
    assert [row["method"] for row in rows] == ["policy-zero-shot", "policy-finetune"]
    bundle = out / "work" / "distilled_linear" / "digits_cnn_s0" / "policy.zip"
    assert read_metadata(bundle)["trained_on"]["settings"]["agent"]["actor_arch"] == []
    assert "a linear actor" in (out / "linear" / "BENCHMARKS.md").read_text()


@pytest.fixture(scope="module")
def quick_study(quick_distilled, cache_dir):
    """The two-model zero-shot study on the quick distilled work: its output folder, rows and printed table."""
    out, _ = quick_distilled
    argv = ["--models", "mlp1d", "digits_cnn", "--budgets", "2.5", "--seeds", "1", "--work", str(out / "work"),
            "--out", str(out / "study.jsonl"), "--cache-dir", str(cache_dir), "--objective", "accuracy"]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows = zero_shot_study.main(argv)
    return out, rows, printed.getvalue()


def test_zero_shot_study_quick(quick_study):
    out, rows, table = quick_study
    rules = ["uniform", "greedy-channel", "hint", "ridge 1", "residual 1", "ridge 10", "residual 10",
             *(f"distilled seed {seed}" for seed in range(zero_shot_study.ACTOR_SEEDS)), "distilled mean",
             *(f"linear actor {penalty:g}" for penalty in zero_shot_study.LINEAR_PENALTIES)]  # fmt: skip
    assert [row["rule"] for row in rows] == rules * 2
    assert all(0 < row["val"] <= 1 and 0 < row["test"] <= 1 for row in rows)
    assert len((out / "study.jsonl").read_text().splitlines()) == len(rows)
    assert "| hint | " in table and table.count("/2 |") == len(rules) - 2
    with pytest.raises(SystemExit, match="no searches of lenet5"):
        zero_shot_study.main(["--models", "lenet5", "--work", str(out / "work")])
    with pytest.raises(SystemExit, match="no searches of cnn1d"):
        zero_shot_study.main(["--models", "digits_cnn", "--extra-sources", "cnn1d", "--budgets", "2.5", "--seeds", "1",
                              "--work", str(out / "work")])  # fmt: skip


def test_zero_shot_study_extra_sources_are_not_targets(quick_study, cache_dir):
    out, _, _ = quick_study
    argv = ["--models", "digits_cnn", "--extra-sources", "mlp1d", "--budgets", "2.5", "--seeds", "1",
            "--work", str(out / "work"), "--out", str(out / "extra.jsonl"), "--cache-dir", str(cache_dir),
            "--objective", "accuracy"]  # fmt: skip
    rows = zero_shot_study.main(argv)
    assert {row["target"] for row in rows} == {"digits_cnn"}
    # learned from mlp1d alone, the same rules as the two-model study's digits_cnn rows (mlp1d the other model)
    two_models = [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()]
    assert rows == [row for row in two_models if row["target"] == "digits_cnn"]


def test_bench_search_quick(cache_dir, capsys):
    result = bench_search.main(["--quick", "--cache-dir", str(cache_dir)])
    assert result["search_s"] > 0 and 0 <= result["overhead"] < 1 and 0 <= result["search_overhead"] < 1
    assert "env overhead" in capsys.readouterr().out


def test_bench_search_timer_sees_every_validation_evaluation(digits_problem):
    # The timer must wrap the method the environment evaluates with, or the overhead it reports is the whole step.
    env = bench_search.ChannelBitsEnv(digits_problem)
    timer = bench_search.StepTimer(env)
    try:
        env.reset()
        for _ in range(env.n_steps):
            env.step(env.action_space.sample())
    finally:
        del digits_problem.validate
    assert 0 < timer.validate_s < timer.step_s


def test_choose_bit_widths_quick(cache_dir, capsys):
    table = choose_bit_widths.main(["--quick", "--cache-dir", str(cache_dir)])
    assert len(table) == len(choose_bit_widths.CANDIDATE_SETS)
    assert all(0 < val <= 1 and 0 < test <= 1 for val, test in table.values())


def test_compare_agents_reads_the_committed_rows(capsys):
    import compare_agents

    text = compare_agents.main([])
    assert "| lenet5 | 2.25 |" in text and "| resnet_mini | 3.0 |" in text
    # three budgets in the agent-variant table and in the kl search-variant table
    assert len([line for line in text.splitlines() if line.startswith("| digits_cnn")]) == 6


def test_search_cell_counts_runs_reaching_random_search_best_within_half_its_evaluations():
    import compare_agents

    random = {("m", 2.5, 0): [0.1, 0.3, 0.5, 0.5], ("m", 2.5, 1): [0.1, 0.2, 0.2, 0.4]}
    runs = [
        {"model": "m", "budget": 2.5, "method": "ddpg-channel", "seed": 0, "curve": [0.2, 0.5, 0.5]},  # at 2 of 4
        {"model": "m", "budget": 2.5, "method": "ddpg-channel", "seed": 1, "curve": [0.1, 0.3, 0.4]},  # at 3: late
        {"model": "m", "budget": 2.5, "method": "random", "seed": 0, "curve": [0.9]},  # not the agent
    ]
    assert compare_agents.search_cell(runs, random, "m", 2.5) == "0.4500 (1/2)"
    assert compare_agents.search_cell(runs, random, "m", 3.0) == "-"


def test_selection_study_quick(cache_dir, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    args = ["--budgets", "2.5", "--seeds", "1", "--episodes", "12", "--out", str(out), "--cache-dir", str(cache_dir)]
    rows = selection_study.main([*args, "--methods", "random", "ddpg-channel"])
    assert [row["method"] for row in rows] == ["random", "ddpg-channel"]
    for row in rows:
        assert 1 <= row["candidates"] <= 12
        assert row["max_val"] <= row["best_test_bound"] and row["one_se_smallest"] <= row["best_test_bound"]
    assert len(out.read_text().splitlines()) == 2
    assert "| digits_cnn | 2.5 | ddpg-channel |" in capsys.readouterr().out


def test_selection_rules_on_known_candidates():
    val = np.array([0.90, 0.95, 0.94, 0.80])
    test = np.array([0.91, 0.92, 0.96, 0.99])
    bits = np.array([2.0, 2.5, 2.2, 2.0])
    picked = selection_study.choices(val, test, bits, n_val=100)  # one standard error: 2.2 points
    assert picked["max_val"] == 0.92  # candidate 1
    assert picked["one_se_smallest"] == 0.96  # candidates 1 and 2 are within 2.2 points; 2 is smaller
    assert picked["best_test_bound"] == 0.99 and picked["candidates"] == 4


def test_objective_study_quick(cache_dir, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    args = ["--budgets", "2.5", "--seeds", "1", "--episodes", "12", "--out", str(out), "--cache-dir", str(cache_dir)]
    rows = objective_study.main([*args, "--methods", "random", "ddpg-channel"])
    assert [row["method"] for row in rows] == ["random", "ddpg-channel"]
    for row in rows:
        assert 1 <= row["candidates"] <= 12
        assert row["search_objective"] == "accuracy"
        assert all(0 < row[f"held_out_{rule}"] <= 1 for rule in objective_study.RULES)
        assert row["kl_better_share"] + row["kl_worse_share"] <= 1
        assert row["nll_better_share"] + row["nll_worse_share"] <= 1
        assert row["kl+train_better_share"] + row["kl+train_worse_share"] <= 1
        assert row["kl_train_samples"] == ProblemSettings.kl_train_samples
    assert "| all |  |  | 2 |" in capsys.readouterr().out
    assert objective_study.main([*args, "--methods", "random"]) == rows[:1]  # resumed, not rerun
    assert len(out.read_text().splitlines()) == 2
    with pytest.raises(SystemExit, match="objective \\['accuracy'\\]"):  # not mixed with searches by KL
        objective_study.main([*args, "--methods", "random", "--search-objective", "kl"])


def test_objective_study_table_marks_rules_older_rows_lack():
    old = {"model": "m", "budget": 2.5, "method": "random", "seed": 0, "candidates": 3, "held_out_accuracy": 0.9,
           "held_out_kl": 0.95, "kl_better_share": 0.5, "kl_worse_share": 0.1}  # fmt: skip
    line = next(row for row in objective_study.markdown([old], "cmd").splitlines() if row.startswith("| m |"))
    assert line == "| m | 2.5 | random | 1 | 3 | 90.00 | 95.00 | - | - | 50% | 10% | - | - | - | - |"


def test_objective_study_per_image_matches_the_evaluation(digits_problem):
    assignment = digits_problem.uniform_assignment(3)
    per_rule = objective_study.per_image(digits_problem, [assignment])
    validation_only = dataclasses.replace(digits_problem, kl_extra=None, fp_kl_extra_log_probs=None)
    evaluation = validation_only.validate(assignment, count=False)
    assert {values.shape for values in per_rule.values()} == {(1, len(digits_problem.data.val.y))}
    assert per_rule["accuracy"].mean() == pytest.approx(evaluation.accuracy)
    assert per_rule["kl"].mean() == pytest.approx(evaluation.kl, rel=1e-4, abs=1e-7)
    with digits_problem.quantizer.quantized(assignment), torch.no_grad():
        logits = digits_problem.model(digits_problem.data.val.x)
    nll = torch.nn.functional.cross_entropy(logits, digits_problem.data.val.y)
    assert per_rule["nll"].mean() == pytest.approx(float(nll), rel=1e-4)


def test_objective_study_train_kl_pools_as_the_problem_does(digits_problem):
    """The kl+train rule over the whole validation split measures what `QuantProblem.validate` does with training
    inputs added."""
    assignment = digits_problem.uniform_assignment(3)
    samples = len(digits_problem.kl_extra)
    sums = objective_study.train_kl(digits_problem, [assignment], samples)
    val_sum = objective_study.per_image(digits_problem, [assignment])["kl"].sum()
    pooled = (val_sum + sums[0]) / (len(digits_problem.data.val) + samples)
    assert pooled == pytest.approx(digits_problem.validate(assignment, count=False).kl, rel=1e-4)


def test_split_half_rules_on_known_candidates():
    correct = np.array([np.ones(100), np.tile([1.0, 0.0], 50), np.ones(100)])
    kl = np.array([np.full(100, 0.5), np.full(100, 0.1), np.full(100, np.inf)])  # the third had NaN predictions
    nll = np.array([np.full(100, 0.2), np.full(100, 0.3), np.full(100, np.inf)])
    train_sums = np.array([1e6, 0.0, 0.0])  # on training inputs the first candidate is far off, the others exact
    result = objective_study.split_half({"accuracy": correct, "kl": kl, "nll": nll}, train_sums, 1000, splits=20)
    assert result["held_out_accuracy"] == 1.0  # the first candidate: most accurate on every half
    assert result["held_out_kl"] < 0.7  # the second: lowest KL, about half right
    assert result["held_out_nll"] == 1.0  # the first again: lowest NLL
    assert result["kl_worse_share"] == 1.0 and result["kl_better_share"] == 0.0
    assert result["nll_better_share"] == 1.0 and result["nll_worse_share"] == 0.0
    assert result["held_out_kl+train"] == result["held_out_kl"]  # the second: the third is infinitely far on val


def test_channel_order_study_quick(cache_dir, capsys):
    rows = channel_order_study.main(["--quick", "--cache-dir", str(cache_dir)])
    assert [(row["model"], row["budget"], row["method"]) for row in rows] == [("digits_cnn", 2.5, "greedy-channel")]
    for placement in ("as_is", "trace", "perturbation"):
        accuracy, kl = rows[0][placement]
        assert 0.5 < accuracy <= 1 and 0 <= kl < 1, placement
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits_cnn |"))
    assert line.count("|") == 7 and f"{100 * rows[0]['perturbation'][0]:.1f} ({rows[0]['perturbation'][1]:.4f})" in line
