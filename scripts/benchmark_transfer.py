"""Transfer benchmark: train the agent on one model, reuse its policy on the others, zero-shot and fine-tuned.

    python scripts/benchmark_transfer.py             # source digits_cnn -> lenet5, resnet_mini; after benchmark.py
    python scripts/benchmark_transfer.py --quick --out DIR
    python scripts/benchmark_transfer.py --distill-from A B C --targets A B C   # multi-source, leave one out

For each budget and seed: a search on the source model (the main benchmark's episodes) saves a policy; on each
target it is applied zero-shot (`agents.rollout.reuse_outcomes`: its deterministic rollout, and that rollout
fitted to the budget; the better on validation) and fine-tuned for a third of those episodes. With
`--distill-from`, every listed model is searched at every budget and seed, and for each target and seed one policy
is distilled (`agents.distill`) from the searches of all the other listed models, at every budget and seed (the
seed only changes the actor's initialisation); it is applied to the target at each budget as above. The table
sets these beside the target's from-scratch channel-wise DDPG, uniform and greedy rows from the main benchmark's
`results.jsonl` (run `scripts/benchmark.py` first with the same --out). Test accuracy is measured once per run on
the held-out split. Rows are appended to `transfer.jsonl` as they finish; an interrupted run resumes. Policies and
fine-tune runs (large: replay buffers, TensorBoard) go to `--work`, outside docs/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from benchmark import (
    command_line,
    format_interval,
    format_kl,
    load_rows,
    measured_row,
    paired_difference,
    summarise,
    write_section,
)

from agents.distill import distill_runs
from agents.policy_bundle import load_bundle
from agents.rollout import best_outcome, reuse_outcomes
from agents.search import TRANSFERRED_START, SearchRun
from cwhawq.cli import add_noise_layer_arguments
from cwhawq.problem import QuantProblem, build_problem
from cwhawq.progress import progress_bar
from cwhawq.result import result_assignment
from cwhawq.settings import OBJECTIVES, AgentSettings, ProblemSettings, SearchSettings
from envs.channel_bits_env import ACTIONS, ChannelBitsEnv
from envs.observation import OBSERVATION_VERSIONS

REFERENCE_METHODS = ("uniform", "greedy-channel", "ddpg-channel")


def source_policy(
    source: QuantProblem, model: str, budget: float, seed: int, episodes: int, run_dir: Path, agent: AgentSettings
) -> Path:
    """Train (or reuse) the source model's policy for one budget and seed in `run_dir`; return its bundle path."""
    if not (run_dir / "result.json").is_file():
        settings = SearchSettings(
            problem=ProblemSettings(model=model, budget_bits=budget, objective=source.objective),
            agent=agent,
            episodes=episodes,
            seed=seed,
            out=str(run_dir),
            progress=False,
            resume=(run_dir / "state.json").is_file(),
        )
        SearchRun(source, settings).run()
    return run_dir / "policy.zip"


def transfer_rows(
    target: QuantProblem,
    policy: Path,
    model: str,
    budget: float,
    seed: int,
    episodes: int,
    runs: Path,
    agent: AgentSettings,
) -> list[dict[str, Any]]:
    """Zero-shot and fine-tuned results of `policy` on the target problem (fine-tunes are kept in `runs`); the
    fine-tune's row also holds its best-so-far validation score curve and what it explored from."""
    rows = []
    start = time.perf_counter()
    env = ChannelBitsEnv.for_agent(target, agent)
    loaded, _ = load_bundle(policy, env)
    outcomes = reuse_outcomes(loaded, env)
    zero_shot = best_outcome(outcomes)[0]["assignment"]
    rows.append(("policy-zero-shot", zero_shot, len(outcomes), time.perf_counter() - start))
    start = time.perf_counter()
    run_dir = runs / f"{model}_{budget}_s{seed}"
    problem = ProblemSettings(model=model, budget_bits=budget, objective=target.objective)
    settings = SearchSettings(
        problem=problem, agent=agent, episodes=episodes, seed=seed, out=str(run_dir), progress=False
    )
    result = SearchRun(target, settings, start_from=policy).run()
    fine_tuned = result_assignment(result)
    rows.append(("policy-finetune", fine_tuned, result["search"]["evaluations"], time.perf_counter() - start))
    measured = [
        {**measured_row(target, assignment, model, budget, method, seed), "evaluations": evaluations, "wall_s": wall}
        for method, assignment, evaluations, wall in rows
    ]
    # The fine-tune's best-so-far validation scores, so that `compare_runs.py` can compare fine-tunes as searches,
    # and what it explored from (the transferred policy, or a baseline's replay with a fresh actor).
    measured[-1].update(curve=result["search"]["best_val_score_curve"], start=result["search"]["start"])
    return measured


