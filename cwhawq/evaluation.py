"""Classification accuracy of a model on a data split."""

from __future__ import annotations

import torch
from torch import nn

from cwhawq.data import Split


def accuracy(model: nn.Module, split: Split, batch_size: int = 2048) -> float:
    """Fraction of ``split`` classified correctly, in eval mode without autograd; the model's mode is restored."""
    if len(split.y) == 0:
        return 0.0
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = {module: module.training for module in model.modules()}
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(split.y), batch_size):
                x = split.x[start : start + batch_size].to(device)
                y = split.y[start : start + batch_size].to(device)
                correct += int((model(x).argmax(dim=1) == y).sum())
    finally:
        for module, training in was_training.items():
            module.training = training
    return correct / len(split.y)
