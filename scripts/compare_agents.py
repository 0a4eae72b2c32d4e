"""Tables of the agent and fine-tune variants in docs/BENCHMARKS.md ("Agent changes"), from the raw rows.

    python scripts/compare_agents.py

Each variant is a `results.jsonl` written by `scripts/benchmark.py` (see VARIANTS for the command of each); the
table shows the channel-wise DDPG's test accuracy (mean ± std over seeds) per model and budget, with random
search and the best deterministic baseline of the main benchmark beside it.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmark import DETERMINISTIC_METHODS, evaluations_to_reach, load_rows

#: The last commit whose warm start started from the best baseline as it is, not from the best replay of the
#: baselines (change 17); variants measured before that change name it, since a rerun now gives other rows.
START_AS_IS = "git checkout ca4e727 && "
#: The last commit whose zero-shot reuse played the policy's rollout only, without the rollout fitted to the budget
#: (change 18); transfer rows measured before that change name it.
UNFITTED = "git checkout b4b6322 && "

#: The last commit whose default objective was "accuracy" (change 22 made it "kl"); transfer rows measured before
#: then name it, since `benchmark_transfer.py` has no objective option.
ACCURACY_DEFAULT = "git checkout f80eb31 && "
#: Searches with the accuracy objective: the main benchmark's stochastic rows before change 22.
ACCURACY_COMMAND = (
    "python scripts/benchmark.py --objective accuracy --methods random ddpg-layer ddpg-channel --seeds 5"
    " --noise-layers 0 --out docs/benchmark/objective_accuracy"
)
#: The transfer benchmark (policy trained on digits_cnn) with the default "kl" objective (change 22), noise on every
#: layer (before change 25).
TRANSFER_KL_COMMAND = (
    "python scripts/benchmark_transfer.py --noise-layers 0 --work runs/transfer_kl"
    " (rows moved to docs/benchmark/noise_layers_0/transfer.jsonl)"
)
#: The main benchmark before change 25 (its rows kept in docs/benchmark/noise_layers_0).
NOISE_EVERY_LAYER_COMMAND = (
    "python scripts/benchmark.py --seeds 5 --noise-layers 0 (rows moved to docs/benchmark/noise_layers_0)"
)
#: The transfer benchmark with today's defaults (noise on two layers per episode, change 25).
TRANSFER_COMMAND = "python scripts/benchmark_transfer.py --work runs/transfer_sparse"
#: The searches that choose by KL divergence from the full-precision predictions (change 20).
KL_COMMAND = (
    "python scripts/benchmark.py --objective kl --models digits_cnn lenet5 resnet_mini"
    " --methods random ddpg-layer ddpg-channel --seeds 5 --noise-layers 0 --out docs/benchmark/objective_kl"
)

#: name -> (raw rows, command that produced them, method rows to take)
VARIANTS: dict[str, tuple[str, str, str]] = {
    "shares, no warm start (HAQ's random warm-up)": (
        "docs/benchmark/no_warm_start/results.jsonl",
        "python scripts/benchmark.py --objective accuracy --methods ddpg-channel --warm-start none --action shares"
        " --noise-layers 0 --out docs/benchmark/no_warm_start",
        "ddpg-channel",
    ),
    "shares, warm start: greedy-channel": (
        "docs/benchmark/greedy_warm_start/results.jsonl",
        "python scripts/benchmark.py --objective accuracy --methods ddpg-channel --warm-start greedy-channel"
        " --action shares --noise-layers 0 --out docs/benchmark/greedy_warm_start (the rows were measured at commit"
        " 19195df)",
        "ddpg-channel",
    ),
    "shares, warm start: best baseline": (
        "docs/benchmark/shares_action/results.jsonl",
        f"{START_AS_IS}python scripts/benchmark.py --methods ddpg-channel random --action shares"
        " --out docs/benchmark/shares_action",
        "ddpg-channel",
    ),
    "level, warm start: best baseline": (
        "docs/benchmark/no_imitation/results.jsonl",
        "git checkout f64bdd3 && python scripts/benchmark.py --methods ddpg-channel ddpg-layer"
        " --out docs/benchmark/no_imitation",
        "ddpg-channel",
    ),
    "level, best start as is, self-imitation": (
        "docs/benchmark/start_as_is/results.jsonl",
        f"{START_AS_IS}python scripts/benchmark.py --seeds 5"
        " (its ddpg-channel rows, moved to docs/benchmark/start_as_is)",
        "ddpg-channel",
    ),
    "level, best replayed start, self-imitation (objective accuracy)": (
        "docs/benchmark/objective_accuracy/results.jsonl",
        ACCURACY_COMMAND,
        "ddpg-channel",
    ),
    "random search, shares": (
        "docs/benchmark/shares_action/results.jsonl",
        "python scripts/benchmark.py --objective accuracy --methods ddpg-channel random --action shares"
        " --noise-layers 0 --out docs/benchmark/shares_action",
        "random",
    ),
    "random search, level": ("docs/benchmark/objective_accuracy/results.jsonl", ACCURACY_COMMAND, "random"),
    "level, 4 updates per step": (
        "docs/benchmark/updates_per_step_4/results.jsonl",
        f"{START_AS_IS}python scripts/benchmark.py --methods ddpg-channel --models resnet_mini --updates-per-step 4"
        " --out docs/benchmark/updates_per_step_4, then the same with --models lenet5 --budgets 2.25 2.5",
        "ddpg-channel",
    ),
    "offset from the greedy": (
        "docs/benchmark/offset_action/results.jsonl",
        "git checkout e623969 && python scripts/benchmark.py --methods ddpg-channel --models lenet5 resnet_mini"
        " --budgets 2.25 --action offset --out docs/benchmark/offset_action",
        "ddpg-channel",
    ),
    "noise restart after 50 episodes without a new best": (
        "docs/benchmark/noise_restart_50/results.jsonl",
        "git checkout b3b86ee && python scripts/benchmark.py --methods ddpg-channel --models resnet_mini"
        " --budgets 2.5 3.0 --noise-restart-patience 50 --out docs/benchmark/noise_restart_50",
        "ddpg-channel",
    ),
    "half the episodes snapped to layer-wise": (
        "docs/benchmark/snap_share_0.5/results.jsonl",
        "git checkout b3b86ee && python scripts/benchmark.py --methods ddpg-channel --models resnet_mini"
        " --budgets 3.0 --snap-share 0.5 --out docs/benchmark/snap_share_0.5,"
        " then the same with --models lenet5 --budgets 2.25",
        "ddpg-channel",
    ),
    "coarse to fine, a third of the episodes layer-wise": (
        "docs/benchmark/coarse_share_0.33/results.jsonl",
        f"{START_AS_IS}python scripts/benchmark.py --methods ddpg-channel --coarse-share 0.33"
        " --out docs/benchmark/coarse_share_0.33",
        "ddpg-channel",
    ),
    "coarse to fine, 15% of the episodes layer-wise": (
        "docs/benchmark/coarse_share_0.15/results.jsonl",
        f"{START_AS_IS}python scripts/benchmark.py --methods ddpg-channel --coarse-share 0.15"
        " --models resnet_mini lenet5"
        " --out docs/benchmark/coarse_share_0.15, then the same with --models resnet_mini --seeds 5",
        "ddpg-channel",
    ),
    "coarse to fine, 15% layer-wise, replayed start": (
        "docs/benchmark/coarse_share_0.15_replayed_start/results.jsonl",
        "python scripts/benchmark.py --objective accuracy --methods ddpg-channel --coarse-share 0.15"
        " --models resnet_mini --seeds 5 --noise-layers 0 --out docs/benchmark/coarse_share_0.15_replayed_start",
        "ddpg-channel",
    ),
    "observation v2, start as is": (
        "docs/benchmark/observation_v2/results.jsonl",
        f"{START_AS_IS}python scripts/benchmark.py --methods ddpg-channel --observation v2"
        " --out docs/benchmark/observation_v2",
        "ddpg-channel",
    ),
    "layer-wise DDPG (objective accuracy)": (
        "docs/benchmark/objective_accuracy/results.jsonl",
        ACCURACY_COMMAND,
        "ddpg-layer",
    ),
    "objective kl": ("docs/benchmark/objective_kl/results.jsonl", KL_COMMAND, "ddpg-channel"),
    "layer-wise DDPG, objective kl": ("docs/benchmark/objective_kl/results.jsonl", KL_COMMAND, "ddpg-layer"),
    "random search, objective kl": ("docs/benchmark/objective_kl/results.jsonl", KL_COMMAND, "random"),
}

DISTILLED_COMMAND = (
    f"{START_AS_IS}python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini --targets"
    " digits_cnn lenet5 resnet_mini --out docs/benchmark/transfer_distilled --reference docs/benchmark/results.jsonl"
    " --work runs/distilled --markdown docs/BENCHMARKS.md --section transfer-distilled"
)
DISTILLED_V2_COMMAND = (
    f"{ACCURACY_DEFAULT}python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini --targets"
    " digits_cnn lenet5 resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_v2"
    " --reference docs/benchmark/results.jsonl --work runs/distilled_v2 --markdown docs/BENCHMARKS.md"
    " --section transfer-distilled (rows moved to docs/benchmark/transfer_distilled_v2/objective_accuracy.jsonl)"
)
#: Measured before change 25: noise on every layer, and the main benchmark's rows of then as the reference.
BEFORE_SPARSE_NOISE = " --noise-layers 0 --reference docs/benchmark/noise_layers_0/results.jsonl"
DISTILLED_V2_KL_COMMAND = (
    "python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini --targets digits_cnn lenet5"
    f" resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_v2{BEFORE_SPARSE_NOISE}"
    " --work runs/distilled_v2_kl --markdown docs/BENCHMARKS.md --section transfer-distilled (rows moved to"
    " docs/benchmark/transfer_distilled_v2/noise_layers_0.jsonl)"
)
DISTILLED_V2_SPARSE_COMMAND = (
    "python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini --targets digits_cnn lenet5"
    " resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_v2 --reference docs/benchmark/results.jsonl"
    " --work runs/distilled_v2_sparse --markdown docs/BENCHMARKS.md --section transfer-distilled"
)
DISTILLED_5_MODELS_COMMAND = (
    "python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini mlp1d cnn1d --targets"
    f" digits_cnn lenet5 resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_5models"
    f"{BEFORE_SPARSE_NOISE} --work runs/distilled_5models --markdown docs/BENCHMARKS.md"
    " --section transfer-distilled-5models (rows moved to"
    " docs/benchmark/transfer_distilled_5models/noise_layers_0.jsonl)"
)
DISTILLED_5_MODELS_SPARSE_COMMAND = (
    "python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini mlp1d cnn1d --targets"
    " digits_cnn lenet5 resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_5models"
    " --reference docs/benchmark/results.jsonl --work runs/distilled_5models_sparse --markdown docs/BENCHMARKS.md"
    " --section transfer-distilled-5models"
)
DISTILLED_V2_UNFITTED_COMMAND = (
    f"{UNFITTED}python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini --targets"
    " digits_cnn lenet5 resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_v2"
    " --reference docs/benchmark/results.jsonl --work runs/distilled_v2 (rows moved to"
    " docs/benchmark/transfer_distilled_v2_unfitted)"
)
DISTILLED_V2_AS_IS_COMMAND = (
    f"{START_AS_IS}python scripts/benchmark_transfer.py --distill-from digits_cnn lenet5 resnet_mini --targets"
    " digits_cnn lenet5 resnet_mini --observation v2 --out docs/benchmark/transfer_distilled_v2"
    " --reference docs/benchmark/results.jsonl --work runs/distilled_v2 (rows moved to"
    " docs/benchmark/transfer_distilled_v2_start_as_is)"
)

#: Fine-tune variants of the transfer benchmark (policy-finetune rows), same layout.
FINE_TUNE_VARIANTS: dict[str, tuple[str, str, str]] = {
    "shares, fine-tune, no floor": (
        "docs/benchmark/transfer_without_floor.jsonl",
        "git checkout f2d5fb1 && python scripts/benchmark_transfer.py (before a fine-tune evaluated any baseline)",
        "policy-finetune",
    ),
    "shares, fine-tune + greedy floor": (
        "docs/benchmark/transfer_greedy_floor.jsonl",
        "git checkout 8596748 && python scripts/benchmark_transfer.py (greedy-channel warm start and floor)",
        "policy-finetune",
    ),
    "shares, fine-tune + best-baseline floor": (
        "docs/benchmark/shares_action/transfer.jsonl",
        "git checkout e5ca9d5 && python scripts/benchmark_transfer.py (before the level action)",
        "policy-finetune",
    ),
    "level, fine-tune + floor, exploring from the policy": (
        "docs/benchmark/transfer_level_policy_start.jsonl",
        "git checkout e32f4b4 && python scripts/benchmark_transfer.py (no clone of the best start, no warm-up)",
        "policy-finetune",
    ),
    "level, fine-tune from the best start": (
        "docs/benchmark/transfer_no_imitation.jsonl",
        "git checkout f64bdd3 && python scripts/benchmark_transfer.py",
        "policy-finetune",
    ),
    "level, fine-tune from the best start, self-imitation, source critic": (
        "docs/benchmark/transfer_source_critic.jsonl",
        "git checkout aa58290 && python scripts/benchmark_transfer.py",
        "policy-finetune",
    ),
    "level, fine-tune, self-imitation, new critic, start as is": (
        "docs/benchmark/transfer_start_as_is.jsonl",
        f"{START_AS_IS}python scripts/benchmark_transfer.py (rows moved to docs/benchmark/transfer_start_as_is.jsonl)",
        "policy-finetune",
    ),
    "level, fine-tune, replayed start, rollout only": (
        "docs/benchmark/transfer_unfitted.jsonl",
        f"{UNFITTED}python scripts/benchmark_transfer.py (rows moved to docs/benchmark/transfer_unfitted.jsonl)",
        "policy-finetune",
    ),
    "level, fine-tune, replayed start, rollout or fitted to the budget (objective accuracy)": (
        "docs/benchmark/objective_accuracy/transfer.jsonl",
        f"{ACCURACY_DEFAULT}python scripts/benchmark_transfer.py (rows moved to docs/benchmark/objective_accuracy)",
        "policy-finetune",
    ),
    "level, fine-tune, objective kl, noise on every layer": (
        "docs/benchmark/noise_layers_0/transfer.jsonl",
        TRANSFER_KL_COMMAND,
        "policy-finetune",
    ),
    "level, fine-tune, noise on two layers per episode (default)": (
        "docs/benchmark/transfer.jsonl",
        TRANSFER_COMMAND,
        "policy-finetune",
    ),
    "distilled from the two other models, fine-tune, start as is": (
        "docs/benchmark/transfer_distilled/transfer.jsonl",
        DISTILLED_COMMAND,
        "policy-finetune",
    ),
    "distilled, observation v2, fine-tune, start as is": (
        "docs/benchmark/transfer_distilled_v2_start_as_is/transfer.jsonl",
        DISTILLED_V2_AS_IS_COMMAND,
        "policy-finetune",
    ),
    "distilled, observation v2, fine-tune, replayed start, rollout only": (
        "docs/benchmark/transfer_distilled_v2_unfitted/transfer.jsonl",
        DISTILLED_V2_UNFITTED_COMMAND,
        "policy-finetune",
    ),
    "distilled, observation v2, fine-tune, replayed start, rollout or fitted (objective accuracy)": (
        "docs/benchmark/transfer_distilled_v2/objective_accuracy.jsonl",
        DISTILLED_V2_COMMAND,
        "policy-finetune",
    ),
    "distilled, observation v2, fine-tune, objective kl, noise on every layer": (
        "docs/benchmark/transfer_distilled_v2/noise_layers_0.jsonl",
        DISTILLED_V2_KL_COMMAND,
        "policy-finetune",
    ),
    "distilled, observation v2, fine-tune, noise on two layers per episode (default)": (
        "docs/benchmark/transfer_distilled_v2/transfer.jsonl",
        DISTILLED_V2_SPARSE_COMMAND,
        "policy-finetune",
    ),
    "distilled from four models (mlp1d, cnn1d added), fine-tune, noise on every layer": (
        "docs/benchmark/transfer_distilled_5models/noise_layers_0.jsonl",
        DISTILLED_5_MODELS_COMMAND,
        "policy-finetune",
    ),
    "distilled from four models, fine-tune, noise on two layers per episode (default)": (
        "docs/benchmark/transfer_distilled_5models/transfer.jsonl",
        DISTILLED_5_MODELS_SPARSE_COMMAND,
        "policy-finetune",
    ),
    "offset from the greedy, fine-tune": (
        "docs/benchmark/offset_action/transfer.jsonl",
        "git checkout e623969 && python scripts/benchmark_transfer.py --action offset"
        " --out docs/benchmark/offset_action --reference docs/benchmark/results.jsonl",
        "policy-finetune",
    ),
    "shares, zero-shot": (
        "docs/benchmark/shares_action/transfer.jsonl",
        "git checkout e5ca9d5 && python scripts/benchmark_transfer.py (before the level action)",
        "policy-zero-shot",
    ),
    "level, zero-shot": (
        "docs/benchmark/transfer_no_imitation.jsonl",
        "git checkout f64bdd3 && python scripts/benchmark_transfer.py",
        "policy-zero-shot",
    ),
    "level, self-imitation, zero-shot, start as is": (
        "docs/benchmark/transfer_start_as_is.jsonl",
        f"{START_AS_IS}python scripts/benchmark_transfer.py (rows moved to docs/benchmark/transfer_start_as_is.jsonl)",
        "policy-zero-shot",
    ),
    "level, zero-shot, replayed start, rollout only": (
        "docs/benchmark/transfer_unfitted.jsonl",
        f"{UNFITTED}python scripts/benchmark_transfer.py (rows moved to docs/benchmark/transfer_unfitted.jsonl)",
        "policy-zero-shot",
    ),
    "level, zero-shot, replayed start, rollout or fitted to the budget (objective accuracy)": (
        "docs/benchmark/objective_accuracy/transfer.jsonl",
        f"{ACCURACY_DEFAULT}python scripts/benchmark_transfer.py (rows moved to docs/benchmark/objective_accuracy)",
        "policy-zero-shot",
    ),
    "level, zero-shot, objective kl, noise on every layer": (
        "docs/benchmark/noise_layers_0/transfer.jsonl",
        TRANSFER_KL_COMMAND,
        "policy-zero-shot",
    ),
    "level, zero-shot, noise on two layers per episode (default)": (
        "docs/benchmark/transfer.jsonl",
        TRANSFER_COMMAND,
        "policy-zero-shot",
    ),
    "distilled from the two other models, zero-shot, start as is": (
        "docs/benchmark/transfer_distilled/transfer.jsonl",
        DISTILLED_COMMAND,
        "policy-zero-shot",
    ),
    "distilled, observation v2, zero-shot, start as is": (
        "docs/benchmark/transfer_distilled_v2_start_as_is/transfer.jsonl",
        DISTILLED_V2_AS_IS_COMMAND,
        "policy-zero-shot",
    ),
    "distilled, observation v2, zero-shot, replayed start, rollout only": (
        "docs/benchmark/transfer_distilled_v2_unfitted/transfer.jsonl",
        DISTILLED_V2_UNFITTED_COMMAND,
        "policy-zero-shot",
    ),
    "distilled, observation v2, zero-shot, replayed start, rollout or fitted (objective accuracy)": (
        "docs/benchmark/transfer_distilled_v2/objective_accuracy.jsonl",
        DISTILLED_V2_COMMAND,
        "policy-zero-shot",
    ),
    "distilled, observation v2, zero-shot, objective kl, noise on every layer": (
        "docs/benchmark/transfer_distilled_v2/noise_layers_0.jsonl",
        DISTILLED_V2_KL_COMMAND,
        "policy-zero-shot",
    ),
    "distilled, observation v2, zero-shot, noise on two layers per episode (default)": (
        "docs/benchmark/transfer_distilled_v2/transfer.jsonl",
        DISTILLED_V2_SPARSE_COMMAND,
        "policy-zero-shot",
    ),
    "distilled from four models (mlp1d, cnn1d added), zero-shot, noise on every layer": (
        "docs/benchmark/transfer_distilled_5models/noise_layers_0.jsonl",
        DISTILLED_5_MODELS_COMMAND,
        "policy-zero-shot",
    ),
    "distilled from four models, zero-shot, noise on two layers per episode (default)": (
        "docs/benchmark/transfer_distilled_5models/transfer.jsonl",
        DISTILLED_5_MODELS_SPARSE_COMMAND,
        "policy-zero-shot",
    ),
    "offset from the greedy, zero-shot": (
        "docs/benchmark/offset_action/transfer.jsonl",
        "git checkout e623969 && python scripts/benchmark_transfer.py --action offset"
        " --out docs/benchmark/offset_action --reference docs/benchmark/results.jsonl",
        "policy-zero-shot",
    ),
    "from scratch (300 evals, replayed start, objective accuracy)": (
        "docs/benchmark/objective_accuracy/results.jsonl",
        ACCURACY_COMMAND,
        "ddpg-channel",
    ),
    "from scratch (300 evals, objective kl, noise on every layer)": (
        "docs/benchmark/noise_layers_0/results.jsonl",
        NOISE_EVERY_LAYER_COMMAND,
        "ddpg-channel",
    ),
    "from scratch (300 evals, default)": (
        "docs/benchmark/results.jsonl",
        "python scripts/benchmark.py --seeds 5",
        "ddpg-channel",
    ),
}

#: Search variants under the "kl" objective, five seeds, compared on validation only (`search_table`).
KL_SEARCH_VARIANTS: dict[str, tuple[str, str]] = {
    "noise on every layer (before change 25)": (
        "docs/benchmark/noise_layers_0/results.jsonl",
        NOISE_EVERY_LAYER_COMMAND,
    ),
    "no noise decay": (
        "docs/benchmark/noise_decay_1_kl/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --models lenet5 --seeds 5 --noise-decay 1.0"
        " --noise-layers 0 --out docs/benchmark/noise_decay_1_kl",
    ),
    "half the episodes after warm-up uniform random": (
        "docs/benchmark/random_share_0.5/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --models digits_cnn lenet5 resnet_mini --seeds 5"
        " --random-share 0.5 --noise-layers 0 --out docs/benchmark/random_share_0.5",
    ),
    "noise on one layer per episode": (
        "docs/benchmark/noise_layers_1/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --models digits_cnn lenet5 resnet_mini --seeds 5"
        " --noise-layers 1 --out docs/benchmark/noise_layers_1",
    ),
    "noise on two layers per episode (default since change 25)": (
        "docs/benchmark/results.jsonl",
        "python scripts/benchmark.py --seeds 5 (the same rows as --methods ddpg-channel --noise-layers 2"
        " --out docs/benchmark/noise_layers_2)",
    ),
    "noise on two layers, decay 0.995": (
        "docs/benchmark/noise_layers_2_decay_0.995/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --models digits_cnn lenet5 resnet_mini --seeds 5"
        " --noise-decay 0.995 --out docs/benchmark/noise_layers_2_decay_0.995",
    ),
    "noise on about the square root of the layers (3 on LeNet-5, 4 on ResNet-mini)": (
        "docs/benchmark/noise_layers_sqrt/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --models lenet5 --seeds 5 --noise-layers 3"
        " --out docs/benchmark/noise_layers_sqrt, then the same with --models resnet_mini --noise-layers 4",
    ),
    "noise on two layers, sigma 1.0": (
        "docs/benchmark/noise_layers_2_sigma_1.0/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --models digits_cnn lenet5 resnet_mini --seeds 5"
        " --noise-sigma 1.0 --out docs/benchmark/noise_layers_2_sigma_1.0",
    ),
    "noise on a geometric number of layers, two on average": (
        "docs/benchmark/noise_layers_geometric/results.jsonl",
        "python scripts/benchmark.py --methods ddpg-channel --seeds 5 --noise-layers-law geometric"
        " --out docs/benchmark/noise_layers_geometric",
    ),
}

#: Every variant was run with these seeds; the main benchmark's rows (which have more) are restricted to them too,
#: so that every column averages the same seeds.
SEEDS = (0, 1, 2)


def cell(rows: list[dict], model: str, budget: float, method: str) -> str:
    """'mean ± std' of test accuracy in %, or '-'."""
    tests = [
        100 * r["test_accuracy"]
        for r in rows
        if (r["model"], r["budget"], r["method"]) == (model, budget, method) and r["seed"] in SEEDS
    ]
    if not tests:
        return "-"
    return f"{statistics.mean(tests):.2f} ± {statistics.stdev(tests) if len(tests) > 1 else 0.0:.2f}"


def variant_table(variants: dict[str, tuple[str, str, str]], root: Path) -> str:
    """One row per model and budget found in the first variant's rows, one column per variant."""
    loaded = {name: (load_rows(root / path), method) for name, (path, _, method) in variants.items()}
    first_rows, first_method = next(iter(loaded.values()))
    keys = sorted({(r["model"], r["budget"]) for r in first_rows if r["method"] == first_method})
    lines = ["| model | budget | " + " | ".join(variants) + " |", "|---" * (len(variants) + 2) + "|"]
    for model, budget in keys:
        cells = [cell(rows, model, budget, method) for rows, method in loaded.values()]
        lines.append(f"| {model} | {budget} | " + " | ".join(cells) + " |")
    lines += ["", "Commands:"] + [f"- {name}: `{command}`" for name, (_, command, _) in variants.items()]
    return "\n".join(lines)


