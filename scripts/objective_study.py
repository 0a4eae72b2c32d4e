"""How should a search's result be chosen on validation: by accuracy, KL divergence or NLL? A check that reads no
test data.

    python scripts/objective_study.py --models digits_cnn lenet5 resnet_mini --seeds 3

Runs a stochastic method as `scripts/benchmark.py` does (same problems, settings, seeds and evaluation counts)
with the `--search-objective` objective ("accuracy", the default when this study was first made) and keeps every
distinct assignment it evaluated (`selection_study.evaluated_assignments`). Each candidate's predictions on the
validation split are measured once per image. Then, for each of `SPLITS` random halvings of the validation split,
each rule chooses a candidate on one half and is scored by that candidate's accuracy on the other half:
- accuracy: the highest accuracy on the half (the first evaluated among ties), what `--objective accuracy` does;
- kl: the lowest mean KL divergence from the full-precision predictions on the half, what `--objective kl` does;
- nll: the lowest mean negative log-likelihood of the true labels on the half (tried, not a library objective:
  docs/BENCHMARKS.md, change 34);
- kl+train: the lowest mean KL divergence on the half and the first `--kl-train-samples` training inputs together,
  what `--objective kl` does with `ProblemSettings.kl_train_samples` (change 36). The studied searches measure their
  KL divergence on validation alone, so every rule chooses among the same candidates.
The held-out half plays the part of data the choice never saw, so the rule with the higher mean is the better
default without looking at the test split. The candidates are those of a search rewarded by the search objective;
a search rewarded by another explores differently, which this check does not measure. Rows are appended to `--out`
as each run finishes; an interrupted study resumes.
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

from cwhawq.data import Split
from cwhawq.evaluation import log_probs
from cwhawq.problem import Assignment, QuantProblem, build_problem
from cwhawq.progress import progress_bar
from cwhawq.settings import OBJECTIVES, ProblemSettings

#: The default objective of the searches whose candidates are studied (see the module docstring).
SEARCH_OBJECTIVE = "accuracy"
#: Random halvings of the validation split per run.
SPLITS = 200
RULES = ("accuracy", "kl", "nll", "kl+train")
#: (challenger, incumbent) pairs whose shares of better and worse held-out choices each row records.
DUELS = (("kl", "accuracy"), ("nll", "kl"), ("kl+train", "kl"))


def kl_per_input(reference: torch.Tensor, predicted: torch.Tensor) -> np.ndarray:
    """KL(reference || predicted) of each input's class distribution, both given as log probabilities."""
    return (reference.exp() * (reference - predicted)).sum(dim=1).numpy()


def _finite(values: Sequence[Any]) -> np.ndarray:
    """As float64, NaN (a prediction that is not finite) counting as infinitely far."""
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=np.inf)


def per_image(problem: QuantProblem, assignments: Sequence[Assignment]) -> dict[str, np.ndarray]:
    """(candidates x validation images) arrays per rule: whether each candidate classifies each image correctly
    ("accuracy", higher is better), the KL divergence of its prediction from the full-precision model's ("kl") and
    the negative log-likelihood of the true label ("nll"; both lower is better, not finite = infinite)."""
    reference = problem.fp_val_log_probs
    labels = problem.data.val.y
    correct, kl, nll = [], [], []
    for assignment in assignments:
        with problem.quantizer.quantized(assignment):
            predicted = log_probs(problem.model, problem.data.val)
        correct.append((predicted.argmax(dim=1) == labels).numpy())
        kl.append(kl_per_input(reference, predicted))
        nll.append(-predicted.gather(1, labels[:, None])[:, 0].numpy())
    return {"accuracy": np.asarray(correct, dtype=np.float64), "kl": _finite(kl), "nll": _finite(nll)}


def train_kl(problem: QuantProblem, assignments: Sequence[Assignment], samples: int) -> np.ndarray:
    """Per candidate, the summed KL divergence of its predictions from the full-precision model's on the first
    `samples` training inputs (not finite = infinite)."""
    train = problem.data.train
    inputs = Split(train.x[:samples], train.y[:samples])
    reference = log_probs(problem.model, inputs)
    sums = []
    for assignment in assignments:
        with problem.quantizer.quantized(assignment):
            predicted = log_probs(problem.model, inputs)
        sums.append(float(kl_per_input(reference, predicted).sum()))
    return _finite(sums)


