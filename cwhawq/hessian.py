"""Per-output-channel Hessian traces with Hutchinson's estimator, and a disk cache for them.

One Rademacher probe v over all quantizable weights gives Hv by a second backward pass; because the entries of v
are independent, summing (Hv * v) over one output channel's weights is an unbiased estimate of that channel's
Hessian-diagonal sum. Channel-wise traces therefore cost the same Hessian-vector products as a whole-model trace.

By default every probe's Hessian-vector product runs over all the given batches (the Hessian of their mean loss, as
PyHessian). With ``probe_data="batch"`` each probe runs over one batch in turn, scaled so that its expectation is
the same Hessian's: with B batches a probe costs 1/B as much, and B times as many probes rank the channels better for
the same time (docs/BENCHMARKS.md, change 33).

Probes take minutes on large models, so the finished ones can be kept in a partial file (every
`PARTIAL_SAVE_INTERVAL_S` seconds and on Ctrl-C) from which a later call with the same inputs continues; the result
equals an uninterrupted run's. `cached_channel_traces` keeps one next to its cache entry.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from cwhawq.cache import hash_tensor
from cwhawq.errors import CwhawqError
from cwhawq.layers import LayerInfo, layer_weight
from cwhawq.progress import progress_bar
from cwhawq.settings import PROBE_DATA

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

# Bump when the estimator changes in a way that makes stored traces stale.
_CACHE_VERSION = 1
#: Probes before the ranking rule may stop: the standard errors it compares come from the probes' own spread.
MIN_RANKING_PROBES = 20
#: Seconds between saves of the finished probes to a partial file (a kill loses at most this much work).
PARTIAL_SAVE_INTERVAL_S = 30.0


@dataclass
class ChannelTraces:
    """Per-output-channel Hessian traces of the quantizable layers, with their standard errors."""

    traces: dict[str, np.ndarray]  # layer -> per-output-channel Hessian trace (sum of H diagonal over the channel)
    stderr: dict[str, np.ndarray]  # standard error of each estimate over probes
    model_trace: float
    n_probes: int
    converged: bool


def channel_traces(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    batches: Sequence[Batch],
    loss_fn: LossFn = F.cross_entropy,
    max_probes: int = 200,
    tol: float = 1e-3,
    seed: int = 0,
    per_channel: bool = True,
    progress: bool = True,
    partial_file: Path | None = None,
    reliability: float = 0.0,
    probe_data: str = "all",
) -> ChannelTraces:
    """Estimate each output channel's Hessian trace of the mean loss over ``batches`` with Hutchinson probes.

    ``loss_fn(model(x), y)`` must return the mean loss of one batch; batches are weighted by their size, so the
    Hessian is that of the mean loss over all samples. Probes stop after ``max_probes``, or earlier (after at least 2
    probes) once the whole-model running mean changes by a relative amount below ``tol`` and, per channel, every
    layer's ranking reliability (`ranking_reliability`) is at least ``reliability`` (after at least
    `MIN_RANKING_PROBES`): the channels are handed their bits in trace order, which the whole-model estimate alone
    does not make reliable. With ``per_channel=False`` only the whole-model trace is computed (``reliability`` does
    not apply) and ``traces``/``stderr`` are empty. With ``probe_data="batch"``, probe k runs over batch k mod B
    only, its values scaled by B * (batch size) / (all samples): unbiased for the same Hessian at 1/B of the cost
    per probe, so ``max_probes`` can be B times larger for the same time. The autograd graph of all batches is
    held in memory for the whole run, so pass a few calibration batches, not a whole training set.

    With ``partial_file``, finished probes are saved there now and then and on Ctrl-C, and a call that finds the file
    continues from it; it must come from a call with the same inputs (`cached_channel_traces` ensures that).
    """
    if max_probes < 1:
        raise CwhawqError(f"max_probes must be at least 1, got {max_probes}; pass a positive number of probes")
    if not 0.0 <= reliability < 1.0:
        raise CwhawqError(f"reliability must be in [0, 1), got {reliability}; 0.9 asks for 90% signal")
    if not layers:
        raise CwhawqError("no layers given for Hessian traces; pass the list from discover_layers(model, ...)")
    if not batches:
        raise CwhawqError("no batches given for Hessian traces; pass at least one (inputs, targets) batch")
    if probe_data not in PROBE_DATA:
        raise CwhawqError(f"unknown probe_data {probe_data!r}; use one of {list(PROBE_DATA)}")
    names = [layer.name for layer in layers]
    weights = [layer_weight(model, name) for name in names]
    out_channels = [w.shape[0] for w in weights]
    sizes = [w.numel() for w in weights]

    was_training = model.training
    saved_requires_grad = [w.requires_grad for w in weights]
    model.eval()  # BatchNorm must use its running statistics: the Hessian of the deployed model
    try:
        for w in weights:
            w.requires_grad_(True)
        # enable_grad: also when called under torch.no_grad(); the math attention kernel: the fused ones have no
        # double backward, which every Hessian-vector product of an attention model needs
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            gradients = _probe_gradients(model, weights, batches, loss_fn, probe_data)
        samples = _probe(
            gradients,
            weights,
            names,
            out_channels,
            sizes,
            _Stopping(max_probes, tol, reliability if per_channel else 0.0),
            seed,
            per_channel,
            progress,
            partial_file,
        )
    finally:
        for w, flag in zip(weights, saved_requires_grad):
            w.requires_grad_(flag)
        model.train(was_training)

    values, converged = samples
    n = values.shape[0]
    per_probe_total = values.sum(dim=1)
    model_trace = float(per_probe_total.mean())
    if not per_channel:
        return ChannelTraces({}, {}, model_trace, n, converged)
    mean = values.mean(dim=0)
    stderr = values.std(dim=0, correction=1) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    bounds = np.cumsum([0, *out_channels])
    mean_np, stderr_np = mean.cpu().numpy(), stderr.cpu().numpy()
    traces = {name: mean_np[bounds[i] : bounds[i + 1]].copy() for i, name in enumerate(names)}
    errors = {name: stderr_np[bounds[i] : bounds[i + 1]].copy() for i, name in enumerate(names)}
    return ChannelTraces(traces, errors, model_trace, n, converged)


# Captured once so that the settings accepted and their defaults do not depend on later rebinding of the name.
_TRACE_SIGNATURE = inspect.signature(channel_traces)


def _probe_gradients(
    model: nn.Module, weights: list[Tensor], batches: Sequence[Batch], loss_fn: LossFn, probe_data: str
) -> list[tuple[tuple[Tensor, ...], float]]:
    """The loss gradients (with their graphs) that the probes differentiate, each with the scale of its probes'
    values: one pair for the mean loss over all batches ("all"), or one per batch ("batch"; see `channel_traces`)."""
    # The graphs of all batches are built once and kept (create_graph=True): every probe then needs one double
    # backward instead of a forward + backward + double backward per batch and probe (PyHessian's loop). The double
    # backward dominates, so this saves ~20-25% per probe on small CNNs (CPU); the cost is holding the graph of all
    # batches, small for the few calibration batches a trace needs.
    total = sum(len(x) for x, _ in batches)
    device = weights[0].device
    losses = []
    for k, (x, y) in enumerate(batches):
        batch_loss = loss_fn(model(x.to(device)), y.to(device))
        if not torch.isfinite(batch_loss).all():
            raise CwhawqError(f"non-finite loss on batch {k}; check the model and data for NaNs")
        losses.append((batch_loss, len(x) / total))
    if probe_data == "all":
        loss = sum((batch_loss * share for batch_loss, share in losses), torch.zeros((), device=device))
        return [(torch.autograd.grad(loss, weights, create_graph=True), 1.0)]
    return [
        (torch.autograd.grad(batch_loss, weights, create_graph=True), len(batches) * share)
        for batch_loss, share in losses
    ]


def layer_ranking_reliability(traces: np.ndarray, stderr: np.ndarray) -> float | None:
    """The share of the spread of one layer's channel trace estimates that is signal rather than probe noise:
    1 - mean(stderr^2) / variance of the estimates across channels. Near 1 their order is the true one; near 0 (or
    below) it is mostly noise. None for a layer of one channel or of equal estimates (nothing to rank)."""
    spread = float(np.var(traces)) if len(traces) > 1 else 0.0
    return 1.0 - float(np.mean(np.square(stderr))) / spread if spread > 0.0 else None


def ranking_reliability(total: Tensor, total_sq: Tensor, n: int, out_channels: Sequence[int]) -> float:
    """The lowest `layer_ranking_reliability` over the layers, from the sums over ``n`` probes of each channel's probe
    values (``total``) and of their squares (``total_sq``); 1.0 when no layer has anything to rank."""
    if n < 2:
        return 0.0
    mean = total / n
    error_sq = (total_sq / n - mean**2).clamp_min(0.0) * (n / (n - 1)) / n
    lowest = 1.0
    for part_mean, part_error_sq in zip(mean.split(list(out_channels)), error_sq.split(list(out_channels))):
        reliability = layer_ranking_reliability(part_mean.cpu().numpy(), part_error_sq.sqrt().cpu().numpy())
        if reliability is not None:
            lowest = min(lowest, reliability)
    return lowest


def _settles(running: float, previous: float, tol: float) -> bool:
    """The whole-model rule: the last probe moved the running mean by a relative amount below ``tol``."""
    # abs() in the denominator: a negative running mean must not make the ratio negative and stop at once.
    return abs(running - previous) / (abs(previous) + 1e-12) < tol


@dataclass(frozen=True)
class _Stopping:
    """What ends the probing (`channel_traces`)."""

    max_probes: int
    tol: float
    reliability: float


def _probe(
    gradients: list[tuple[tuple[Tensor, ...], float]],
    weights: list[Tensor],
    names: list[str],
    out_channels: list[int],
    sizes: list[int],
    stopping: _Stopping,
    seed: int,
    per_channel: bool,
    progress: bool,
    partial_file: Path | None,
) -> tuple[Tensor, bool]:
    """Run the probes; return per-probe values (probes x channels, or probes x layers) and whether it converged.

    Probe k differentiates ``gradients[k % len(gradients)]`` (the loss gradients of some batches, with create_graph)
    and scales its values by the factor paired with them.
    """
    device, dtype = weights[0].device, weights[0].dtype
    generator = torch.Generator().manual_seed(seed)  # CPU generator: the same probes on every device
    max_probes = stopping.max_probes
    width = sum(out_channels) if per_channel else len(weights)
    values = torch.empty((max_probes, width), dtype=torch.float64, device=device)
    running, previous, converged, settled, n = 0.0, 0.0, False, False, 0
    restored = _load_partial(partial_file, width, seed) if partial_file is not None else None
    if restored is not None:
        kept, state = restored
        n = min(len(kept), max_probes)
        values[:n] = torch.from_numpy(kept[:n]).to(device)
        generator.set_state(state)
        for i in range(n):  # the running mean and the whole-model rule exactly as the interrupted run computed them
            previous, running = running, running + (float(values[i].sum()) - running) / (i + 1)
            settled = settled or (i >= 1 and _settles(running, previous, stopping.tol))
    total, total_sq = values[:n].sum(dim=0), values[:n].square().sum(dim=0)
    next_state, saved_at = generator.get_state(), time.monotonic()
    desc = f"Hessian probes (resumed at {n})" if n else "Hessian probes"
    bar = progress_bar(total=max_probes, initial=n, desc=desc, unit="probe", disable=not progress, leave=False)
    try:
        while n < max_probes:
            flat = torch.randint(0, 2, (sum(sizes),), generator=generator, dtype=dtype).to(device).mul_(2).sub_(1)
            probes = [p.view_as(w) for p, w in zip(flat.split(sizes), weights)]
            grads, scale = gradients[n % len(gradients)]
            hvs = torch.autograd.grad(grads, weights, grad_outputs=probes, retain_graph=True)
            if per_channel:
                parts = [(hv * v).reshape(c, -1).sum(dim=1) for hv, v, c in zip(hvs, probes, out_channels)]
            else:
                parts = [torch.dot(hv.reshape(-1), v.reshape(-1)).reshape(1) for hv, v in zip(hvs, probes)]
            row = torch.cat(parts).double() * scale
            values[n] = row
            sample = float(row.sum())
            if not math.isfinite(sample):
                bad = next((name for name, part in zip(names, parts) if not torch.isfinite(part).all()), names[0])
                raise CwhawqError(
                    f"non-finite Hessian-vector product in layer {bad}; check the model and data for NaNs"
                )
            n += 1
            next_state = generator.get_state()
            previous, running = running, running + (sample - running) / n
            total += row
            total_sq += row.square()
            if partial_file is not None and time.monotonic() - saved_at >= PARTIAL_SAVE_INTERVAL_S:
                _save_partial(partial_file, values[:n], next_state, seed)
                saved_at = time.monotonic()
            # Once met, the whole-model rule stays met while the ranking's reliability catches up.
            settled = settled or (n >= 2 and _settles(running, previous, stopping.tol))
            if stopping.reliability == 0.0:
                reliable = 1.0
            else:  # standard errors from a handful of probes can be spuriously small
                reliable = ranking_reliability(total, total_sq, n, out_channels) if n >= MIN_RANKING_PROBES else 0.0
            postfix = {"trace": f"{running:.4g}"} | ({"ranking": f"{reliable:.2f}"} if stopping.reliability else {})
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if settled and reliable >= stopping.reliability:
                converged = True
                break
    except KeyboardInterrupt as interrupt:
        if partial_file is not None and n:
            _save_partial(partial_file, values[:n], next_state, seed)
            interrupt.add_note(f"the {n} Hessian probes done are kept; rerun the same command to continue from them")
        raise
    finally:
        bar.close()
    return values[:n], converged


def _save_partial(path: Path, values: Tensor, generator_state: Tensor, seed: int) -> None:
    """Keep finished probe values and the probe generator's state for the next probe."""
    _write_npz(path, {"values": values.cpu().numpy(), "generator_state": generator_state.numpy(), "seed": seed})


