"""Where the main benchmark's rows stand against issue 3's targets, per model and budget, for one or more runs.

    python scripts/target_summary.py docs/benchmark/results.jsonl docs/benchmark/avx512_machine/results.jsonl

For each `results.jsonl` written by `scripts/benchmark.py`: the channel-wise DDPG's test accuracy (mean ± std over
seeds), the best other method's mean test accuracy, whether the DDPG's mean is at least every other method's, and
in how many seeds the DDPG's best-so-far validation score reaches the same seed's random-search best within half of
random search's evaluations (and, in the runs that miss, how far short of random's best the DDPG's best within that
half falls, relative to random's best score). Several files (e.g. the same benchmark on two processors) are set
side by side; files joined by "+" count as one run (e.g. `results.jsonl+seeds_5_9.jsonl`, seeds 0-4 and 5-9).

Where the rows record which test images each answer classifies correctly (`test_correct`, written since change 37),
the DDPG's lead over the best other method is also given with a 95% confidence interval over the test images: each
image's correctness is averaged over a method's seeds, and the per-image differences are the paired sample. An
interval that holds 0 means another test sample of the same size could well have ranked the two the other way.
Where they record `test_kl`, the DDPG's mean KL divergence from the full-precision predictions on the test split is
set beside the lowest other method's: how faithful each answer is on inputs no search measured.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark import evaluations_to_reach, format_interval, load_rows, paired_difference

AGENT = "ddpg-channel"


def cell_summary(rows: list[dict[str, Any]], model: str, budget: float) -> dict[str, Any] | None:
    """The targets' figures for one model and budget (None without channel-wise DDPG rows or another method's)."""
    picked = [row for row in rows if row["model"] == model and row["budget"] == budget]
    agent = [row for row in picked if row["method"] == AGENT]
    others: dict[str, list[dict[str, Any]]] = {}
    for row in picked:
        if row["method"] != AGENT:
            others.setdefault(row["method"], []).append(row)
    if not agent or not others:
        return None
    tests = [row["test_accuracy"] for row in agent]
    means = {method: statistics.mean(row["test_accuracy"] for row in group) for method, group in others.items()}
    best = max(means, key=lambda method: means[method])
    random = {row["seed"]: row["curve"] for row in picked if row["method"] == "random"}
    paired = [row for row in agent if row["seed"] in random]
    fast, shortfalls = 0, []
    for row in paired:
        target, half = max(random[row["seed"]]), len(random[row["seed"]]) // 2
        reached = evaluations_to_reach(row["curve"], target)
        if reached is not None and reached <= half:
            fast += 1
        else:
            shortfalls.append((target - max(row["curve"][:half])) / abs(target))
    faithful = None
    if all("test_kl" in row for row in picked):
        kl = {method: statistics.mean(row["test_kl"] for row in group) for method, group in others.items()}
        closest = min(kl, key=lambda method: kl[method])
        faithful = (statistics.mean(row["test_kl"] for row in agent), closest, kl[closest])
    return {
        "test_mean": statistics.mean(tests),
        "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "best_other": best,
        "best_other_test": means[best],
        "at_least_every_other": all(statistics.mean(tests) >= mean - 1e-12 for mean in means.values()),
        "lead": paired_difference(agent, others[best]),
        "faithful": faithful,
        "fast": fast,
        "shortfalls": shortfalls,
        "paired": len(paired),
    }


def _faithful(faithful: tuple[float, str, float] | None) -> str:
    """The DDPG's test KL divergence and the lowest other method's, or "-" where the rows do not record it."""
    if faithful is None:
        return "-"
    agent, closest, other = faithful
    return f"{agent:.4f} / {closest} {other:.4f}"


def _short(shortfalls: list[float]) -> str:
    """How far short of random search's best the DDPG's best within half the evaluations fell, in the runs that
    missed it (relative to random's best score)."""
    return f" (short by {', '.join(f'{100 * gap:.1f}%' for gap in shortfalls)})" if shortfalls else ""


def cells_of(runs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, float]]:
    """Every (model, budget) of the runs, once each, in the order the rows first name them."""
    return list(dict.fromkeys((row["model"], row["budget"]) for rows in runs.values() for row in rows))


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table: one row per model and budget, six columns per run, and a totals line per run."""
    names = list(runs)
    cells = cells_of(runs)
    header = "| model | budget | " + " | ".join(
        f"DDPG test ({name}) | best other ({name}) | DDPG >= all ({name}) | DDPG - best other, 95% CI ({name}) | "
        f"test KL: DDPG / lowest other ({name}) | random's best by half ({name})"
        for name in names
    )
    lines = [header + " |", "|---|---|" + "---|" * (6 * len(names))]
    totals = {name: [0, 0, 0, 0, 0, 0] for name in names}
    for model, budget in cells:
        parts = []
        for name in names:
            summary = cell_summary(runs[name], model, budget)
            if summary is None:
                parts.append("- | - | - | - | - | -")
                continue
            total = totals[name]
            total[0] += summary["at_least_every_other"]
            total[1] += 1
            total[2] += summary["fast"]
            total[3] += summary["paired"]
            if summary["faithful"] is not None:
                total[4] += summary["faithful"][0] <= summary["faithful"][2]
                total[5] += 1
            parts.append(
                f"{100 * summary['test_mean']:.2f} ± {100 * summary['test_std']:.2f} | "
                f"{summary['best_other']} {100 * summary['best_other_test']:.2f} | "
                f"{'yes' if summary['at_least_every_other'] else 'no'} | {format_interval(summary['lead'])} | "
                f"{_faithful(summary['faithful'])} | "
                f"{summary['fast']}/{summary['paired']}{_short(summary['shortfalls'])}"
            )
        lines.append(f"| {model} | {budget} | " + " | ".join(parts) + " |")
    lines.append("")
    for name, (met, n_cells, fast, paired, faithful, measured) in totals.items():
        closest = f"; the lowest test KL divergence in {faithful} of {measured} cells" if measured else ""
        lines.append(
            f"- {name}: DDPG at least every other method in {met} of {n_cells} cells; random search's best reached "
            f"within half of its evaluations in {fast} of {paired} runs{closest}."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Parse the result files, print the table and return it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results.jsonl files of scripts/benchmark.py (a+b: one run)")
    parser.add_argument("--seeds", type=int, help="only seeds 0 .. N-1 of every method (default: all)")
    args = parser.parse_args(argv)
    groups = [[Path(part) for part in group.split("+")] for group in args.results]
    missing = [path for group in groups for path in group if not path.is_file()]
    if missing:
        raise SystemExit(f"error: no rows at {missing[0]}; pass a results.jsonl written by scripts/benchmark.py")
    runs: dict[str, list[dict]] = {}
    for group in groups:
        name = " + ".join(f"{path.parent.name}/{path.stem}" for path in group)
        runs[name] = [
            row for path in group for row in load_rows(path) if args.seeds is None or row["seed"] < args.seeds
        ]
    if not any(cell_summary(rows, model, budget) for rows in runs.values() for model, budget in cells_of(runs)):
        raise SystemExit(
            f"error: no model and budget has both {AGENT} rows and another method's; pass a benchmark run's "
            "results.jsonl, or join the files of one run with a+b"
        )
    text = table(runs)
    print(text)
    return text


if __name__ == "__main__":
    main()
