"""`quantized_model.pt`: the quantized model itself, beside `result.json`, so that users can check the reported
accuracy and deploy what was measured.

The file is a `torch.save`d dict:

- ``model``: the evaluated model (BatchNorm folded, as measured, moved to the CPU) with every quantized weight
  replaced by its dequantized values, or None where the model cannot be pickled (a warning says so);
- ``state_dict``: that model's state_dict (always present);
- ``layers``: per quantized layer, ``bits`` (one bit-width per output channel), ``codes`` (the integer weights,
  int8 or int16 containers) and ``scales`` (one per output channel), with codes * scales the layer's weight
  (`cwhawq.quantizer.integer_codes`); layers kept at FP32 have codes and scales None.

Load it with ``torch.load(path, weights_only=False)`` (it holds a pickled module) or `load_quantized_model`.

`packed_weights.npz`, beside it, holds the same weights at their real size: per layer its weight shape, the bits
of each output channel (one byte each), the scales, and the codes of the channels at each bit-width bit-packed
(`cwhawq.packing`), so that the quantized weights take the size `result.json` reports (weights and scales) plus one
byte per channel and the container's few hundred bytes per array. Layers kept at FP32 hold their weight as float32.
The rest of the measured model's state (biases, normalisation parameters, buffers; FP32, not counted in the
reported size) is stored too, so that the file and the architecture alone rebuild the model. It is a plain
`numpy.savez` file (no pickle): `load_packed_weights` turns it back into the layers' weights, `load_packed_model`
into the model.
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cwhawq.allocation import FP32_LAYER_BITS
from cwhawq.bn_fold import bake_parametrized_weights, fold_batchnorm
from cwhawq.errors import CwhawqError
from cwhawq.layers import layer_weight
from cwhawq.packing import pack_codes, unpack_codes
from cwhawq.problem import Assignment, QuantProblem
from cwhawq.quantizer import integer_codes
from cwhawq.tracking import torch_save_atomic

QUANTIZED_MODEL_FILE = "quantized_model.pt"
EXPORT_FORMAT = "cwhawq-quantized-model-1"
PACKED_WEIGHTS_FILE = "packed_weights.npz"
PACKED_FORMAT = "cwhawq-packed-weights-1"
#: Separates a layer's name from the field in the keys of `packed_weights.npz` (layer names hold dots).
_KEY = "|"
#: The field of the model's other state_dict entries (biases, normalisation, buffers) in `packed_weights.npz`.
_STATE = "state"


def _layer_entry(problem: QuantProblem, name: str, bits: np.ndarray) -> dict[str, torch.Tensor | None]:
    bits_tensor = torch.from_numpy(np.asarray(bits, dtype=np.int64))
    if bits_tensor.numel() and bool((bits_tensor == FP32_LAYER_BITS).all()):
        return {"bits": bits_tensor.to(torch.int8), "codes": None, "scales": None}
    original = problem.quantizer.original_weight(name)
    codes, scales = integer_codes(original, bits_tensor)
    return {"bits": bits_tensor.to(torch.int8), "codes": codes.cpu(), "scales": scales.cpu()}


def _layer_entries(problem: QuantProblem, assignment: Assignment) -> dict[str, dict[str, torch.Tensor | None]]:
    problem.check_assignment(assignment)
    return {layer.name: _layer_entry(problem, layer.name, assignment[layer.name]) for layer in problem.layers}


def save_model_files(problem: QuantProblem, assignment: Assignment, out: Path) -> None:
    """Write `QUANTIZED_MODEL_FILE` and `PACKED_WEIGHTS_FILE` for `assignment` into `out`, the codes computed once."""
    entries = _layer_entries(problem, assignment)
    _write_quantized_model(problem, assignment, entries, Path(out) / QUANTIZED_MODEL_FILE)
    _write_packed_weights(problem, entries, Path(out) / PACKED_WEIGHTS_FILE)


def save_quantized_model(problem: QuantProblem, assignment: Assignment, path: Path) -> None:
    """Write `problem`'s model quantized by `assignment` to `path` (format in the module docstring), atomically."""
    _write_quantized_model(problem, assignment, _layer_entries(problem, assignment), path)


