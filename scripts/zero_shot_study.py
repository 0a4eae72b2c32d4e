"""Which zero-shot rule, learned from other models' searches, transfers best? A leave-one-model-out study.

    python scripts/zero_shot_study.py      # after the distilled transfer benchmark (its --work holds the sources)
    python scripts/zero_shot_study.py --work runs/distilled_5models_sparse --extra-sources mlp1d cnn1d   # more sources

The distilled transfer benchmark (`scripts/benchmark_transfer.py --distill-from ... --observation v2`) leaves
the channel-wise searches of every model, budget and seed in `WORK/sources`. For each target model, this study
learns a per-layer level action from the best assignments of the other models' searches (observation v2, the
same (observation, action) pairs that `agents.distill` regresses on) with several rules, plays each rule's
deterministic episode on the target at each budget (zero-shot as `cwhawq apply` does it: as played and fitted to
the budget, the better on validation) and reports validation and test accuracy beside uniform and the channel
greedy. Models given with `--extra-sources` are learned from for every target and are never targets themselves.
- hint: the level the channel greedy gives the layer (an observation v2 feature), learned from nothing: the
  greedy's counts replayed in trace order (its mean level where a layer mixes more than two widths);
- ridge A / residual A: ridge regression (penalty A) of the level, or of its offset from the hint, on the
  observation;
- distilled seed S: the actor `agents.distill` fits (the benchmark's policy-zero-shot rows); distilled mean: the
  mean action of the three seeds' actors; linear actor A: the linear actor `cwhawq distill --linear-actor` fits
  (`agents.distill.fit_linear_actor`: least squares on the actions, shrunk toward the hint with ridge penalty A;
  the command uses `agents.distill.LINEAR_PENALTY`).
The test split only judges the rules here; they are compared on validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmark import command_line, save_rows
from benchmark_transfer import source_dir
from sklearn.linear_model import Ridge

from agents.ddpg import make_agent
from agents.distill import HINT_FEATURE, LINEAR_PENALTY, distill_policy, fit_linear_actor, load_source_run
from agents.rollout import best_outcome, play_actions, zero_shot_outcomes
from cwhawq.baselines import run_method
from cwhawq.errors import CwhawqError
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.progress import progress_bar
from cwhawq.settings import OBJECTIVES, AgentSettings, ProblemSettings
from envs.channel_bits_env import ChannelBitsEnv
from envs.observation import static_feature_names

#: A zero-shot rule: the level action for one observation.
Rule = Callable[[np.ndarray], float]
AGENT = AgentSettings(observation="v2")
LINEAR_AGENT = dataclasses.replace(AGENT, actor_arch=())
HINT = static_feature_names("v2").index(HINT_FEATURE)
RIDGE_PENALTIES = (1.0, 10.0)
#: Penalties of the linear actor's fit (`agents.distill.LINEAR_PENALTY` is what `cwhawq distill --linear-actor` uses).
LINEAR_PENALTIES = (0.1, LINEAR_PENALTY, 10.0)
#: Distilled actors per target (the seed sets only their initialisation).
ACTOR_SEEDS = 3
BASELINES = ("uniform", "greedy-channel")


def source_envs(
    work: Path, models: Sequence[str], budgets: Sequence[float], seeds: int, cache_dir: str | None
) -> list[tuple[ChannelBitsEnv, Assignment]]:
    """The environment and best assignment of every search of `models` in `work` (every budget and seed)."""
    problems: dict[str, QuantProblem] = {}
    runs = [load_source_run(source_dir(work, m, b, s), cache_dir, problems=problems) for m in models
            for b in budgets for s in range(seeds)]  # fmt: skip
    return [(ChannelBitsEnv.for_agent(run.problem, AGENT), run.assignment) for run in runs]


def rules(
    work: Path, sources: Sequence[str], budgets: Sequence[float], seeds: int, cache_dir: str | None
) -> dict[str, Rule]:
    """Every rule of the module docstring, learned from the searches of `sources`."""
    envs = source_envs(work, sources, budgets, seeds, cache_dir)
    observations, levels = [], []
    for env, assignment in envs:
        played = env.actions_for(assignment)
        observations += [step[0] for step in play_actions(env, played)]
        levels += [float(action[0]) for action in played]
    observations, levels = np.stack(observations), np.asarray(levels)
    learned: dict[str, Rule] = {"hint": lambda obs: float(obs[HINT])}
    for penalty in RIDGE_PENALTIES:
        direct = Ridge(alpha=penalty).fit(observations, levels)
        offset = Ridge(alpha=penalty).fit(observations, levels - observations[:, HINT])
        learned[f"ridge {penalty:g}"] = lambda obs, fit=direct: float(fit.predict(obs[None])[0])
        learned[f"residual {penalty:g}"] = lambda obs, fit=offset: float(obs[HINT] + fit.predict(obs[None])[0])
    actors = [distill_policy(envs, AGENT, seed)[0] for seed in range(ACTOR_SEEDS)]
    for seed, actor in enumerate(actors):
        learned[f"distilled seed {seed}"] = lambda obs, actor=actor: float(actor.predict(obs, deterministic=True)[0][0])
    learned["distilled mean"] = lambda obs: float(np.mean([a.predict(obs, deterministic=True)[0][0] for a in actors]))
    first_env = envs[0][0]
    for penalty in LINEAR_PENALTIES:
        linear = make_agent(first_env, LINEAR_AGENT, first_env.n_steps, seed=0)  # the fit overwrites the seed's work
        fit_linear_actor(linear, first_env, observations, levels[:, None], penalty)
        learned[f"linear actor {penalty:g}"] = lambda obs, a=linear: float(a.predict(obs, deterministic=True)[0][0])
    return learned


def zero_shot(env: ChannelBitsEnv, rule: Rule) -> tuple[float, float]:
    """Validation and test accuracy of the rule's episode on `env`, as played or fitted to the budget (the better
    on validation)."""
    outcomes = zero_shot_outcomes(lambda obs: np.array([np.clip(rule(obs), -1.0, 1.0)], dtype=np.float32), env)
    info = best_outcome(outcomes)[0]
    return info["val_accuracy"], env.problem.evaluate(info["assignment"], "test", count=False)


def baseline_rows(problem: QuantProblem, target: str, budget: float) -> list[dict[str, Any]]:
    """Uniform's and the channel greedy's accuracies, measured like the rules'."""
    rows = []
    for method in BASELINES:
        assignment = run_method(problem, method)
        rows.append({"target": target, "budget": budget, "rule": method,
                     "val": problem.evaluate(assignment, "val", count=False),
                     "test": problem.evaluate(assignment, "test", count=False)})  # fmt: skip
    return rows


