"""Benchmark: time of channel-wise vs whole-model Hutchinson traces for the same number of probes.

Both modes run exactly ``--probes`` probes (convergence disabled with tol=0), interleaved over ``--reps``
repetitions with alternating order; the table reports the median time of each and their ratio (target <= 1.1).

    python scripts/bench_traces.py            # digits-size CNN and a larger 28x28 CNN
    python scripts/bench_traces.py --quick    # small CNN only, few probes: a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from cwhawq.hessian import channel_traces
from cwhawq.layers import LayerInfo, discover_layers
from cwhawq.models import build_builtin


def digits_cnn() -> nn.Module:
    """The built-in small CNN for scikit-learn digits (1x8x8 inputs)."""
    return build_builtin("digits_cnn", num_classes=10, input_shape=(1, 8, 8))


def larger_cnn() -> nn.Module:
    """A wider CNN for 1x28x28 inputs (~440k weights), to see the ratio when Hv products dominate."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


# name -> (builder, per-sample input shape, default batches, default batch size); the larger model gets fewer
# samples so that one probe stays well under a second on 2 CPU cores.
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, int]] = {
    "digits_cnn": (digits_cnn, (1, 8, 8), 4, 128),
    "larger_cnn": (larger_cnn, (1, 28, 28), 2, 32),
}


def random_batches(shape: tuple[int, ...], n_batches: int, batch_size: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Random inputs and labels: timing does not depend on the data's values."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand((batch_size, *shape), generator=generator), torch.randint(10, (batch_size,), generator=generator))
        for _ in range(n_batches)
    ]


def time_mode(
    model: nn.Module, layers: list[LayerInfo], batches: list[tuple[Tensor, Tensor]], probes: int, per_channel: bool
) -> tuple[float, float]:
    """Wall-clock and process CPU seconds for one trace run of exactly ``probes`` probes."""
    _synchronize(batches[0][0].device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = channel_traces(model, layers, batches, max_probes=probes, tol=0.0, per_channel=per_channel, progress=False)
    _synchronize(batches[0][0].device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.n_probes == probes
    return wall, cpu


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(
    name: str, probes: int, reps: int, n_batches: int | None, batch_size: int | None, device: torch.device
) -> dict[str, float]:
    """Median seconds of both modes over ``reps`` interleaved repetitions, after one untimed warm-up each."""
    build, shape, default_batches, default_size = MODELS[name]
    n_batches, batch_size = n_batches or default_batches, batch_size or default_size
    torch.manual_seed(0)
    model = build().eval().to(device)
    batches = [(x.to(device), y.to(device)) for x, y in random_batches(shape, n_batches, batch_size, seed=0)]
    layers = discover_layers(model, batches[0][0][:1])
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for mode in (True, False):
        time_mode(model, layers, batches, probes, mode)
    for rep in range(reps):
        # Alternate the order so drift in machine speed does not favour one mode.
        for mode in (True, False) if rep % 2 == 0 else (False, True):
            times[mode].append(time_mode(model, layers, batches, probes, mode))
    # Process CPU time is reported beside wall time: on a shared machine it is far less disturbed by other load.
    wall = {mode: statistics.median(t[0] for t in times[mode]) for mode in times}
    cpu = {mode: statistics.median(t[1] for t in times[mode]) for mode in times}
    return {
        "samples": n_batches * batch_size,
        "weights": sum(layer.params for layer in layers),
        "channels": sum(layer.out_channels for layer in layers),
        "channel_s": wall[True],
        "whole_s": wall[False],
        "ratio": wall[True] / wall[False],
        "channel_cpu_s": cpu[True],
        "whole_cpu_s": cpu[False],
        "cpu_ratio": cpu[True] / cpu[False],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark, print a Markdown table and return the numbers per model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small CNN only, 5 probes, 5 reps, 2 batches of 64")
    parser.add_argument("--probes", type=int, help="probes per run (default 20; 5 with --quick)")
    parser.add_argument("--reps", type=int, help="timed repetitions per mode (default 7; 5 with --quick)")
    parser.add_argument("--batches", type=int, help="batches of random data (default per model; 2 with --quick)")
    parser.add_argument("--batch-size", type=int, help="samples per batch (default per model; 64 with --quick)")
    parser.add_argument("--device", default="cpu", help="torch device for model and data (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    probes = args.probes or (5 if args.quick else 20)
    reps = args.reps or (5 if args.quick else 7)
    n_batches = args.batches or (2 if args.quick else None)
    batch_size = args.batch_size or (64 if args.quick else None)
    names = ["digits_cnn"] if args.quick else list(MODELS)

    device = torch.device(args.device)
    results = {name: bench_model(name, probes, reps, n_batches, batch_size, device) for name in names}
    print(f"{probes} probes per run, median of {reps} interleaved reps, device {device}, "
          f"{torch.get_num_threads()} CPU threads; wall-clock seconds (process CPU seconds)\n")  # fmt: skip
    print("| model | samples | weights | channels | channel-wise | whole-model | ratio | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['samples']} | {r['weights']} | {r['channels']} "
              f"| {r['channel_s']:.4f} ({r['channel_cpu_s']:.4f}) | {r['whole_s']:.4f} ({r['whole_cpu_s']:.4f}) "
              f"| {r['ratio']:.3f} | {r['cpu_ratio']:.3f} |")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
