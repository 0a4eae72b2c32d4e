"""Study: how well the channel traces rank each layer's channels for the same time, with every Hessian probe over all
the trace batches ("all", the default) or over one batch in turn ("batch", `--trace-probe-data batch`).

For each model: a reference estimate (all batches, `--reference-probes` probes, another probe seed), then `--reps`
alternating runs of "all" with `--probes` probes and of "batch" with B x `--probes` probes (B trace batches: the
same number of batch passes). Per layer, the Spearman correlation of each estimate's channel order with the
reference's; per model, the median wall time of each. Traces are not cached here.

    python scripts/trace_sampling_study.py            # digits_cnn, lenet5, resnet_mini (about 15 min on one core)
    python scripts/trace_sampling_study.py --quick    # digits_cnn, few probes: a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cwhawq.data import batches  # noqa: E402
from cwhawq.hessian import ChannelTraces, channel_traces  # noqa: E402
from cwhawq.problem import build_problem  # noqa: E402
from cwhawq.settings import ProblemSettings, TraceSettings  # noqa: E402

REFERENCE_SEED = 12345


def rank_agreement(estimate: ChannelTraces, reference: ChannelTraces) -> dict[str, float]:
    """Spearman correlation of each layer's channel traces with the reference's (layers of 3 or more channels)."""
    return {
        name: float(spearmanr(values, reference.traces[name]).correlation)
        for name, values in estimate.traces.items()
        if len(values) > 2
    }


def study_model(model_name: str, probes: int, reference_probes: int, reps: int, cache_dir: str | None) -> str:
    """The Markdown rows of one model: per layer the two correlations, then the median times."""
    # Every probe counted (no early stop), so the problem's own (cached) traces are exactly the "all" estimate.
    trace_settings = TraceSettings(max_probes=probes, tol=0.0, reliability=0.0)
    problem = build_problem(
        ProblemSettings(model=model_name, cache_dir=cache_dir, traces=trace_settings), progress=False
    )
    data = batches(problem.data.train, trace_settings.batch_size, trace_settings.num_batches)
    common = {"tol": trace_settings.tol, "reliability": trace_settings.reliability, "progress": False}
    reference = channel_traces(
        problem.model, problem.layers, data, max_probes=reference_probes, seed=REFERENCE_SEED, **common
    )
    runs = {"all": probes, "batch": len(data) * probes}
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    agreement: dict[str, dict[str, float]] = {}
    for rep in range(reps):
        for mode in runs if rep % 2 == 0 else reversed(runs):
            start = time.perf_counter()
            estimate = channel_traces(
                problem.model, problem.layers, data, max_probes=runs[mode], probe_data=mode, **common
            )
            times[mode].append(time.perf_counter() - start)
            agreement[mode] = rank_agreement(estimate, reference)  # the same in every repetition (same seed)
    lines = [
        f"| {model_name} | {name} | {len(reference.traces[name])} | {agreement['all'][name]:.2f} | "
        f"{agreement['batch'][name]:.2f} |"
        for name in agreement["all"]
    ]
    means = {mode: np.mean(list(values.values())) for mode, values in agreement.items()}
    lines.append(
        f"| {model_name} | mean | | {means['all']:.2f} | {means['batch']:.2f} |\n"
        f"| {model_name} | time (s) | | {statistics.median(times['all']):.1f} | "
        f"{statistics.median(times['batch']):.1f} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "lenet5", "resnet_mini"])
    parser.add_argument("--probes", type=int, default=TraceSettings.max_probes, help="probes over all batches")
    parser.add_argument("--reference-probes", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each mode (median)")
    parser.add_argument("--cache-dir", help="cache for built-in models")
    parser.add_argument("--quick", action="store_true", help="digits_cnn, 10 and 40 probes, reference 40")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.probes, args.reference_probes, args.reps = ["digits_cnn"], 10, 40, 1
    torch.set_num_threads(1)
    header = (
        f"Spearman correlation of each layer's channel order with a {args.reference_probes}-probe reference (other "
        f"seed); 'all': {args.probes} probes over all trace batches, 'batch': the trace batches' number times as many "
        "over one batch each (the same batch passes); time: median wall seconds of "
        f"{args.reps} runs, one thread.\n\n| model | layer | channels | all | batch |\n|---|---|---:|---:|---:|"
    )
    rows = [study_model(model, args.probes, args.reference_probes, args.reps, args.cache_dir) for model in args.models]
    table = "\n".join([header, *rows])
    print(table)
    return table


if __name__ == "__main__":
    main()