def split_half(
    per_rule: dict[str, np.ndarray], train_sums: np.ndarray | None = None, train_count: int = 0,
    splits: int = SPLITS, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Mean accuracy on the held-out half of the candidate each rule in `per_rule` (`per_image`'s arrays) chooses on
    the other half, over `splits` random halvings, and for each of `DUELS` the shares of halvings where the
    challenger's choice is better or worse there than the incumbent's. Given `train_sums` (`train_kl` over
    `train_count` inputs), the "kl+train" rule chooses by the mean KL divergence on the half and those inputs."""
    rng = np.random.default_rng(seed)
    correct = per_rule["accuracy"]
    n_images = correct.shape[1]
    rules = [*per_rule, *(["kl+train"] if train_sums is not None else [])]
    held_out: dict[str, list[float]] = {rule: [] for rule in rules}
    for _ in range(splits):
        order = rng.permutation(n_images)
        choose, judge = order[: n_images // 2], order[n_images // 2 :]
        for rule in rules:
            if rule == "kl+train":
                means = (per_rule["kl"][:, choose].sum(axis=1) + train_sums) / (len(choose) + train_count)
            else:
                means = per_rule[rule][:, choose].mean(axis=1)
            pick = int(np.argmax(means) if rule == "accuracy" else np.argmin(means))
            held_out[rule].append(float(correct[pick, judge].mean()))
    result = {f"held_out_{rule}": float(np.mean(values)) for rule, values in held_out.items()}
    for challenger, incumbent in DUELS:
        if challenger in held_out and incumbent in held_out:
            a, b = np.asarray(held_out[challenger]), np.asarray(held_out[incumbent])
            result[f"{challenger}_better_share"] = float(np.mean(a > b))
            result[f"{challenger}_worse_share"] = float(np.mean(a < b))
    return result


def study(
    models: Sequence[str], budgets: Sequence[float], methods: Sequence[str], seeds: Sequence[int], episodes: int,
    out: Path, cache_dir: str | None = None, search_objective: str = SEARCH_OBJECTIVE,
    kl_train_samples: int = ProblemSettings.kl_train_samples,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (model, budget, method, seed), appended to `out`; runs already there are kept, not rerun.
    Rows of a study whose searches used another objective are refused rather than mixed in."""
    config = BenchmarkConfig(episodes=episodes)
    rows = load_rows(out)
    other = {r.get("search_objective", "accuracy") for r in rows} - {search_objective}
    if other:
        raise SystemExit(f"{out} holds a study of searches with objective {sorted(other)}; pass another --out")
    done = {(r["model"], r["budget"], r["method"], r["seed"]) for r in rows}
    jobs = [(m, b, method, s) for m in models for b in budgets for method in methods for s in seeds]
    wanted = set(jobs)
    problem, built = None, None
    for model, budget, method, seed in progress_bar(
        [job for job in jobs if job not in done], desc="objective study", unit="run"
    ):
        if built != (model, budget):
            settings = ProblemSettings(
                model=model, budget_bits=budget, cache_dir=cache_dir, objective=search_objective, kl_train_samples=0
            )
            problem, built = build_problem(settings, progress=False), (model, budget)
        candidates = [assignment for assignment, _ in evaluated_assignments(problem, method, seed, config)]
        samples = min(kl_train_samples, len(problem.data.train))
        held_out = split_half(per_image(problem, candidates), train_kl(problem, candidates, samples), samples)
        row = {"model": model, "budget": budget, "method": method, "seed": seed, "candidates": len(candidates),
               "search_objective": search_objective, "kl_train_samples": samples, **held_out}  # fmt: skip
        rows.append(row)
        save_rows(out, rows)
    return [row for row in rows if (row["model"], row["budget"], row["method"], row["seed"]) in wanted]


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """Means over seeds per model, budget and method, and over every row; "-" where rows predate a rule."""
    groups = runs_by_cell(rows)
    groups[("all", "", "")] = rows
    duels = [f"{a} better / worse than {b}" for a, b in DUELS]
    lines = [
        f"Command: `{command}`. Accuracy in % on the held-out half of validation of the candidate each rule chooses",
        f"on the other half (mean over {SPLITS} halvings and the seeds); {' and '.join(duels)} = shares",
        "of halvings where the first rule's choice has a higher / lower held-out accuracy than the second's. No test",
        "data.",
        "",
        "| model | budget | method | seeds | candidates | by accuracy | by kl | by nll | by kl+train | kl better "
        "| kl worse | nll better than kl | nll worse than kl | kl+train better than kl | kl+train worse than kl |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def percent(group: list[dict[str, Any]], key: str, template: str) -> str:
        """100 x the mean of `key` over `group` in `template`; "-" if a row predates it."""
        if not all(key in r for r in group):
            return "-"
        return template.format(100 * statistics.mean(r[key] for r in group))

    for (model, budget, method), group in groups.items():
        held_out = " | ".join(percent(group, f"held_out_{rule}", "{:.2f}") for rule in RULES)
        shares = " | ".join(
            percent(group, f"{a}_{side}_share", "{:.0f}%") for a, _ in DUELS for side in ("better", "worse")
        )
        candidates = statistics.mean(r["candidates"] for r in group)
        lines.append(f"| {model} | {budget} | {method} | {len(group)} | {candidates:.0f} | {held_out} | {shares} |")
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
    parser.add_argument(
        "--search-objective", choices=OBJECTIVES, default=SEARCH_OBJECTIVE, help="what the studied searches maximise"
    )
    parser.add_argument(
        "--kl-train-samples", type=int, default=ProblemSettings.kl_train_samples,
        help="training inputs the kl+train rule adds to the validation half",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = study(
        args.models, args.budgets, args.methods, range(args.seeds), args.episodes, args.out, args.cache_dir,
        args.search_objective, args.kl_train_samples,
    )  # fmt: skip
    print(markdown(rows, command_line("objective_study.py", argv)))
    return rows


if __name__ == "__main__":
    main()
