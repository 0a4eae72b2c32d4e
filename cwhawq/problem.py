"""The quantization problem: a model ready to quantize, its layers, channel traces, budget and evaluator.

Everything a search method needs is built once here from `ProblemSettings`, so the agent, the baselines and the
policy-reuse path all see the same model, the same cost model, the same budget and the same validation data.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cwhawq.allocation import validate_bit_widths
from cwhawq.bn_fold import bake_parametrized_weights, fold_batchnorm
from cwhawq.cache import hash_tensor
from cwhawq.cost import Budget, assignment_bits, average_bits
from cwhawq.data import DataSplits, Split, batches, load_dataset
from cwhawq.device import resolve_device
from cwhawq.errors import CwhawqError
from cwhawq.evaluation import Evaluation, accuracy, evaluate, log_probs
from cwhawq.evaluation_memo import EvaluationMemo
from cwhawq.hessian import ChannelTraces, cached_channel_traces
from cwhawq.layers import LayerInfo, discover_layers, unquantized_weights
from cwhawq.model_output import logits_only
from cwhawq.models import BUILTIN_MODELS, default_cache_dir, eager_module, load_model, unknown_model_error
from cwhawq.quantizer import WeightQuantizer
from cwhawq.settings import CHANNEL_ORDERS, OBJECTIVES, ProblemSettings

Assignment = dict[str, np.ndarray]


@dataclass
class QuantProblem:
    """A model with its quantizable layers, channel traces, budget and validation/test evaluation."""

    model: nn.Module
    data: DataSplits
    layers: list[LayerInfo]
    traces: ChannelTraces
    budget: Budget
    bit_widths: tuple[int, ...]
    fp_val_accuracy: float
    quantizer: WeightQuantizer
    fp_val_log_probs: torch.Tensor
    objective: str = ProblemSettings.objective
    channel_order: str = ProblemSettings.channel_order
    kl_extra: Split | None = None
    fp_kl_extra_log_probs: torch.Tensor | None = None
    evaluations: int = field(default=0)
    memo: EvaluationMemo | None = field(default=None)

    @property
    def searchable(self) -> list[LayerInfo]:
        """Layers whose bits are searched (not pinned), in execution order."""
        return [layer for layer in self.layers if layer.pinned_bits is None]

    @property
    def n_weights(self) -> int:
        """Number of quantized weights in the model."""
        return sum(layer.params for layer in self.layers)

    def pinned_assignment(self) -> Assignment:
        """Bits of the pinned layers, which no method may change."""
        return {
            layer.name: np.full(layer.out_channels, layer.pinned_bits, dtype=np.int64)
            for layer in self.layers
            if layer.pinned_bits is not None
        }

    def uniform_assignment(self, bits: int) -> Assignment:
        """Every searchable channel at `bits`, pinned layers at their pins."""
        out = {layer.name: np.full(layer.out_channels, bits, dtype=np.int64) for layer in self.searchable}
        out.update(self.pinned_assignment())
        return out

    def size_bits(self, assignment: Mapping[str, np.ndarray]) -> int:
        """Weight storage of an assignment in bits."""
        return assignment_bits(self.layers, assignment)

    def average_bits(self, assignment: Mapping[str, np.ndarray]) -> float:
        """Average bits per weight of an assignment."""
        return average_bits(self.layers, assignment)

    def check_assignment(self, assignment: Mapping[str, np.ndarray]) -> None:
        """Raise if an assignment misses a layer, uses a non-candidate width, or exceeds the budget."""
        allowed = set(self.bit_widths) | {layer.pinned_bits for layer in self.layers if layer.pinned_bits}
        for layer in self.layers:
            bits = assignment.get(layer.name)
            if bits is None or len(bits) != layer.out_channels:
                raise CwhawqError(f"assignment has no bits for every channel of layer {layer.name!r}")
            if not set(np.unique(bits).tolist()) <= allowed:
                raise CwhawqError(f"assignment for {layer.name!r} uses bit-widths outside {sorted(allowed)}")
        if self.size_bits(assignment) > self.budget.total_bits:
            raise CwhawqError("assignment exceeds the size budget")

    def validate(self, assignment: Mapping[str, np.ndarray], count: bool = True) -> Evaluation:
        """Accuracy on validation and KL divergence from the full-precision predictions (on validation and the
        `kl_extra` training inputs) of the model quantized by `assignment`.

        Evaluations made by a search are counted (`count=True`), so methods can be compared at an equal number of
        quantized evaluations; reporting passes `count=False`.
        """
        if count:
            self.evaluations += 1
        if self.memo is not None:
            known = self.memo.get(assignment)
            if known is not None:
                return known
        with self.quantizer.quantized(assignment):
            measured = evaluate(
                self.model, self.data.val, self.fp_val_log_probs, extra=self.kl_extra,
                extra_reference=self.fp_kl_extra_log_probs,
            )  # fmt: skip
        if self.memo is not None:
            self.memo.add(assignment, measured)
        return measured

    def score(self, evaluation: Evaluation) -> float:
        """How good a validation `evaluation` is under the problem's objective; higher is better."""
        return evaluation.score(self.objective)

    @property
    def fp_score(self) -> float:
        """The full-precision model's score: the most a lossless assignment reaches."""
        return self.score(Evaluation(self.fp_val_accuracy))

    def evaluate(self, assignment: Mapping[str, np.ndarray], split: str = "val", count: bool = True) -> float:
        """Accuracy of the model quantized by `assignment` on a split (validation ones as `validate` counts them)."""
        if split == "val":
            return self.validate(assignment, count).accuracy
        with self.quantizer.quantized(assignment):
            return accuracy(self.model, getattr(self.data, split))

    @contextmanager
    def memoized(self, memo: EvaluationMemo) -> Iterator[EvaluationMemo]:
        """Within the block, validation evaluations are read from and recorded in `memo` (a rerun of interrupted
        work replays what it measured); a memo hit still counts as an evaluation of the search."""
        previous, self.memo = self.memo, memo
        try:
            yield memo
        finally:
            self.memo = previous

    def fingerprint(self) -> str:
        """A digest of what decides an assignment's validation evaluation: the weights, the validation data and the
        training inputs its KL divergence is also measured on."""
        digest = hashlib.sha256()
        named = [*self.model.state_dict().items(), ("val.x", self.data.val.x), ("val.y", self.data.val.y)]
        if self.kl_extra is not None:
            named.append(("kl_extra.x", self.kl_extra.x))
        for name, tensor in named:
            digest.update(name.encode())
            hash_tensor(digest, tensor)
        return digest.hexdigest()

    def evaluate_fp(self, split: str) -> float:
        """Accuracy of the unquantized model on a split."""
        return accuracy(self.model, getattr(self.data, split))

    def evaluate_test(self, assignment: Mapping[str, np.ndarray]) -> Evaluation:
        """Test accuracy of the model quantized by `assignment`, and the mean KL divergence of its test predictions
        from the full-precision model's: how faithful the answer is on inputs no search measures, with far less
        noise than the accuracy of a small test split. For reports only: never counted, never memoised."""
        test = self.data.test
        reference = log_probs(self.model, test)
        with self.quantizer.quantized(assignment):
            return evaluate(self.model, test, reference)


