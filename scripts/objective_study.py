"""Should a search's result be chosen by validation accuracy or by KL divergence? A check that reads no test data.

    python scripts/objective_study.py --models digits_cnn lenet5 resnet_mini --seeds 3

Runs a stochastic method as `scripts/benchmark.py` does (same problems, settings, seeds and evaluation counts)
with the "accuracy" objective, the default when this study was made, and keeps every distinct assignment it
evaluated (`selection_study.evaluated_assignments`). Each candidate's predictions on the validation split are
measured once per image. Then, for each of `SPLITS` random halvings of the validation split, each rule chooses a
candidate on one half and is scored by that candidate's accuracy on the other half:
- accuracy: the highest accuracy on the half (the first evaluated among ties), what `--objective accuracy` does;
- kl: the lowest mean KL divergence from the full-precision predictions on the half, what `--objective kl` does.
The held-out half plays the part of data the choice never saw, so the rule with the higher mean is the better
default without looking at the test split. The candidates are those of a search rewarded by accuracy; a search
rewarded by KL explores differently, which this check does not measure. Rows are appended to `--out` as each run
finishes; an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmark import STOCHASTIC_METHODS, BenchmarkConfig, command_line, load_rows, save_rows
from selection_study import evaluated_assignments, runs_by_cell

from cwhawq.evaluation import log_probs
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.progress import progress_bar
from cwhawq.settings import ProblemSettings

#: The objective of the searches whose candidates are studied (see the module docstring).
SEARCH_OBJECTIVE = "accuracy"
#: Random halvings of the validation split per run.
SPLITS = 200
RULES = ("accuracy", "kl")


def per_image(problem: QuantProblem, assignments: Sequence[Assignment]) -> tuple[np.ndarray, np.ndarray]:
    """(candidates x validation images) arrays: whether each candidate classifies each image correctly, and the
    KL divergence of its prediction from the full-precision model's."""
    reference = problem.fp_val_log_probs
    labels = problem.data.val.y
    correct, kl = [], []
    for assignment in assignments:
        with problem.quantizer.quantized(assignment):
            predicted = log_probs(problem.model, problem.data.val)
        correct.append((predicted.argmax(dim=1) == labels).numpy())
        kl.append((reference.exp() * (reference - predicted)).sum(dim=1).numpy())
    kl = np.asarray(kl, dtype=np.float64)
    return np.asarray(correct, dtype=np.float64), np.where(np.isfinite(kl), kl, np.inf)  # NaN would win argmin


def split_half(correct: np.ndarray, kl: np.ndarray, splits: int = SPLITS, seed: int = 0) -> dict[str, float]:
    """Mean accuracy on the held-out half of the candidate each rule chooses on the other half, over `splits`
    random halvings, and the shares of halvings where the kl rule's choice is better or worse there."""
    rng = np.random.default_rng(seed)
    n_images = correct.shape[1]
    held_out: dict[str, list[float]] = {rule: [] for rule in RULES}
    for _ in range(splits):
        order = rng.permutation(n_images)
        choose, judge = order[: n_images // 2], order[n_images // 2 :]
        picks = {
            "accuracy": int(np.argmax(correct[:, choose].mean(axis=1))),
            "kl": int(np.argmin(kl[:, choose].mean(axis=1))),
        }
        for rule, pick in picks.items():
            held_out[rule].append(float(correct[pick, judge].mean()))
    accuracy, by_kl = np.asarray(held_out["accuracy"]), np.asarray(held_out["kl"])
    return {
        **{f"held_out_{rule}": float(np.mean(values)) for rule, values in held_out.items()},
        "kl_better_share": float(np.mean(by_kl > accuracy)),
        "kl_worse_share": float(np.mean(by_kl < accuracy)),
    }


def study(
    models: Sequence[str], budgets: Sequence[float], methods: Sequence[str], seeds: Sequence[int], episodes: int,
    out: Path, cache_dir: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (model, budget, method, seed), appended to `out`; runs already there are kept, not rerun."""
    config = BenchmarkConfig(episodes=episodes)
    rows = load_rows(out)
    done = {(r["model"], r["budget"], r["method"], r["seed"]) for r in rows}
    jobs = [(m, b, method, s) for m in models for b in budgets for method in methods for s in seeds]
    wanted = set(jobs)
    problem, built = None, None
    for model, budget, method, seed in progress_bar(
        [job for job in jobs if job not in done], desc="objective study", unit="run"
    ):
        if built != (model, budget):
            settings = ProblemSettings(model=model, budget_bits=budget, cache_dir=cache_dir, objective=SEARCH_OBJECTIVE)
            problem, built = build_problem(settings, progress=False), (model, budget)
        candidates = [assignment for assignment, _ in evaluated_assignments(problem, method, seed, config)]
        correct, kl = per_image(problem, candidates)
        row = {"model": model, "budget": budget, "method": method, "seed": seed, "candidates": len(candidates),
               **split_half(correct, kl)}  # fmt: skip
        rows.append(row)
        save_rows(out, rows)
    return [row for row in rows if (row["model"], row["budget"], row["method"], row["seed"]) in wanted]


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """Means over seeds per model, budget and method, and over every row."""
    groups = runs_by_cell(rows)
    groups[("all", "", "")] = rows
    lines = [
        f"Command: `{command}`. Accuracy in % on the held-out half of validation of the candidate each rule chooses",
        f"on the other half (mean over {SPLITS} halvings and the seeds); kl better / worse = share of halvings where",
        "choosing by KL gives a higher / lower held-out accuracy than choosing by accuracy. No test data.",
        "",
        "| model | budget | method | seeds | candidates | by accuracy | by kl | kl better | kl worse |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (model, budget, method), group in groups.items():
        mean = lambda key: statistics.mean(r[key] for r in group)  # noqa: E731
        lines.append(
            f"| {model} | {budget} | {method} | {len(group)} | {mean('candidates'):.0f} "
            f"| {100 * mean('held_out_accuracy'):.2f} | {100 * mean('held_out_kl'):.2f} "
            f"| {100 * mean('kl_better_share'):.0f}% | {100 * mean('kl_worse_share'):.0f}% |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run what is missing, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits_cnn"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.25, 2.5, 3.0])
    parser.add_argument("--methods", nargs="+", default=["ddpg-channel"], choices=STOCHASTIC_METHODS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method")
    parser.add_argument("--episodes", type=int, default=BenchmarkConfig.episodes, help="evaluations per run")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmark/objective_study.jsonl"), help="raw rows")
    parser.add_argument("--cache-dir", help="cache for built-in models and traces")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = study(args.models, args.budgets, args.methods, range(args.seeds), args.episodes, args.out, args.cache_dir)
    print(markdown(rows, command_line("objective_study.py", argv)))
    return rows


if __name__ == "__main__":
    main()
