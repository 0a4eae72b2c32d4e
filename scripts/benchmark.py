"""Benchmark every method on every model and budget: test accuracy, bits reached, evaluations, wall time.

    python scripts/benchmark.py                      # the full benchmark behind docs/BENCHMARKS.md
    python scripts/benchmark.py --quick --out DIR    # one model, one budget, few episodes: a smoke run

All methods share one `QuantProblem` per model and budget (same folded model, traces, cost model, budget and
validation data). Stochastic methods (random search, both DDPG variants) run with several seeds and get the same
number of quantized validation evaluations. Test accuracy, and which test images each answer classifies correctly,
is measured once per run, after its search, on a split no method sees. Raw rows are appended to `results.jsonl` as
each run finishes; an interrupted benchmark resumes where it stopped. The Markdown section is written between markers
in the `--markdown` file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from agents.random_search import random_search  # noqa: E402
from agents.search import SearchRun  # noqa: E402
from cwhawq.baselines import DETERMINISTIC_METHODS, run_method  # noqa: E402
from cwhawq.cli import (  # noqa: E402
    add_anchor_steps_argument,
    add_exploration_arguments,
    add_noise_layer_arguments,
    add_search_rule_arguments,
    add_trace_arguments,
    search_agent_settings,
)
from cwhawq.evaluation import log_probs  # noqa: E402
from cwhawq.problem import Assignment, QuantProblem, build_problem  # noqa: E402
from cwhawq.progress import progress_bar  # noqa: E402
from cwhawq.result import build_result, result_assignment  # noqa: E402
from cwhawq.settings import (  # noqa: E402
    AgentSettings,
    ProblemSettings,
    SearchSettings,
    TraceSettings,
)
from envs.channel_bits_env import ACTIONS, ChannelBitsEnv  # noqa: E402
from envs.observation import OBSERVATION_VERSIONS  # noqa: E402

STOCHASTIC_METHODS = ("random", "ddpg-layer", "ddpg-channel")
#: Coverage of the paired confidence intervals over test images (`paired_difference`).
CONFIDENCE = 0.95


@dataclass
class BenchmarkConfig:
    """What to run."""

    models: tuple[str, ...] = ("digits_cnn", "lenet5", "resnet_mini")
    budgets: tuple[float, ...] = (2.25, 2.5, 3.0)
    methods: tuple[str, ...] = (*DETERMINISTIC_METHODS, *STOCHASTIC_METHODS)
    seeds: tuple[int, ...] = (0, 1, 2)
    episodes: int = 300
    objective: str = ProblemSettings.objective
    channel_order: str = ProblemSettings.channel_order
    kl_train_samples: int = ProblemSettings.kl_train_samples
    agent: AgentSettings = field(default_factory=AgentSettings)
    traces: TraceSettings = field(default_factory=TraceSettings)
    out: Path = Path("docs/benchmark")
    markdown: Path = Path("docs/BENCHMARKS.md")
    command: str = "python scripts/benchmark.py"


def run_one(problem: QuantProblem, method: str, seed: int, config: BenchmarkConfig) -> tuple[Assignment, dict]:
    """Run one method once; return its chosen assignment and search facts (evaluations, curve)."""
    if method in DETERMINISTIC_METHODS:
        return run_method(problem, method), {"evaluations": 0}
    if method == "random":
        record = random_search(problem, config.episodes, seed, action=config.agent.action)
        return record.best_assignment, {"evaluations": config.episodes, "curve": record.best_so_far()}
    granularity = "layer" if method == "ddpg-layer" else "channel"
    agent = config.agent
    if granularity == "layer" and agent.warm_start:
        # The layer-wise ablation starts from the best layer-wise baseline, as the channel agent from its own.
        agent = dataclasses.replace(agent, warm_start="ilp-layer")
    with tempfile.TemporaryDirectory() as out:
        settings = SearchSettings(
            problem=ProblemSettings(seed=0),
            agent=agent,
            episodes=config.episodes - 1,  # the final policy rollout is the last of `episodes` evaluations
            seed=seed,
            out=out,
            progress=False,
        )
        env = ChannelBitsEnv.for_agent(problem, agent, granularity)
        result = SearchRun(problem, settings, env=env).run()
    search = result["search"]
    assignment = result_assignment(result)
    return assignment, {"evaluations": search["evaluations"], "curve": search["best_val_score_curve"]}


def correct_on_test(problem: QuantProblem, assignment: Assignment) -> str:
    """Which test images the model quantized by `assignment` classifies correctly: one bit per image
    (`numpy.packbits` order) as hex, so that two methods can be compared image by image
    (`scripts/target_summary.py`)."""
    with problem.quantizer.quantized(assignment):
        predicted = log_probs(problem.model, problem.data.test).argmax(dim=1)
    return np.packbits((predicted == problem.data.test.y).numpy()).tobytes().hex()


def unpack_correct(row: dict[str, Any]) -> np.ndarray:
    """A row's `test_correct` as one 0/1 float per test image."""
    packed = np.frombuffer(bytes.fromhex(row["test_correct"]), dtype=np.uint8)
    return np.unpackbits(packed, count=row["test_samples"]).astype(np.float64)


