"""`result.json`: the final assignment with honest totals, and the summary table printed after a run.

Test accuracy is computed here and only here, after the search has finished: no method ever sees the test split.
`write_result` writes the document together with the quantized model it describes (`cwhawq.export`).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cwhawq.cost import FP32_BITS, SCALE_BITS, fp32_bits, scale_overhead_bits
from cwhawq.errors import CwhawqError
from cwhawq.export import save_model_files
from cwhawq.hessian import layer_ranking_reliability
from cwhawq.layers import unquantized_weights
from cwhawq.problem import Assignment, QuantProblem
from cwhawq.tracking import write_json_atomic

RESULT_VERSION = 1
RESULT_FILE = "result.json"
#: Packages whose versions `result.json` records: a seed reproduces a run only with the same versions.
RECORDED_PACKAGES = ("cwhawq", "torch", "numpy", "scipy", "stable-baselines3", "gymnasium", "pulp")


def environment() -> dict[str, Any]:
    """The Python, platform and package versions a run used (a package not installed is recorded as None), and
    torch's CPU kernels (DEFAULT, AVX2, AVX512: vectorised sums round differently, so the same seed trains other
    built-in weights and reaches another result under each; ATEN_CPU_CAPABILITY chooses them) and threads."""

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {package: version(package) for package in RECORDED_PACKAGES},
        "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def build_result(
    problem: QuantProblem,
    assignment: Assignment,
    method: str,
    settings: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate `assignment` on validation and test data and assemble the result document."""
    problem.check_assignment(assignment)
    size = problem.size_bits(assignment)
    traces = problem.traces
    layers = []
    for layer in problem.layers:
        bits = np.asarray(assignment[layer.name])
        layers.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "channels": layer.out_channels,
                "params": layer.params,
                "pinned": layer.pinned_bits is not None,
                "avg_bits": float(bits.mean()),
                "bits": bits.astype(int).tolist(),
                # what ordered the channels, so that a reader can see why each got its bits
                "traces": np.asarray(traces.traces[layer.name], dtype=float).tolist(),
                "trace_stderr": np.asarray(traces.stderr[layer.name], dtype=float).tolist(),
                "ranking_reliability": layer_ranking_reliability(traces.traces[layer.name], traces.stderr[layer.name]),
            }
        )
    data = problem.data
    validation = problem.validate(assignment, count=False)
    test = problem.evaluate_test(assignment)
    left_fp32 = sum(unquantized_weights(problem.model, problem.layers).values())
    return {
        "version": RESULT_VERSION,
        "method": method,
        "model": settings["problem"]["model"],
        "dataset": data.name,
        "bit_widths": list(problem.bit_widths),
        "layers": layers,
        "totals": {
            "weights": problem.n_weights,
            "avg_bits": size / problem.n_weights,
            "weight_bits": size,
            "weight_bytes": size / 8,
            "scale_overhead_bytes": scale_overhead_bits(problem.layers) / 8,
            "scale_bits_per_channel": SCALE_BITS,
            "fp32_bytes": fp32_bits(problem.layers) / 8,
            "compression_vs_fp32": fp32_bits(problem.layers) / size,
            "budget_bits": problem.budget.total_bits,
            "budget_used": size / problem.budget.total_bits,
            "unquantized_weights": left_fp32,
            "unquantized_fp32_bytes": FP32_BITS * left_fp32 / 8,
        },
        "accuracy": {
            "fp32_val": problem.fp_val_accuracy,
            "quantized_val": validation.accuracy,
            "quantized_val_kl": validation.kl,
            "fp32_test": problem.evaluate_fp("test"),
            "quantized_test": test.accuracy,
            "quantized_test_kl": test.kl,
            "val_samples": len(data.val.y),
            "test_samples": len(data.test.y),
            "kl_train_samples": len(problem.kl_extra) if problem.kl_extra is not None else 0,
        },
        "traces": {
            "model_trace": float(traces.model_trace),
            "probes": int(traces.n_probes),
            "converged": bool(traces.converged),
        },
        "settings": dict(settings),
        "environment": environment(),
        **dict(extra or {}),
    }


def read_result(path: Path) -> tuple[Path, dict[str, Any]]:
    """The `result.json` of a finished run, given its output directory or the file: (file path, document).

    Raises `CwhawqError` in one line when there is none or the file is not a result document.
    """
    path = Path(path)
    result_path = path / RESULT_FILE if path.is_dir() else path
    if not result_path.is_file():
        raise CwhawqError(f"no {RESULT_FILE} at {path}; pass the output directory of a finished cwhawq run")
    try:
        result = json.loads(result_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        result = None
    if not isinstance(result, dict) or not isinstance(result.get("layers"), list) or "accuracy" not in result:
        raise CwhawqError(f"{result_path} is not a cwhawq {RESULT_FILE}; pass the output of a cwhawq run")
    return result_path, result


def result_assignment(result: Mapping[str, Any]) -> Assignment:
    """The per-channel bits a result document records, by layer name."""
    return {layer["name"]: np.asarray(layer["bits"], dtype=np.int64) for layer in result["layers"]}


def write_result(out: Path, problem: QuantProblem, result: Mapping[str, Any]) -> None:
    """Write `result` as `out/result.json`, the model it describes as `out/quantized_model.pt` and its weights,
    bit-packed, as `out/packed_weights.npz`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model_files(problem, result_assignment(result), out)
    write_json_atomic(out / RESULT_FILE, result)


def format_summary(result: Mapping[str, Any], max_layers: int = 30) -> str:
    """A plain-text table of per-layer bits and the totals, for the terminal."""
    lines = [f"{'layer':<32} {'kind':<9} {'ch':>5} {'avg bits':>8}  bits histogram"]
    for layer in result["layers"][:max_layers]:
        values, counts = np.unique(layer["bits"], return_counts=True)
        histogram = " ".join(f"{v}b:{c}" for v, c in zip(values, counts))
        pin = " (pinned)" if layer["pinned"] else ""
        columns = f"{layer['name']:<32} {layer['kind']:<9} {layer['channels']:>5} {layer['avg_bits']:>8.2f}"
        lines.append(f"{columns}  {histogram}{pin}")
    if len(result["layers"]) > max_layers:
        lines.append(f"... {len(result['layers']) - max_layers} more layers in result.json")
    totals, acc = result["totals"], result["accuracy"]
    lines += [
        "",
        f"method {result['method']}: {totals['avg_bits']:.3f} average bits, "
        f"{totals['weight_bytes'] / 1e3:.1f} kB weights (+{totals['scale_overhead_bytes'] / 1e3:.1f} kB scales) "
        f"vs {totals['fp32_bytes'] / 1e3:.1f} kB FP32 ({totals['compression_vs_fp32']:.1f}x)"
        + (f"; {totals['unquantized_fp32_bytes'] / 1e3:.1f} kB of other weights kept FP32"
           if totals.get("unquantized_fp32_bytes") else ""),
        f"accuracy  val: FP32 {acc['fp32_val']:.2%} -> quantized {acc['quantized_val']:.2%}   "
        f"test: FP32 {acc['fp32_test']:.2%} -> quantized {acc['quantized_test']:.2%}"
        + (f" (KL divergence from FP32 {acc['quantized_test_kl']:.4f})" if "quantized_test_kl" in acc else ""),
    ]
    if result.get("search", {}).get("start"):
        lines.append(f"search explored from {result['search']['start']}")
    return "\n".join(lines)