def search_cell(rows: list[dict], random: dict[tuple, list[float]], model: str, budget: float) -> str:
    """'mean best score (reached/runs)': the channel-wise DDPG runs' mean best validation score, and how many reach
    the same seed's random-search best within half of random search's evaluations; '-' without runs."""
    runs = [r for r in rows if (r["model"], r["budget"], r["method"]) == (model, budget, "ddpg-channel")]
    if not runs:
        return "-"
    fast = 0
    for run in runs:
        reference = random[(model, budget, run["seed"])]
        reached = evaluations_to_reach(run["curve"], max(reference))
        fast += reached is not None and reached <= len(reference) / 2
    return f"{statistics.mean(max(r['curve']) for r in runs):.4f} ({fast}/{len(runs)})"


def search_table(variants: dict[str, tuple[str, str]], root: Path) -> str:
    """One row per model and budget of the main benchmark, one column per variant (`search_cell`)."""
    main_rows = load_rows(root / "docs/benchmark/results.jsonl")
    random = {(r["model"], r["budget"], r["seed"]): r["curve"] for r in main_rows if r["method"] == "random"}
    loaded = {name: load_rows(root / path) for name, (path, _) in variants.items()}
    keys = sorted({(model, budget) for model, budget, _ in random})
    lines = [
        'Search variants with the "kl" objective, five seeds, on validation only: the channel-wise DDPG\'s mean best',
        "score (minus the KL divergence) and, in brackets, its runs that reach the same seed's random-search best",
        "within half of random search's evaluations (changes 23-29):",
        "",
        "| model | budget | " + " | ".join(variants) + " |",
        "|---" * (len(variants) + 2) + "|",
    ]
    for model, budget in keys:
        cells = [search_cell(rows, random, model, budget) for rows in loaded.values()]
        lines.append(f"| {model} | {budget} | " + " | ".join(cells) + " |")
    lines += ["", "Commands:"] + [f"- {name}: `{command}`" for name, (_, command) in variants.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    """Print (and return) the Markdown tables: agent variants (with the best baseline), fine-tune variants, and
    search variants under "kl" on validation."""
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    agents = variant_table(VARIANTS, root)
    main_rows = load_rows(root / "docs/benchmark/results.jsonl")
    best_lines = ["", "Best deterministic baseline on validation, test accuracy:", ""]
    for model, budget in sorted({(r["model"], r["budget"]) for r in main_rows}):
        here = [
            r
            for r in main_rows
            if (r["model"], r["budget"]) == (model, budget) and r["method"] in DETERMINISTIC_METHODS
        ]
        best = max(here, key=lambda r: r["val_accuracy"])
        best_lines.append(f"- {model} {budget}: {100 * best['test_accuracy']:.2f} ({best['method']})")
    searches = search_table(KL_SEARCH_VARIANTS, root)
    text = "\n".join([agents, *best_lines, "", variant_table(FINE_TUNE_VARIANTS, root), "", searches])
    print(text)
    return text


if __name__ == "__main__":
    main()