def paired_difference(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """Mean test accuracy of `first`'s rows minus `second`'s, with its `CONFIDENCE` interval over the test images
    (each image's correctness averaged over a method's seeds; a paired t interval). An interval that holds 0 means
    another test sample of the same size could well rank the two the other way. None unless every row records
    `test_correct`."""
    if not all("test_correct" in row for row in [*first, *second]):
        return None
    differences = np.mean([unpack_correct(row) for row in first], axis=0) - np.mean(
        [unpack_correct(row) for row in second], axis=0
    )
    mean = float(differences.mean())
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(differences) - 1) * stats.sem(differences))
    return mean, mean - half, mean + half


def format_interval(lead: tuple[float, float, float] | None) -> str:
    """A `paired_difference` in points, "+0.20 [-0.10, +0.50]", or "-" where the rows cannot give one."""
    if lead is None:
        return "-"
    mean, low, high = (100 * value for value in lead)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_kl(value: float | None) -> str:
    """A mean test KL divergence for a table, or "-" for rows that predate it."""
    return "-" if value is None else f"{value:.4f}"


def measured_row(
    problem: QuantProblem, assignment: Assignment, model: str, budget: float, method: str, seed: int
) -> dict[str, Any]:
    """The fields every benchmark row has: what was run, and the answer's accuracy (validation, test and which test
    images it gets right), its KL divergence from the full-precision predictions on test, average bits and whether
    it kept to the budget."""
    result = build_result(problem, assignment, method, {"problem": {"model": model}})
    return {
        "model": model,
        "budget": budget,
        "method": method,
        "seed": seed,
        "val_accuracy": result["accuracy"]["quantized_val"],
        "test_accuracy": result["accuracy"]["quantized_test"],
        "test_kl": result["accuracy"]["quantized_test_kl"],
        "test_samples": result["accuracy"]["test_samples"],
        "test_correct": correct_on_test(problem, assignment),
        "fp32_test_accuracy": result["accuracy"]["fp32_test"],
        "avg_bits": result["totals"]["avg_bits"],
        "within_budget": result["totals"]["weight_bits"] <= problem.budget.total_bits,
        "objective": problem.objective,
        "kl_train_samples": result["accuracy"]["kl_train_samples"],
    }


def _key(row: dict[str, Any]) -> tuple:
    return row["model"], row["budget"], row["method"], row["seed"]


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows already measured (one JSON object per line)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write `rows` to `path` (one JSON object per line, as `load_rows` reads them), replacing what it held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run of `script` (written beside its table): its arguments, or sys.argv's."""
    return " ".join([f"python scripts/{script}", *(sys.argv[1:] if argv is None else argv)])


