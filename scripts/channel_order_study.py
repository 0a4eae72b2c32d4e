"""Which channels of a layer should get its higher width? The channel baselines' counts placed by each channel order.

    python scripts/channel_order_study.py --models digits_cnn lenet5 resnet_mini

A search's environment turns each layer's action into channel counts per width and hands the widths out in a
channel order (`ProblemSettings.channel_order`). To compare the orders on the same counts, each channel-wise
baseline is evaluated as it is (its own placement) and replayed in the environment under every order (its counts
per width, which the level action splits over two neighbouring widths, as a warm start replays it). Validation
only: accuracy in % and the mean KL divergence from the full-precision predictions (the default objective). No
search, no seeds: every figure is deterministic.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from benchmark import command_line

from agents.rollout import outcome, play_actions
from cwhawq.baselines import run_method
from cwhawq.problem import build_problem
from cwhawq.progress import progress_bar
from cwhawq.settings import CHANNEL_ORDERS, ProblemSettings
from envs.channel_bits_env import ChannelBitsEnv

#: The baselines that choose bits per channel, so that their counts can be placed in another order.
CHANNEL_METHODS = ("greedy-channel", "ilp-channel")


def study(
    models: Sequence[str], budgets: Sequence[float], methods: Sequence[str], cache_dir: str | None = None
) -> list[dict[str, Any]]:
    """One row per (model, budget, method): validation accuracy and KL as is and replayed in each channel order."""
    rows = []
    for model, budget in progress_bar([(m, b) for m in models for b in budgets], desc="channel orders", unit="cell"):
        problem = build_problem(ProblemSettings(model=model, budget_bits=budget, cache_dir=cache_dir), progress=False)
        envs = {order: ChannelBitsEnv(dataclasses.replace(problem, channel_order=order)) for order in CHANNEL_ORDERS}
        for method in methods:
            assignment = run_method(problem, method)
            as_is = problem.validate(assignment, count=False)
            row = {"model": model, "budget": budget, "method": method, "as_is": (as_is.accuracy, as_is.kl)}
            for order, env in envs.items():
                info, _ = outcome(play_actions(env, env.actions_for(assignment)))
                row[order] = (info["val_accuracy"], info["val_kl"])
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """A table: validation accuracy (KL divergence) per placement."""
    columns = ("as_is", *CHANNEL_ORDERS)
    lines = [
        f"Command: `{command}`. Validation accuracy in % (mean KL divergence from the full-precision predictions) of",
        "each channel baseline as it places its bits, and of its counts replayed in each channel order.",
        "",
        "| model | budget | method | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|---|---|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        cells = " | ".join(f"{100 * row[c][0]:.1f} ({row[c][1]:.4f})" for c in columns)
        lines.append(f"| {row['model']} | {row['budget']} | {row['method']} | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, evaluate, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="digits_cnn at 2.5 bits, the greedy only")
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "lenet5", "resnet_mini"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.25, 2.5, 3.0])
    parser.add_argument("--methods", nargs="+", default=list(CHANNEL_METHODS), choices=CHANNEL_METHODS)
    parser.add_argument("--cache-dir", help="cache for built-in models and traces")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.budgets, args.methods = ["digits_cnn"], [2.5], ["greedy-channel"]
    torch.set_num_threads(1)
    rows = study(args.models, args.budgets, args.methods, args.cache_dir)
    print(markdown(rows, command_line("channel_order_study.py", argv)))
    return rows


if __name__ == "__main__":
    main()