def _budget(settings: ProblemSettings, layers: Sequence[LayerInfo]) -> Budget:
    if (settings.budget_bits is None) == (settings.budget_mb is None):
        raise CwhawqError("give exactly one budget: --budget-bits (average weight bits) or --budget-mb")
    if settings.budget_mb is not None:
        return Budget.from_megabytes(settings.budget_mb)
    return Budget.from_average_bits(layers, settings.budget_bits)


def build_problem(settings: ProblemSettings, progress: bool = True) -> QuantProblem:
    """Load data and model by name (built-ins trained once and cached), then `prepare_problem`."""
    resolve_device(settings.device)  # refuse a device that cannot be used before minutes of loading and training
    torch.manual_seed(settings.seed)
    if ":" not in settings.model and settings.model not in BUILTIN_MODELS:
        raise unknown_model_error(settings.model)
    dataset = settings.dataset or BUILTIN_MODELS.get(settings.model)
    if dataset is None:
        raise CwhawqError(f"model {settings.model!r} is not built in, so name its data with --dataset")
    data = load_dataset(dataset, seed=settings.seed)
    model = load_model(
        settings.model, data, checkpoint=settings.checkpoint, cache_dir=_cache_dir(settings), seed=settings.seed
    )
    return prepare_problem(model, data, settings, progress=progress)