def _load_partial(path: Path, width: int, seed: int) -> tuple[np.ndarray, Tensor] | None:
    """Probe values and generator state saved by `_save_partial`; None (with a warning if unusable) without one."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            values, state, saved_seed = data["values"], torch.from_numpy(data["generator_state"]), int(data["seed"])
        if values.ndim != 2 or values.shape[1] != width or saved_seed != seed:
            raise ValueError(f"it holds {values.shape} probe values for seed {saved_seed}")
        torch.Generator().set_state(state)  # refuses a state of the wrong size or type
    except Exception as exc:  # a foreign or damaged file: start the probes again rather than fail
        warnings.warn(f"ignoring unusable partial Hessian probes {path} ({exc}); starting them again", stacklevel=3)
        return None
    return values, state


def cached_channel_traces(
    model: nn.Module, layers: Sequence[LayerInfo], batches: Sequence[Batch], cache_dir: Path, **settings: Any
) -> ChannelTraces:
    """Like :func:`channel_traces`, but stored under ``cache_dir/traces/<sha256>.npz`` and reused when present.

    The key covers every parameter and buffer of the model, the batches, the layer names and the settings (with
    defaults filled in; ``progress`` is ignored). An unreadable cache file is recomputed and overwritten. Probes
    not yet finished are kept in ``<sha256>.partial.npz`` (see `channel_traces`), removed once the entry is written.
    """
    try:
        bound = _TRACE_SIGNATURE.bind_partial(**settings)
    except TypeError as exc:
        raise CwhawqError(f"bad Hessian trace setting: {exc}; use the keyword arguments of channel_traces") from None
    if {"model", "layers", "batches"} & bound.arguments.keys():
        raise CwhawqError("model, layers and batches are positional arguments of cached_channel_traces; not settings")
    if "partial_file" in bound.arguments:
        raise CwhawqError("cached_channel_traces chooses its own partial file; do not pass partial_file")
    names = [layer.name for layer in layers]
    key = _cache_key(model, names, batches, bound)
    path = Path(cache_dir) / "traces" / f"{key}.npz"
    partial = path.with_name(f"{key}.partial.npz")
    if path.exists():
        try:
            return _load(path, names)
        except Exception as exc:  # any unreadable file (truncated, foreign, old layout) is just a cache miss
            warnings.warn(f"ignoring unreadable Hessian trace cache {path} ({exc}); recomputing", stacklevel=2)
    result = channel_traces(model, layers, batches, **settings, partial_file=partial)
    _save(path, names, result)
    partial.unlink(missing_ok=True)
    return result


def _cache_key(model: nn.Module, names: list[str], batches: Sequence[Batch], bound: inspect.BoundArguments) -> str:
    digest = hashlib.sha256(f"cwhawq-traces-v{_CACHE_VERSION}".encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(name.encode())
        hash_tensor(digest, tensor)
    digest.update(str(len(batches)).encode())
    for x, y in batches:
        hash_tensor(digest, x)
        hash_tensor(digest, y)
    digest.update(repr(names).encode())
    bound.apply_defaults()
    for key, value in sorted(bound.arguments.items()):
        if key in ("model", "layers", "batches", "progress", "partial_file"):
            continue
        if callable(value):  # a loss function: identified by where it is defined and, for lambdas, by its code
            code = getattr(value, "__code__", None)
            value = (
                f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
                f"{code.co_code.hex() if code is not None else ''}"
            )
        digest.update(f"{key}={value!r};".encode())
    return digest.hexdigest()


def _save(path: Path, names: list[str], result: ChannelTraces) -> None:
    arrays: dict[str, np.ndarray] = {
        "layer_names": np.array(names, dtype=str),
        "model_trace": np.array(result.model_trace),
        "n_probes": np.array(result.n_probes),
        "converged": np.array(result.converged),
        "per_channel": np.array(bool(result.traces)),
    }
    for i, name in enumerate(result.traces):
        arrays[f"trace_{i}"] = result.traces[name]
        arrays[f"stderr_{i}"] = result.stderr[name]
    _write_npz(path, arrays)


def _write_npz(path: Path, arrays: dict[str, Any]) -> None:
    # Write then rename so a crash never leaves a half-written file under the final name.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, names: list[str]) -> ChannelTraces:
    with np.load(path, allow_pickle=False) as data:
        if list(data["layer_names"]) != names:
            raise ValueError("layer names differ from the request")
        traces, stderr = {}, {}
        if bool(data["per_channel"]):
            for i, name in enumerate(names):
                traces[name] = data[f"trace_{i}"]
                stderr[name] = data[f"stderr_{i}"]
        return ChannelTraces(
            traces, stderr, float(data["model_trace"]), int(data["n_probes"]), bool(data["converged"])
        )