def run_benchmark(config: BenchmarkConfig, cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Run every missing (model, budget, method, seed) and return all rows."""
    config.out.mkdir(parents=True, exist_ok=True)
    raw = config.out / "results.jsonl"
    rows = load_rows(raw)
    done = {_key(row) for row in rows}
    jobs = [
        (model, budget, method, seed if method in STOCHASTIC_METHODS else 0)
        for model in config.models
        for budget in config.budgets
        for method in config.methods
        for seed in (config.seeds if method in STOCHASTIC_METHODS else (0,))
    ]
    jobs = [job for job in jobs if job not in done]
    problems: dict[tuple[str, float], QuantProblem] = {}
    for model, budget, method, seed in progress_bar(jobs, desc="benchmark", unit="run"):
        if (model, budget) not in problems:
            problems.clear()
            settings = ProblemSettings(
                model=model, budget_bits=budget, cache_dir=cache_dir, objective=config.objective,
                channel_order=config.channel_order, kl_train_samples=config.kl_train_samples, traces=config.traces,
            )  # fmt: skip
            problems[(model, budget)] = build_problem(settings, progress=False)
        problem = problems[(model, budget)]
        start = time.perf_counter()
        assignment, facts = run_one(problem, method, seed, config)
        wall = time.perf_counter() - start
        row = {**measured_row(problem, assignment, model, budget, method, seed), "wall_s": wall, **facts}
        with raw.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """Mean and spread per (model, budget, method)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["budget"], row["method"])].append(row)
    summary = {}
    for key, group in groups.items():
        tests = [r["test_accuracy"] for r in group]
        summary[key] = {
            "n": len(group),
            "test_mean": statistics.mean(tests),
            "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "val_mean": statistics.mean(r["val_accuracy"] for r in group),
            "bits_mean": statistics.mean(r["avg_bits"] for r in group),
            "evaluations": statistics.mean(r["evaluations"] for r in group),
            "wall_s": statistics.mean(r["wall_s"] for r in group),
            "fp32_test": group[0].get("fp32_test_accuracy"),  # rows of older transfer runs lack it
            "test_kl": statistics.mean(r["test_kl"] for r in group) if all("test_kl" in r for r in group) else None,
            "all_within_budget": all(r["within_budget"] for r in group),
        }
    return summary


def evaluations_to_reach(curve: Sequence[float], target: float) -> int | None:
    """1-based number of evaluations after which the best-so-far curve reaches `target`, or None."""
    return next((i + 1 for i, value in enumerate(curve) if value >= target - 1e-12), None)


