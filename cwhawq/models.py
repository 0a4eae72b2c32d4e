"""Built-in models (trained on first use and cached), user models from "module:function", and checkpoints."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cwhawq.cache import default_cache_dir
from cwhawq.data import DataSplits
from cwhawq.errors import CwhawqError
from cwhawq.model_output import find_logits

# Bump when an architecture or the training recipe changes, so stale cached weights are not reused.
TRAINING_VERSION = "1"

BUILTIN_MODELS: dict[str, str] = {
    "digits_cnn": "digits",
    "lenet5": "mnist",
    "resnet_mini": "mnist",
    "mlp1d": "mnist1d",
    "cnn1d": "mnist1d",
}

# Epochs and learning rate of the one-off training of each builtin: enough for a stable accuracy in seconds on a CPU.
TRAINING_RECIPES: dict[str, tuple[int, float]] = {
    "digits_cnn": (10, 3e-3),
    "lenet5": (10, 3e-3),
    "resnet_mini": (5, 3e-3),
    "mlp1d": (30, 2e-3),
    "cnn1d": (30, 3e-3),
}

BATCH_SIZE = 64


def _flat_features(features: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


class DigitsCNN(nn.Module):
    """Two conv+BN+ReLU blocks and a two-layer classifier, sized for 1x8x8 digits."""

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        features = _flat_features(self._features, input_shape)
        self.fc1 = nn.Linear(features, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


class LeNet5(nn.Module):
    """LeNet-5 (6@5x5 pad 2, pool, 16@5x5, pool, 120, 84, classes) with ReLU and max pooling."""

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        features = _flat_features(self._features, input_shape)
        self.fc1 = nn.Linear(features, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self._features(x), 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetMini(nn.Module):
    """Strided stem conv, three one-block stages (16/32/64 channels, stride 1/2/2), global average pool, classifier.

    The stride-2 stem (28x28 -> 14x14) makes training four times cheaper at no cost in MNIST accuracy.
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MLP1d(nn.Module):
    """Two hidden ReLU layers on the flattened 1-D signal."""

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        features = 1
        for size in input_shape:
            features *= size
        self.fc1 = nn.Linear(features, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN1d(nn.Module):
    """Three strided Conv1d+BN+ReLU layers (the MNIST-1D reference CNN with BatchNorm) and a linear classifier."""

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(input_shape[0], 32, 5, stride=2, padding=1)
        self.bn1 = nn.BatchNorm1d(32)
        self.conv2 = nn.Conv1d(32, 32, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm1d(32)
        self.conv3 = nn.Conv1d(32, 32, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm1d(32)
        features = _flat_features(self._features, input_shape)
        self.fc = nn.Linear(features, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.relu(self.bn3(self.conv3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self._features(x), 1))


_BUILDERS: dict[str, Callable[[int, Sequence[int]], nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "lenet5": LeNet5,
    "resnet_mini": ResNetMini,
    "mlp1d": MLP1d,
    "cnn1d": CNN1d,
}


def unknown_model_error(name: str) -> CwhawqError:
    """The error for a model name that is neither a builtin nor 'module:function', listing the builtins."""
    return CwhawqError(
        f"unknown model {name!r}; choose a builtin ({', '.join(BUILTIN_MODELS)}) or give 'package.module:function'"
    )


def build_builtin(name: str, num_classes: int, input_shape: Sequence[int]) -> nn.Module:
    """Build the untrained architecture of builtin model ``name`` for the given classes and per-sample input shape."""
    if name not in _BUILDERS:
        raise unknown_model_error(name)
    try:
        return _BUILDERS[name](num_classes, tuple(input_shape))
    except (RuntimeError, IndexError) as exc:
        raise CwhawqError(
            f"model {name!r} does not fit inputs of shape {tuple(input_shape)} ({str(exc).splitlines()[0]}); "
            f"use it with dataset {BUILTIN_MODELS[name]!r}"
        ) from None


def train_classifier(model: nn.Module, data: DataSplits, epochs: int, seed: int, lr: float = 1e-3) -> nn.Module:
    """Train ``model`` on ``data.train``: Adam with cosine decay, cross-entropy, batch 64, order fixed by ``seed``.

    Returns the model in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.train.x, data.train.y
    # cosine decay to zero: the last epochs settle, so the final accuracy does not depend on a lucky last step
    steps = epochs * -(-len(y) // BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            if len(index) < 2 and start > 0:
                continue  # a trailing batch of one would break BatchNorm's batch statistics
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def _cache_path(name: str, data: DataSplits, seed: int, cache_dir: Path) -> Path:
    # the training data's digest covers the split seed, which DataSplits does not record
    digest = hashlib.sha256()
    digest.update(data.train.x.numpy().tobytes())
    digest.update(data.train.y.numpy().tobytes())
    return cache_dir / f"{name}-{data.name}-seed{seed}-v{TRAINING_VERSION}-{digest.hexdigest()[:12]}.pt"


def _trained_builtin(name: str, data: DataSplits, cache_dir: Path, seed: int) -> nn.Module:
    path = _cache_path(name, data, seed, cache_dir)
    # the caller's global torch RNG stream must not depend on whether the weights were cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_builtin(name, data.num_classes, data.input_shape)
        if path.is_file():
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                return model.eval()
            except Exception as exc:  # a damaged or foreign file is a cache miss, as for the trace cache
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                warnings.warn(f"ignoring unreadable cached weights {path} ({reason}); training again", stacklevel=3)
                torch.manual_seed(seed)  # the same initial weights as a run that found no cache
                model = build_builtin(name, data.num_classes, data.input_shape)
        epochs, lr = TRAINING_RECIPES[name]
        train_classifier(model, data, epochs=epochs, seed=seed, lr=lr)
    path.parent.mkdir(parents=True, exist_ok=True)
    # write then rename, so a concurrent or interrupted run never leaves a truncated cache file behind
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def _import_model(spec: str) -> nn.Module:
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise CwhawqError(f"cannot import {spec!r}: expected 'package.module:function'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, function_name)
        model = factory()
    except Exception as exc:  # a user's module may fail in any way; report it on one line
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise CwhawqError(f"cannot import {spec!r}: {type(exc).__name__}: {message}") from None
    if not isinstance(model, nn.Module):
        raise CwhawqError(f"cannot import {spec!r}: it returned {type(model).__name__}, not a torch.nn.Module")
    return model


#: Key prefixes that wrappers add to a state_dict: nn.DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _without_wrapper_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """``state`` with the prefix a wrapper added to every key removed, when that makes it fit ``expected``."""
    for prefix in WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            stripped = {key[len(prefix) :]: value for key, value in state.items()}
            if set(stripped) == expected:
                return stripped
    return state


def _load_checkpoint(model: nn.Module, checkpoint: str) -> None:
    path = Path(checkpoint)
    if not path.is_file():
        raise CwhawqError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CwhawqError(
            f"cannot read checkpoint {path} as a state_dict ({message}); "
            "save it with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CwhawqError(
            f"checkpoint {path} holds no state_dict; save it with torch.save(model.state_dict(), path)"
        )
    expected = set(model.state_dict())
    state = _without_wrapper_prefix(state, expected)
    found = set(state)
    if expected != found:
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        raise CwhawqError(
            f"checkpoint {path} does not match the model: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}; "
            "load it with the architecture it was saved from"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CwhawqError(f"checkpoint {path} does not match the model: {detail[:300]}") from None


def eager_module(model: nn.Module, name: str) -> nn.Module:
    """The eager module that cwhawq measures: ``model`` itself, the module inside a ``torch.compile`` wrapper (with a
    warning: compiled graphs support no double backward, which the Hessian traces need), or a `CwhawqError` for a
    TorchScript module (no forward hooks to find its layers, no Python weights to quantize in place)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise CwhawqError(
            f"model {name!r} is a TorchScript module; cwhawq needs the Python nn.Module: pass the model before "
            "torch.jit.script / torch.jit.trace"
        )
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module):  # torch.compile's OptimizedModule
        warnings.warn(
            f"model {name!r} is compiled with torch.compile; cwhawq measures the module inside it, uncompiled",
            stacklevel=2,
        )
        return inner
    return model


def load_model(
    spec: str, data: DataSplits, checkpoint: str | None = None, cache_dir: Path | None = None, seed: int = 0
) -> nn.Module:
    """Return an eval-mode model for ``data``: a builtin (trained and cached on first use) or a "module:function" one.

    A ``checkpoint`` (a state_dict file, optionally under a "state_dict" or "model" key) overrides the weights.
    """
    if ":" in spec:
        model = _import_model(spec)
    elif spec not in BUILTIN_MODELS:
        raise unknown_model_error(spec)
    elif checkpoint is not None:
        model = build_builtin(spec, data.num_classes, data.input_shape)
    else:
        model = _trained_builtin(spec, data, cache_dir or default_cache_dir(), seed)
    model = eager_module(model, spec)
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint)
    model.eval()
    find_logits(model, data, spec)  # fail here, before minutes of traces, on a model that cannot be measured
    return model