def source_dir(work: Path, model: str, budget: float, seed: int) -> Path:
    """Where the search on a source model for `--distill-from` is kept."""
    return work / "sources" / f"{model}_{budget}_s{seed}"


def distilled_policy(
    target: str,
    seed: int,
    sources: Sequence[str],
    budgets: Sequence[float],
    seeds: int,
    work: Path,
    agent: AgentSettings,
    cache_dir: str | None,
) -> Path:
    """The policy distilled for `target` and `seed` from the other sources' searches (all budgets and seeds), with
    `agent`'s actor (a linear one is kept apart, in `distilled_linear`)."""
    linear = agent.actor_arch == ()
    out = work / ("distilled_linear" if linear else "distilled") / f"{target}_s{seed}"
    if not (out / "policy.zip").is_file():
        runs = [source_dir(work, model, b, s) for model in sources if model != target
                for b in budgets for s in range(seeds)]  # fmt: skip
        distill_runs(runs, out, agent, seed, cache_dir)
    return out / "policy.zip"


def table(rows: list[dict[str, Any]], reference: list[dict[str, Any]], command: str, source: str) -> str:
    """Markdown: per target and budget, zero-shot, fine-tune and the references (test accuracy mean ± std)."""
    lines = [
        f"Command: `{command}`. Policy trained on {source}; test accuracy in %, mean ± std over seeds "
        "(evals = quantized validation evaluations on the target; test KL = mean KL divergence from the FP32 "
        "predictions on the test split; from policy = the fine-tunes that explored from the transferred policy's "
        "output, the others from a baseline's replay with a fresh actor; - greedy = the mean test accuracy minus the "
        "channel greedy's, with a 95% paired confidence interval over the test images; each where the rows record "
        "it).",
        "",
        "| target | budget | method | test | val | test KL | avg bits | evals | in budget | from policy "
        "| - greedy, 95% CI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    everything = rows + [r for r in reference if r["method"] in REFERENCE_METHODS]
    summary = summarise(everything)
    for model in sorted({r["model"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows if r["model"] == model}):
            cell = [r for r in everything if (r["model"], r["budget"]) == (model, budget)]
            greedy = [r for r in cell if r["method"] == "greedy-channel"]
            for method in ("policy-zero-shot", "policy-finetune", *REFERENCE_METHODS):
                group = [r for r in cell if r["method"] == method]
                if not group:
                    continue
                lead = paired_difference(group, greedy) if greedy and method != "greedy-channel" else None
                starts = [row.get("start") for row in group]
                from_policy = f"{starts.count(TRANSFERRED_START)}/{len(starts)}" if all(starts) else "-"
                s = summary[(model, budget, method)]
                lines.append(
                    f"| {model} | {budget} | {method} | {100 * s['test_mean']:.2f} ± {100 * s['test_std']:.2f} "
                    f"| {100 * s['val_mean']:.2f} | {format_kl(s['test_kl'])} | {s['bits_mean']:.3f} "
                    f"| {s['evaluations']:.0f} | {'yes' if s['all_within_budget'] else 'NO'} | {from_policy} "
                    f"| {format_interval(lead)} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run what is missing and update the transfer section of the Markdown file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one target, one budget, one seed, 45 episodes")
    parser.add_argument("--source", default="digits_cnn")
    parser.add_argument("--targets", nargs="+", default=["lenet5", "resnet_mini"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.25, 2.5, 3.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=300, help="episodes of the source search (fine-tune: 1/3)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmark"))
    parser.add_argument("--markdown", type=Path, help="default docs/BENCHMARKS.md, or OUT/BENCHMARKS.md with --out")
    parser.add_argument("--cache-dir", help="cache for built-in models and traces")
    parser.add_argument("--work", type=Path, help="policies and runs (default runs/transfer, or OUT/work with --out)")
    parser.add_argument("--reference", type=Path, help="main benchmark rows to compare (default OUT/results.jsonl)")
    parser.add_argument("--section", default="transfer", help="name of the Markdown markers to write between")
    parser.add_argument("--action", default=AgentSettings.action, choices=list(ACTIONS), help="channel action")
    parser.add_argument(
        "--observation", default=AgentSettings.observation, choices=list(OBSERVATION_VERSIONS), help="features"
    )
    add_noise_layer_arguments(parser)
    parser.add_argument(
        "--finetune-warmup-episodes",
        type=int,
        help="warm-up episodes of each fine-tune (default: as `cwhawq apply`, `AgentSettings.schedule_for`)",
    )
    parser.add_argument(
        "--finetune-noise-decay",
        type=float,
        help="per-episode decay of each fine-tune's exploration noise (default: as `cwhawq apply`)",
    )
    parser.add_argument("--distill-from", nargs="+", help="models to distil one policy from (each target left out)")
    parser.add_argument(
        "--linear-actor", action="store_true", help="distil a linear actor (`cwhawq distill --linear-actor`)"
    )
    parser.add_argument(
        "--objective", default=ProblemSettings.objective, choices=OBJECTIVES, help="what searches maximise on val"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agent = AgentSettings(
        action=args.action,
        observation=args.observation,
        noise_layers=args.noise_layers,
        noise_layers_law=args.noise_layers_law,
    )
    if args.quick:
        args.targets, args.budgets, args.seeds, args.episodes = args.targets[:1], [2.5], 1, 45
    # The fine-tunes explore as `cwhawq apply`'s do, unless told otherwise; the source search keeps the defaults.
    fine_tune_agent = agent.schedule_for(args.episodes // 3, args.finetune_warmup_episodes, args.finetune_noise_decay)
    default_out = Path("docs/BENCHMARKS.md") if args.out == Path("docs/benchmark") else args.out / "BENCHMARKS.md"
    markdown = args.markdown or default_out
    work = args.work or (Path("runs/transfer") if args.out == Path("docs/benchmark") else args.out / "work")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "transfer.jsonl"
    rows = load_rows(raw)
    done = {(r["model"], r["budget"], r["seed"]) for r in rows}
    jobs = [(b, s, t) for b in args.budgets for s in range(args.seeds) for t in args.targets if (t, b, s) not in done]
    problems: dict[tuple[str, float], QuantProblem] = {}

    def problem(model: str, budget: float) -> QuantProblem:
        if (model, budget) not in problems:
            settings = ProblemSettings(
                model=model, budget_bits=budget, cache_dir=args.cache_dir, objective=args.objective
            )
            problems[(model, budget)] = build_problem(settings, progress=False)
        return problems[(model, budget)]

    if args.distill_from:
        actor = ", a linear actor" if args.linear_actor else ""
        source = f"{', '.join(args.distill_from)}, the target left out (distilled from every budget and seed{actor})"
        searches = [(m, b, s) for m in args.distill_from for b in args.budgets for s in range(args.seeds)]
        missing = [job for job in searches if not (source_dir(work, *job) / "result.json").is_file()]
        for model, budget, seed in progress_bar(missing, desc="source searches", unit="run"):
            run_dir = source_dir(work, model, budget, seed)
            source_policy(problem(model, budget), model, budget, seed, args.episodes, run_dir, agent)
    else:
        source = args.source
    for budget, seed, target in progress_bar(jobs, desc="transfer", unit="run"):
        if args.distill_from:
            distilled_agent = dataclasses.replace(agent, actor_arch=() if args.linear_actor else None)
            policy = distilled_policy(
                target, seed, args.distill_from, args.budgets, args.seeds, work, distilled_agent, args.cache_dir
            )
        else:
            run_dir = work / "policies" / f"{budget}_s{seed}"
            policy = source_policy(
                problem(args.source, budget), args.source, budget, seed, args.episodes, run_dir, agent
            )
        runs = work / ("runs_linear" if args.linear_actor else "runs")
        new = transfer_rows(
            problem(target, budget), policy, target, budget, seed, args.episodes // 3, runs, fine_tune_agent
        )
        with raw.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in new)
        rows += new
    command = command_line("benchmark_transfer.py", argv)
    section = table(rows, load_rows(args.reference or args.out / "results.jsonl"), command, source)
    write_section(markdown, section, name=args.section, title="Policy transfer")
    print(section)
    return rows


if __name__ == "__main__":
    main()