def plot(rows: list[dict[str, Any]], summary: dict, out: Path, objective: str) -> list[Path]:
    """Per model: test accuracy vs average bits per method, and best-so-far curves of DDPG vs random: validation
    accuracy, or under "kl" the validation KL divergence (the negated score, on a log scale: lower is better)."""
    sign, scale = (100, "linear") if objective == "accuracy" else (-1, "log")
    curve_label = "best val accuracy (%)" if objective == "accuracy" else "lowest val KL divergence from FP32"
    paths = []
    for model in sorted({r["model"] for r in rows}):
        fig, (acc_ax, curve_ax) = plt.subplots(1, 2, figsize=(11, 4))
        for method in sorted({k[2] for k in summary if k[0] == model}):
            keys = sorted(k for k in summary if k[0] == model and k[2] == method)
            acc_ax.errorbar(
                [summary[k]["bits_mean"] for k in keys],
                [100 * summary[k]["test_mean"] for k in keys],
                yerr=[100 * summary[k]["test_std"] for k in keys],
                marker="o",
                capsize=3,
                label=method,
            )
        acc_ax.set(xlabel="average weight bits", ylabel="test accuracy (%)", title=f"{model}: test accuracy")
        acc_ax.legend(fontsize=7)
        for method in ("random", "ddpg-channel"):
            for color, budget in enumerate(sorted({r["budget"] for r in rows if r["model"] == model})):
                curves = [r["curve"] for r in rows if (r["model"], r["method"], r["budget"]) == (model, method, budget)]
                if curves:
                    length = min(len(c) for c in curves)
                    mean = [sign * statistics.mean(c[i] for c in curves) for i in range(length)]
                    style = "-" if method == "ddpg-channel" else "--"
                    curve_ax.plot(range(1, length + 1), mean, style, color=f"C{color}", label=f"{method} {budget}b")
        curve_ax.set(xlabel="quantized evaluations", ylabel=curve_label, title="evaluations to best")
        curve_ax.set_xscale("log")
        curve_ax.set_yscale(scale)
        curve_ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(rows: list[dict[str, Any]], config: BenchmarkConfig, images: list[Path]) -> str:
    """The Markdown section: command, table per model, speed of DDPG vs random to random's best, plots."""
    summary = summarise(rows)
    score = (
        "validation accuracy"
        if config.objective == "accuracy"
        else f"validation score (minus the KL divergence on validation and {config.kl_train_samples} training inputs)"
    )
    lines = [
        f"Command: `{config.command}` (raw rows: `{config.out / 'results.jsonl'}`).",
        f"Seeds {list(config.seeds)} for stochastic methods; {config.episodes} quantized evaluations each. "
        f"DDPG warm start: {config.agent.warm_start or 'none'} (layer-wise DDPG: ilp-layer); "
        f"channel action (DDPG and random search): {config.agent.action}; channel order: {config.channel_order}.",
        "Accuracies in %; test = mean ± std over seeds on the held-out test split; val = validation accuracy of the",
        f"assignment chosen by {score}; test KL = mean KL divergence from the FP32 predictions on the test split",
        "(how faithful the answer is on inputs no search measured); evals = quantized validation evaluations;",
        "time = wall seconds per run (one torch thread, 2-core machine).",
        "",
    ]
    for model in sorted({k[0] for k in summary}):
        budgets = sorted({k[1] for k in summary if k[0] == model})
        fp32 = next(v["fp32_test"] for k, v in summary.items() if k[0] == model)
        lines += [f"### {model} (FP32 test {100 * fp32:.2f}%)", ""]
        lines += [
            "| budget | method | test | val | test KL | avg bits | evals | time (s) | in budget |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for budget in budgets:
            for method in config.methods:
                s = summary.get((model, budget, method))
                if s is None:
                    continue
                lines.append(
                    f"| {budget} | {method} | {100 * s['test_mean']:.2f} ± {100 * s['test_std']:.2f} "
                    f"| {100 * s['val_mean']:.2f} | {format_kl(s['test_kl'])} "
                    f"| {s['bits_mean']:.3f} | {s['evaluations']:.0f} "
                    f"| {s['wall_s']:.1f} | {'yes' if s['all_within_budget'] else 'NO'} |"
                )
        lines.append("")
        lines += [f"Evaluations the channel-wise DDPG needs to reach random search's best {score} "
                  "(per seed; '-' = never), and the evaluation at which each run found its own best:", ""]  # fmt: skip
        for budget in budgets:
            pairs, own_best = [], {"ddpg-channel": [], "random": []}
            for seed in config.seeds:
                agent = [r for r in rows if _key(r) == (model, budget, "ddpg-channel", seed)]
                rand = [r for r in rows if _key(r) == (model, budget, "random", seed)]
                if agent and rand:
                    reached = evaluations_to_reach(agent[0]["curve"], max(rand[0]["curve"]))
                    pairs.append(f"{reached or '-'} of {len(agent[0]['curve'])}")
                    for method, run in (("ddpg-channel", agent[0]), ("random", rand[0])):
                        own_best[method].append(str(evaluations_to_reach(run["curve"], max(run["curve"]))))
            if pairs:
                lines.append(
                    f"- {budget} bits: {', '.join(pairs)}; own best at {', '.join(own_best['ddpg-channel'])} "
                    f"(random search: {', '.join(own_best['random'])})"
                )
        lines.append("")
    for image in images:
        # relpath, not Path.relative_to: the Markdown file may lie outside the output folder (e.g. --markdown /tmp/x.md)
        lines.append(f"![{image.stem}]({os.path.relpath(image.resolve(), config.markdown.resolve().parent)})")
    return "\n".join(lines)


def write_section(path: Path, section: str, name: str = "benchmark", title: str = "Method comparison") -> None:
    """Replace the text between the `name` markers in `path` (appending a titled section if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{start}\n{section}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run what is missing, write the table and plots."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits_cnn at 2.5 bits, 2 seeds, 16 evaluations")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--budgets", nargs="+", type=float)
    parser.add_argument("--methods", nargs="+")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for stochastic methods")
    parser.add_argument("--episodes", type=int, help="quantized evaluations per stochastic run (default 300)")
    parser.add_argument("--out", type=Path, help="raw results and plots (default docs/benchmark)")
    parser.add_argument("--markdown", type=Path, help="Markdown file to update (default docs/BENCHMARKS.md)")
    parser.add_argument("--cache-dir", help="cache for built-in models and traces")
    parser.add_argument("--warm-start", default=AgentSettings.warm_start, help="DDPG warm start ('none': random)")
    parser.add_argument(
        "--action", default=AgentSettings.action, choices=list(ACTIONS), help="channel action parameterisation"
    )
    add_exploration_arguments(parser)
    add_noise_layer_arguments(parser)
    parser.add_argument(
        "--warmup-random-share",
        type=float,
        default=AgentSettings.warmup_random_share,
        help="share of warm-up episodes with uniform random actions after a warm start",
    )
    parser.add_argument(
        "--random-share",
        type=float,
        default=AgentSettings.random_share,
        help="share of the episodes after warm-up with uniform random actions",
    )
    parser.add_argument(
        "--updates-per-step",
        type=int,
        default=AgentSettings.updates_per_step,
        help="DDPG gradient steps per environment step",
    )
    parser.add_argument(
        "--imitate-best",
        action=argparse.BooleanOptionalAction,
        default=AgentSettings.imitate_best,
        help="clone every new best episode into the actor (self-imitation)",
    )
    add_anchor_steps_argument(parser)
    parser.add_argument(
        "--observation", default=AgentSettings.observation, choices=list(OBSERVATION_VERSIONS), help="features"
    )
    parser.add_argument(
        "--coarse-share",
        type=float,
        default=AgentSettings.coarse_share,
        help="share of a channel-wise search's episodes spent on a layer-wise search first",
    )
    add_search_rule_arguments(parser)
    add_trace_arguments(parser)
    parser.add_argument(
        "--trace-tol",
        type=float,
        default=TraceSettings.tol,
        help="stop probing when a probe moves the whole-model trace by less than this share (0: use every probe)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    traces = TraceSettings(
        max_probes=args.trace_probes,
        tol=args.trace_tol,
        reliability=args.trace_reliability,
        probe_data=args.trace_probe_data,
    )
    config = BenchmarkConfig(
        objective=args.objective, channel_order=args.channel_order, kl_train_samples=args.kl_train_samples,
        traces=traces,
    )  # fmt: skip
    config.agent = search_agent_settings(
        args,
        warmup_random_share=args.warmup_random_share,
        random_share=args.random_share,
        updates_per_step=args.updates_per_step,
    )
    if args.quick:
        config.models, config.budgets, config.seeds, config.episodes = ("digits_cnn",), (2.5,), (0, 1), 16
        config.agent = dataclasses.replace(config.agent, batch_size=8)
    config.models = tuple(args.models or config.models)
    config.budgets = tuple(args.budgets or config.budgets)
    config.methods = tuple(args.methods or config.methods)
    if not args.quick:
        config.seeds = tuple(range(args.seeds))
    config.episodes = args.episodes or config.episodes
    # The schedule of a search of the run's evaluations (the default one at 300).
    config.agent = config.agent.schedule_for(config.episodes, args.warmup_episodes, args.noise_decay)
    config.out = args.out or config.out
    config.markdown = args.markdown or (config.out / "BENCHMARKS.md" if args.out else config.markdown)
    config.command = command_line("benchmark.py", argv)
    rows = run_benchmark(config, cache_dir=args.cache_dir)
    images = plot(rows, summarise(rows), config.out, config.objective)
    write_section(config.markdown, markdown(rows, config, images))
    print(markdown(rows, config, images))
    return rows


if __name__ == "__main__":
    main()
