"""Two or more runs of `scripts/benchmark.py` side by side: each method's mean validation and test accuracy per model
and budget, over the seeds all runs share (e.g. the benchmark before and after a change to the traces).

    python scripts/compare_runs.py docs/benchmark/avx512_machine/results.jsonl \
        docs/benchmark/avx512_machine/reliable_traces/results.jsonl --methods greedy-channel ddpg-channel
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark import load_rows


def score_measure(row: dict[str, Any]) -> tuple[str | None, int]:
    """What a row's best-so-far scores were measured by: its objective (None in rows older than its recording) and
    the training inputs added to validation (0 before `ProblemSettings.kl_train_samples` existed)."""
    return row.get("objective"), row.get("kl_train_samples", 0)


def compare(runs: dict[str, list[dict[str, Any]]], methods: Sequence[str] | None = None) -> str:
    """A Markdown table: one line per (model, budget, method) present in every run, with the mean validation and
    test accuracy of each run over the seeds that all runs have for it; then the mean change of each run over the
    first, per method, and for searches (rows with a best-so-far `curve`) in how many cells their mean best
    validation score (the objective's, as searched) is higher or lower than the first run's; scores measured by
    another objective or on other inputs (`score_measure`) are not compared."""
    names = list(runs)
    grouped: dict[str, dict[tuple, dict[int, dict[str, Any]]]] = {}
    for name, rows in runs.items():
        for row in rows:
            if methods is None or row["method"] in methods:
                key = (row["model"], row["budget"], row["method"])
                grouped.setdefault(name, {}).setdefault(key, {})[row["seed"]] = row
    keys = [key for key in grouped.get(names[0], {}) if all(key in grouped.get(name, {}) for name in names)]
    header = "| model | budget | method | seeds | " + " | ".join(f"val ({n}) | test ({n})" for n in names) + " |"
    lines = [header, "|---|---|---|---|" + "---:|---:|" * len(names)]
    changes: dict[tuple[str, str], list[float]] = {}
    score_changes: dict[tuple[str, str], list[float]] = {}
    for key in sorted(keys, key=lambda k: (k[0], k[1], k[2])):
        seeds = sorted(set.intersection(*(set(grouped[name][key]) for name in names)))
        means = {
            name: [100 * statistics.mean(grouped[name][key][seed][f"{part}_accuracy"] for seed in seeds)
                   for part in ("val", "test")]
            for name in names
        }  # fmt: skip
        cells = " | ".join(f"{means[name][0]:.2f} | {means[name][1]:.2f}" for name in names)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(seeds)} | {cells} |")
        scores = {
            name: statistics.mean(grouped[name][key][seed]["curve"][-1] for seed in seeds)
            for name in names
            if all(grouped[name][key][seed].get("curve") for seed in seeds)
            and {score_measure(grouped[name][key][seed]) for seed in seeds}
            == {score_measure(grouped[names[0]][key][seed]) for seed in seeds}
        }
        for name in names[1:]:
            for part, index in (("val", 0), ("test", 1)):
                changes.setdefault((name, key[2], part), []).append(means[name][index] - means[names[0]][index])
            if name in scores and names[0] in scores:
                score_changes.setdefault((name, key[2]), []).append(scores[name] - scores[names[0]])
    lines.append("")
    for name in names[1:]:
        for method in dict.fromkeys(key[2] for key in keys):
            val, test = (statistics.mean(changes[(name, method, part)]) for part in ("val", "test"))
            lines.append(f"- {name} against {names[0]}, {method}: validation {val:+.2f}, test {test:+.2f} points")
            score_change = score_changes.get((name, method))
            if score_change:
                higher, lower = sum(d > 0 for d in score_change), sum(d < 0 for d in score_change)
                lines.append(
                    f"  (best validation score higher in {higher}, lower in {lower} of {len(score_change)} cells)"
                )
    return "\n".join(lines)


def run_names(paths: Sequence[Path]) -> list[str]:
    """A short name per results file: its folder and name without the suffix ("anchor/results"), with as many more
    folders as it takes to tell the files apart (two runs' "transfer/transfer" files)."""
    resolved = [path.resolve() for path in paths]
    if len(set(resolved)) < len(resolved):
        raise SystemExit("error: the same results file is given twice; pass each run once")
    for depth in range(2, max(len(path.parts) for path in resolved) + 1):
        names = ["/".join((*path.parent.parts[1:][-(depth - 1):], path.stem)) for path in resolved]
        if len(set(names)) == len(names):
            return names
    return [str(path) for path in resolved]


def main(argv: Sequence[str] | None = None) -> str:
    """Parse the result files, print the table and return it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results.jsonl files of scripts/benchmark.py, the reference first")
    parser.add_argument("--methods", nargs="+", help="methods to show (default: all)")
    args = parser.parse_args(argv)
    paths = [Path(path) for path in args.results]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"error: no rows at {missing[0]}; pass a results.jsonl written by scripts/benchmark.py")
    runs = {name: load_rows(path) for name, path in zip(run_names(paths), paths)}
    text = compare(runs, args.methods)
    print(text)
    return text


if __name__ == "__main__":
    main()