def study(
    work: Path,
    models: Sequence[str],
    budgets: Sequence[float],
    seeds: int = 3,
    cache_dir: str | None = None,
    extra_sources: Sequence[str] = (),
    objective: str = ProblemSettings.objective,
) -> list[dict[str, Any]]:
    """One row per target, budget and rule (baselines included), each rule learned from the searches (seeds
    0..`seeds`-1) of the other `models` and of `extra_sources`."""
    rows = []
    for target in progress_bar(models, desc="zero-shot study", unit="target"):
        sources = [model for model in models if model != target] + list(extra_sources)
        learned = rules(work, sources, budgets, seeds, cache_dir)
        for budget in budgets:
            settings = ProblemSettings(model=target, budget_bits=budget, cache_dir=cache_dir, objective=objective)
            problem = build_problem(settings, progress=False)
            env = ChannelBitsEnv.for_agent(problem, AGENT)
            rows += baseline_rows(problem, target, budget)
            for name, rule in learned.items():
                val, test = zero_shot(env, rule)
                rows.append({"target": target, "budget": budget, "rule": name, "val": val, "test": test})
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """Test (validation) accuracy per rule and cell, the mean validation accuracy, and the cells where the rule's
    test accuracy is above both baselines'."""
    cells = list(dict.fromkeys((row["target"], row["budget"]) for row in rows))
    names = list(dict.fromkeys(row["rule"] for row in rows))
    table = {(row["target"], row["budget"], row["rule"]): row for row in rows}
    lines = [
        f"Command: `{command}`. Zero-shot test accuracy in % (validation in brackets) per target and budget;",
        "mean val = mean validation accuracy over the cells (the rules' only fair ranking); above both = cells",
        "whose test accuracy is strictly above uniform's and the channel greedy's.",
        "",
        "| rule | " + " | ".join(f"{target} {budget}" for target, budget in cells) + " | mean val | above both |",
        "|---|" + "---:|" * (len(cells) + 2),
    ]
    for name in names:
        picked = [table[(*cell, name)] for cell in cells]
        above = sum(
            all(row["test"] > table[(*cell, base)]["test"] for base in BASELINES) for cell, row in zip(cells, picked)
        )
        lines.append(
            f"| {name} | " + " | ".join(f"{100 * r['test']:.2f} ({100 * r['val']:.1f})" for r in picked)
            + f" | {100 * statistics.mean(r['val'] for r in picked):.2f} | "
            + ("" if name in BASELINES else f"{above}/{len(cells)}") + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run the study, print the table and write the raw rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "lenet5", "resnet_mini"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.25, 2.5, 3.0])
    parser.add_argument("--extra-sources", nargs="+", default=[], help="models only learned from, never targets")
    parser.add_argument(
        "--work", type=Path, default=Path("runs/distilled_v2_sparse"), help="the distilled transfer benchmark's --work"
    )
    parser.add_argument("--seeds", type=int, default=3, help="source searches per model and budget (seeds 0..N-1)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmark/zero_shot_study.jsonl"), help="raw rows")
    parser.add_argument("--cache-dir", help="cache for built-in models and traces")
    parser.add_argument(
        "--objective", default=ProblemSettings.objective, choices=OBJECTIVES, help="the sources' search objective"
    )
    args = parser.parse_args(argv)
    missing = [
        m for m in args.models + args.extra_sources for b in args.budgets for s in range(args.seeds)
        if not (source_dir(args.work, m, b, s) / "result.json").is_file()
    ]  # fmt: skip
    if missing:
        raise SystemExit(
            f"error: no searches of {missing[0]} in {args.work / 'sources'}; run the distilled transfer benchmark "
            "(docs/BENCHMARKS.md) with --work pointing there first"
        )
    torch.set_num_threads(1)
    try:
        rows = study(
            args.work, args.models, args.budgets, args.seeds, args.cache_dir, args.extra_sources, args.objective
        )
    except CwhawqError as error:
        raise SystemExit(f"error: {error}") from None
    save_rows(args.out, rows)
    print(markdown(rows, command_line("zero_shot_study.py", argv)))
    return rows


if __name__ == "__main__":
    main()
