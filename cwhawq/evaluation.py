"""How well a (quantized) model does on a data split: accuracy, and how far its predictions drift from a reference.

The drift is the mean KL divergence KL(reference || model) of the predicted class distributions, with the
full-precision model's as the reference. It is what the "kl" search objective minimises: on a small validation
split, accuracy moves in steps of one image and saturates near the full-precision model's, so the best of a few
hundred candidates by accuracy is mostly the luckiest one; the KL divergence measures every image's prediction and
ranks candidates with far less noise (docs/BENCHMARKS.md, change 20). It needs no labels, so it can also be measured
on extra inputs (a search adds training inputs: `ProblemSettings.kl_train_samples`, change 36).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from cwhawq.data import Split


@dataclass(frozen=True)
class Evaluation:
    """A model's accuracy on a split and the mean KL divergence of its predictions from a reference's (0 without
    a reference)."""

    accuracy: float
    kl: float = 0.0

    def score(self, objective: str) -> float:
        """Higher is better: the accuracy, or the negated KL divergence for the "kl" objective."""
        return self.accuracy if objective == "accuracy" else -self.kl


@contextmanager
def _inference(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode without autograd; the model's per-module training flags are restored afterwards."""
    param = next(model.parameters(), None)
    was_training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield param.device if param is not None else torch.device("cpu")
    finally:
        for module, training in was_training.items():
            module.training = training


def log_probs(model: nn.Module, split: Split, batch_size: int = 2048) -> torch.Tensor:
    """The model's log class probabilities for every sample of `split`, on the CPU."""
    with _inference(model) as device:
        chunks = [
            torch.log_softmax(model(split.x[start : start + batch_size].to(device)).float(), dim=1).cpu()
            for start in range(0, len(split.y), batch_size)
        ]
    return torch.cat(chunks) if chunks else torch.empty(0)


def evaluate(
    model: nn.Module,
    split: Split,
    reference: torch.Tensor | None = None,
    batch_size: int = 2048,
    extra: Split | None = None,
    extra_reference: torch.Tensor | None = None,
) -> Evaluation:
    """Accuracy on `split` and, given the `reference` log probabilities of its samples (`log_probs`), the mean
    KL(reference || model); predictions that are not finite count as infinitely far. With `extra` samples (their labels
    unused) and their `extra_reference`, the mean KL divergence is taken over the split's samples and those together."""
    if len(split.y) == 0:
        return Evaluation(0.0)
    correct, kl, count = 0, 0.0, len(split.y)
    with _inference(model) as device:
        for start in range(0, len(split.y), batch_size):
            logits = model(split.x[start : start + batch_size].to(device)).float()
            correct += int((logits.argmax(dim=1) == split.y[start : start + batch_size].to(device)).sum())
            if reference is not None:
                kl += _kl_sum(logits, reference[start : start + batch_size].to(device))
        if reference is not None and extra is not None and extra_reference is not None:
            count += len(extra)
            for start in range(0, len(extra), batch_size):
                logits = model(extra.x[start : start + batch_size].to(device)).float()
                kl += _kl_sum(logits, extra_reference[start : start + batch_size].to(device))
    return Evaluation(correct / len(split.y), kl / count if math.isfinite(kl) else math.inf)


def _kl_sum(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Summed KL(reference || softmax(logits)) over a batch, `reference` as log probabilities."""
    return float(nn.functional.kl_div(torch.log_softmax(logits, 1), reference, reduction="sum", log_target=True))


def accuracy(model: nn.Module, split: Split, batch_size: int = 2048) -> float:
    """Fraction of ``split`` classified correctly, in eval mode without autograd; the model's mode is restored."""
    return evaluate(model, split, batch_size=batch_size).accuracy
