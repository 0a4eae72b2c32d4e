"""Does choosing a search's result by validation accuracy lose test accuracy, and would another rule do better?

    python scripts/selection_study.py --models digits_cnn --seeds 3

Runs the stochastic methods of `scripts/benchmark.py` (same problems, settings, seeds and evaluation counts) and
keeps every distinct assignment each run evaluated. For each run it reports the test accuracy of the candidate
chosen by
- max val: the benchmark's rule, the best validation accuracy (the first found among ties);
- 1-SE smallest: the smallest model whose validation accuracy is within one binomial standard error of the best
  (the "one standard error" rule of model selection);
and, as a bound no method can reach (it looks at test), the best test accuracy among the candidates, with the
Spearman correlation between validation and test accuracy over the 30 best candidates on validation. The test
split only judges the rules here; no search uses it.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmark import STOCHASTIC_METHODS, BenchmarkConfig, command_line, run_one, save_rows
from cwhawq.evaluation import Evaluation
from cwhawq.evaluation_memo import assignment_key
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.progress import progress_bar
from cwhawq.settings import ProblemSettings

#: The searches whose candidates are studied choose by accuracy, as the rule "max val" does (change 19 predates
#: the "kl" default).
SEARCH_OBJECTIVE = "accuracy"
#: Candidates, best on validation first, over which validation and test accuracy are correlated.
TOP_CANDIDATES = 30


def evaluated_assignments(
    problem: QuantProblem, method: str, seed: int, config: BenchmarkConfig
) -> list[tuple[Assignment, float]]:
    """Run `method` as the benchmark does; every distinct assignment it evaluated, in order, with its validation
    accuracy."""
    seen: dict[str, tuple[Assignment, float]] = {}
    measure = problem.validate

    def recording(assignment: Assignment, count: bool = True) -> Evaluation:
        evaluation = measure(assignment, count)
        copy = {name: bits.copy() for name, bits in assignment.items()}
        seen.setdefault(assignment_key(assignment), (copy, evaluation.accuracy))
        return evaluation

    problem.validate = recording  # an instance attribute: the search, its env and warm start all call through it
    try:
        run_one(problem, method, seed, config)
    finally:
        del problem.validate
    return list(seen.values())


def choices(val: np.ndarray, test: np.ndarray, bits: np.ndarray, n_val: int) -> dict[str, float]:
    """Test accuracy of each rule's choice among candidates with these accuracies and sizes, and the bound."""
    best = int(np.argmax(val))
    margin = math.sqrt(val[best] * (1 - val[best]) / n_val)
    near = np.flatnonzero(val >= val[best] - margin - 1e-12)
    smallest = near[np.lexsort((-val[near], bits[near]))[0]]
    top = np.argsort(-val, kind="stable")[:TOP_CANDIDATES]
    rho = spearmanr(val[top], test[top]).statistic if len(set(test[top])) > 1 else float("nan")
    return {
        "max_val": float(test[best]),
        "one_se_smallest": float(test[smallest]),
        "best_test_bound": float(test.max()),
        "spearman_top": float(rho),
        "candidates": len(val),
    }


def study(
    models: Sequence[str], budgets: Sequence[float], methods: Sequence[str], seeds: Sequence[int], episodes: int,
    cache_dir: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (model, budget, method, seed): the rules' test accuracies (see the module docstring)."""
    config = BenchmarkConfig(episodes=episodes)
    jobs = [(m, b, method, s) for m in models for b in budgets for method in methods for s in seeds]
    rows, problem, built = [], None, None
    for model, budget, method, seed in progress_bar(jobs, desc="selection study", unit="run"):
        if built != (model, budget):
            settings = ProblemSettings(model=model, budget_bits=budget, cache_dir=cache_dir, objective=SEARCH_OBJECTIVE)
            problem, built = build_problem(settings, progress=False), (model, budget)
        candidates = evaluated_assignments(problem, method, seed, config)
        val = np.array([accuracy for _, accuracy in candidates])
        test = np.array([problem.evaluate(a, "test", count=False) for a, _ in candidates])
        bits = np.array([problem.average_bits(a) for a, _ in candidates])
        rows.append(
            {"model": model, "budget": budget, "method": method, "seed": seed,
             **choices(val, test, bits, len(problem.data.val))}
        )  # fmt: skip
    return rows


def runs_by_cell(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """The study rows of each (model, budget, method), in order of first appearance."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["budget"], row["method"])].append(row)
    return groups


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """Means over seeds per model, budget and method."""
    groups = runs_by_cell(rows)
    lines = [
        f"Command: `{command}`. Test accuracy in %, mean over seeds, of the candidate each rule picks; the bound",
        "is the best test accuracy among the candidates (not a method); rho = Spearman correlation of validation",
        f"and test accuracy over the {TOP_CANDIDATES} best candidates on validation (mean over seeds).",
        "",
        "| model | budget | method | candidates | max val (benchmark) | 1-SE smallest | bound | rho |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (model, budget, method), group in groups.items():
        mean = lambda key: statistics.mean(r[key] for r in group)  # noqa: E731
        lines.append(
            f"| {model} | {budget} | {method} | {mean('candidates'):.0f} | {100 * mean('max_val'):.2f} "
            f"| {100 * mean('one_se_smallest'):.2f} | {100 * mean('best_test_bound'):.2f} "
            f"| {mean('spearman_top'):.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run the study, print the table and write the raw rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits_cnn"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.25, 2.5, 3.0])
    parser.add_argument("--methods", nargs="+", default=list(STOCHASTIC_METHODS), choices=STOCHASTIC_METHODS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per stochastic method")
    parser.add_argument("--episodes", type=int, default=BenchmarkConfig.episodes, help="evaluations per run")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmark/selection_study.jsonl"), help="raw rows")
    parser.add_argument("--cache-dir", help="cache for built-in models and traces")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = study(args.models, args.budgets, args.methods, range(args.seeds), args.episodes, args.cache_dir)
    save_rows(args.out, rows)
    print(markdown(rows, command_line("selection_study.py", argv)))
    return rows


if __name__ == "__main__":
    main()