def _cache_dir(settings: ProblemSettings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()


def prepare_problem(
    model: nn.Module, data: DataSplits, settings: ProblemSettings, progress: bool = True
) -> QuantProblem:
    """Bake computed weights, fold BatchNorm, select the logits of a tuple or dict output, find the layers, set and
    check the budget, estimate (or load cached) channel traces.

    `model` is any trained classifier for `data`; it is not modified (folding works on a copy; without folding,
    the model itself is moved to `settings.device`). Settings naming the model, dataset and checkpoint are ignored
    here.
    """
    torch.manual_seed(settings.seed)
    if settings.objective not in OBJECTIVES:
        raise CwhawqError(f"unknown objective {settings.objective!r}; use one of {list(OBJECTIVES)}")
    if settings.channel_order not in CHANNEL_ORDERS:
        raise CwhawqError(f"unknown channel order {settings.channel_order!r}; use one of {list(CHANNEL_ORDERS)}")
    bit_widths = validate_bit_widths(settings.bit_widths)
    device = resolve_device(settings.device)
    name = type(model).__name__
    model = eager_module(model, name)
    model = bake_parametrized_weights(model)
    model = (fold_batchnorm(model) if settings.fold_bn else model.eval()).to(device)
    model = logits_only(model, data, name)
    layers = discover_layers(model, data.train.x[:1], pin=settings.pin)
    budget = _budget(settings, layers)
    budget.check(layers, bit_widths)
    left_fp32 = unquantized_weights(model, layers)
    if left_fp32:
        listed = ", ".join(list(left_fp32)[:3]) + (", ..." if len(left_fp32) > 3 else "")
        warnings.warn(
            f"{len(left_fp32)} weight tensor(s) ({sum(left_fp32.values()):,} values: {listed}) are not in a "
            "layer that runs (convolution, Linear, embedding, attention, recurrent), so they stay FP32 outside the "
            "budget; result.json reports their size (totals.unquantized_fp32_bytes)",
            stacklevel=2,
        )
    trace_batches = batches(data.train, settings.traces.batch_size, settings.traces.num_batches)
    traces = cached_channel_traces(
        model,
        layers,
        trace_batches,
        _cache_dir(settings),
        max_probes=settings.traces.max_probes,
        tol=settings.traces.tol,
        reliability=settings.traces.reliability,
        probe_data=settings.traces.probe_data,
        seed=settings.seed,
        progress=progress,
    )
    for name, values in traces.traces.items():
        if not np.all(np.isfinite(values)):
            raise CwhawqError(f"Hessian traces of layer {name!r} are not finite; check the model and data for NaNs")
    quantizer = WeightQuantizer(model, layers)
    fp_val_log_probs = log_probs(model, data.val)
    # Measured whatever the objective, so that a recorded KL divergence means one thing.
    kl_extra = None
    if settings.kl_train_samples:
        kl_extra = Split(data.train.x[: settings.kl_train_samples], data.train.y[: settings.kl_train_samples])
    fp_val = accuracy(model, data.val)
    if fp_val <= 1.5 / data.num_classes:
        # Still searchable (smoke tests use random weights), but the weights are most likely not the trained ones.
        warnings.warn(
            f"the full-precision model reaches only {fp_val:.1%} validation accuracy (near chance); "
            "are its weights trained? (--checkpoint loads them)",
            stacklevel=2,
        )
    return QuantProblem(
        model, data, layers, traces, budget, bit_widths, fp_val, quantizer, fp_val_log_probs, settings.objective,
        settings.channel_order, kl_extra, log_probs(model, kl_extra) if kl_extra is not None else None,
    )  # fmt: skip