def _write_quantized_model(
    problem: QuantProblem, assignment: Assignment, layers: dict[str, dict[str, torch.Tensor | None]], path: Path
) -> None:
    with problem.quantizer.quantized(assignment) as model:
        quantized = copy.deepcopy(model).cpu()  # loadable on a machine without the search's device
    payload: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "model": quantized,
        "state_dict": quantized.state_dict(),
        "layers": layers,
    }
    path = Path(path)
    try:
        torch_save_atomic(path, payload)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        warnings.warn(
            f"the quantized model cannot be pickled ({exc}); {path.name} holds its state_dict and integer codes "
            "only: load the state_dict into your model (BatchNorm folded as cwhawq.bn_fold.fold_batchnorm does)",
            stacklevel=3,
        )
        payload["model"] = None
        torch_save_atomic(path, payload)


def load_quantized_model(path: Path) -> dict[str, Any]:
    """Read a file written by `save_quantized_model`; the model, if any, is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CwhawqError(f"quantized model not found: {path}; a finished run writes it beside result.json")
    try:
        payload = torch.load(path, weights_only=False)  # it holds a pickled module; only load files you trust
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise CwhawqError(f"cannot read {path} ({type(exc).__name__}); pass a {QUANTIZED_MODEL_FILE}") from exc
    if not isinstance(payload, Mapping) or payload.get("format") != EXPORT_FORMAT:
        raise CwhawqError(f"{path} is not a cwhawq quantized model ({EXPORT_FORMAT}); pass a {QUANTIZED_MODEL_FILE}")
    if payload["model"] is not None:
        payload["model"].eval()
    return dict(payload)


def dequantized_weight(entry: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
    """A layer's weight rebuilt from its exported codes and scales (codes * scale per output channel)."""
    codes, scales = entry["codes"], entry["scales"]
    if codes is None or scales is None:
        raise CwhawqError("this layer was kept at FP32, so it has no codes; read its weight from the state_dict")
    return codes.to(scales.dtype) * scales.view(-1, *([1] * (codes.dim() - 1)))



def save_packed_weights(problem: QuantProblem, assignment: Assignment, path: Path) -> None:
    """Write `problem`'s quantized layers under `assignment` to `path`, bit-packed (module docstring), atomically."""
    _write_packed_weights(problem, _layer_entries(problem, assignment), path)


