"""Experiment behind the default candidate bit-widths: random search on each candidate set, same budgets.

    python scripts/choose_bit_widths.py              # digits_cnn, budgets 2.25/2.5/3.0, 100 evaluations x 3 seeds
    python scripts/choose_bit_widths.py --quick      # a smoke run

Random search (not the agent) is used so that the comparison does not depend on agent tuning. The choice is made
on validation accuracy; test accuracy is printed beside it for information only.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch

from agents.random_search import random_search
from cwhawq.problem import build_problem
from cwhawq.settings import ProblemSettings

CANDIDATE_SETS: tuple[tuple[int, ...], ...] = ((2, 4, 8), (2, 3, 4), (2, 3, 4, 6, 8), (2, 3, 4, 5, 6, 7, 8))


def main(argv: Sequence[str] | None = None) -> dict[tuple, tuple[float, float]]:
    """Print a Markdown table of mean validation/test accuracy per candidate set and budget."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one budget, 5 evaluations, 1 seed")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--cache-dir")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budgets, evaluations, seeds = ((2.5,), 5, (0,)) if args.quick else ((2.25, 2.5, 3.0), 100, (0, 1, 2))
    table = {}
    print(f"random search, {evaluations} evaluations, seeds {list(seeds)}, model {args.model}; accuracy in %\n")
    print("| candidate bits | budget | val (mean) | test (mean) |")
    print("|---|---|---:|---:|")
    for bits in CANDIDATE_SETS:
        for budget in budgets:
            settings = ProblemSettings(model=args.model, budget_bits=budget, bit_widths=bits, cache_dir=args.cache_dir)
            problem = build_problem(settings, progress=False)
            vals, tests = [], []
            for seed in seeds:
                record = random_search(problem, evaluations, seed)
                vals.append(record.best_val_accuracy)
                tests.append(problem.evaluate(record.best_assignment, split="test", count=False))
            table[(bits, budget)] = (statistics.mean(vals), statistics.mean(tests))
            val, test = table[(bits, budget)]
            print(f"| {bits} | {budget} | {100 * val:.2f} | {100 * test:.2f} |")
    return table


if __name__ == "__main__":
    main()
