"""Models for tests, importable as 'tests.toy_models:function'."""

from torch import nn


def no_layers() -> nn.Module:
    """A model that outputs 10 logits but has nothing to quantize."""
    return nn.Sequential(nn.Flatten(), nn.AdaptiveAvgPool1d(10))


def digits_mlp() -> nn.Module:
    """An MLP for 1x8x8 digits: another architecture than the default CNN (random weights)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