def _write_packed_weights(
    problem: QuantProblem, entries: dict[str, dict[str, torch.Tensor | None]], path: Path
) -> None:
    arrays: dict[str, np.ndarray] = {"format": np.array(PACKED_FORMAT)}
    quantized = {id(layer_weight(problem.model, layer.name)) for layer in problem.layers}
    for key, tensor in problem.model.state_dict(keep_vars=True).items():
        if id(tensor) not in quantized:  # biases, normalisation parameters, buffers: FP32, as measured
            arrays[key + _KEY + _STATE] = tensor.detach().cpu().numpy()
    for layer in problem.layers:
        entry = entries[layer.name]
        prefix = layer.name + _KEY
        weight = problem.quantizer.original_weight(layer.name)
        arrays[prefix + "shape"] = np.array(weight.shape, dtype=np.int64)
        arrays[prefix + "bits"] = entry["bits"].numpy()
        if entry["codes"] is None:
            arrays[prefix + "fp32"] = weight.detach().cpu().float().numpy()
            continue
        arrays[prefix + "scales"] = entry["scales"].numpy()
        codes = entry["codes"].numpy().reshape(len(entry["bits"]), -1)
        for width in np.unique(arrays[prefix + "bits"]):
            arrays[f"{prefix}codes{width}"] = pack_codes(codes[arrays[prefix + "bits"] == width], int(width))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")  # savez appends .npz to names without it
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_packed(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise CwhawqError(f"packed weights not found: {path}; a finished run writes {PACKED_WEIGHTS_FILE}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise CwhawqError(f"cannot read {path} ({type(exc).__name__}); pass a {PACKED_WEIGHTS_FILE}") from exc
    if "format" not in arrays or str(arrays["format"]) != PACKED_FORMAT:
        raise CwhawqError(f"{path} is not cwhawq packed weights ({PACKED_FORMAT}); pass a {PACKED_WEIGHTS_FILE}")
    return arrays


def load_packed_weights(path: Path) -> dict[str, torch.Tensor]:
    """Each layer's weight from a file written by `save_packed_weights`: codes * scales per output channel (the
    weights the quantized model was measured with), or the FP32 weight of a layer kept at FP32."""
    return _packed_layer_weights(_read_packed(path))


def _packed_layer_weights(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    weights = {}
    for key in arrays:
        if not key.endswith(_KEY + "shape"):
            continue
        prefix = key[: -len("shape")]
        shape = tuple(int(size) for size in arrays[key])
        if prefix + "fp32" in arrays:
            weights[prefix[:-1]] = torch.from_numpy(arrays[prefix + "fp32"])
            continue
        bits = arrays[prefix + "bits"]
        per_channel = int(np.prod(shape[1:]))
        codes = np.zeros((len(bits), per_channel), dtype=np.int32)
        for width in np.unique(bits):
            rows = bits == width
            packed = arrays[f"{prefix}codes{width}"]
            codes[rows] = unpack_codes(packed, int(width), int(rows.sum()) * per_channel).reshape(-1, per_channel)
        entry = {"codes": torch.from_numpy(codes.reshape(shape)), "scales": torch.from_numpy(arrays[prefix + "scales"])}
        weights[prefix[:-1]] = dequantized_weight(entry)
    return weights


def load_packed_model(model: nn.Module, path: Path, fold_bn: bool = True) -> nn.Module:
    """The quantized model as measured, rebuilt from `packed_weights.npz` and its architecture alone.

    Args:
        model: an instance of the architecture that was searched (any weights: all are replaced).
        path: the `PACKED_WEIGHTS_FILE` of the run.
        fold_bn: False for a run made with ``--no-fold-bn``.

    Returns:
        An eval-mode copy of ``model`` prepared as the search prepared it (computed weights baked, BatchNorm folded),
        holding the file's quantized weights and FP32 biases, normalisation parameters and buffers. It returns
        what ``model`` returns (a tuple or dict output is not reduced to the logits).
    """
    arrays = _read_packed(path)
    measured = bake_parametrized_weights(model)
    measured = fold_batchnorm(measured) if fold_bn else copy.deepcopy(measured).eval()
    weights = _packed_layer_weights(arrays)
    try:
        targets = {name: layer_weight(measured, name) for name in weights}
    except CwhawqError as exc:
        raise CwhawqError(f"{path} does not fit the model ({exc}); pass the architecture that was searched") from None
    suffix = _KEY + _STATE
    state = {key[: -len(suffix)]: torch.from_numpy(value) for key, value in arrays.items() if key.endswith(suffix)}
    layer_ids = {id(weight) for weight in targets.values()}
    expected = {key for key, tensor in measured.state_dict(keep_vars=True).items() if id(tensor) not in layer_ids}
    if expected != set(state):
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        hint = "the --no-fold-bn" if fold_bn else "the default (BatchNorm folded)"
        raise CwhawqError(
            f"{path} does not fit the model: it lacks {missing[:3]} and holds {unexpected[:3]}; pass the architecture "
            f"that was searched, with fold_bn={not fold_bn} if the run used {hint} setting"
        )
    with torch.no_grad():
        measured.load_state_dict(state, strict=False)
        for name, weight in weights.items():
            targets[name].copy_(weight)
    return measured.eval()
