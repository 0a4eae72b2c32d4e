"""Tests for cwhawq.models and cwhawq.evaluation: builtins, user models, checkpoints, training and its cache."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from cwhawq import models as models_module
from cwhawq.data import DataSplits, Split, load_dataset
from cwhawq.errors import CwhawqError
from cwhawq.evaluation import accuracy
from cwhawq.layers import discover_layers
from cwhawq.models import BUILTIN_MODELS, build_builtin, default_cache_dir, load_model, train_classifier

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "mnist1d": (1, 40)}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # tiny models train faster on one thread, and far faster when the cores are shared with other processes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_builtin_architectures(name: str) -> None:
    shape = SHAPES[BUILTIN_MODELS[name]]
    model = build_builtin(name, 7, shape)
    assert model(torch.rand(3, *shape)).shape == (3, 7)
    assert len(discover_layers(model, torch.rand(1, *shape))) >= 3


def test_builtin_layer_names() -> None:
    resnet = build_builtin("resnet_mini", 10, (1, 28, 28))
    names = [layer.name for layer in discover_layers(resnet, torch.rand(1, 1, 28, 28))]
    assert names == [
        "conv1", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2", "layer2.shortcut.0",
        "layer3.conv1", "layer3.conv2", "layer3.shortcut.0", "fc",
    ]
    lenet = discover_layers(build_builtin("lenet5", 10, (1, 28, 28)), torch.rand(1, 1, 28, 28))
    assert [(layer.name, layer.out_channels) for layer in lenet] == [
        ("conv1", 6), ("conv2", 16), ("fc1", 120), ("fc2", 84), ("fc3", 10),
    ]
    assert lenet[2].in_channels == 16 * 5 * 5


def test_builtin_on_too_small_input_is_an_error() -> None:
    with pytest.raises(CwhawqError, match="lenet5.*mnist"):
        build_builtin("lenet5", 10, (1, 4, 4))


def test_unknown_model_lists_choices(digits: DataSplits, tmp_path: Path) -> None:
    with pytest.raises(CwhawqError, match="unknown model 'vgg16'") as info:
        load_model("vgg16", digits, cache_dir=tmp_path)
    assert all(name in str(info.value) for name in BUILTIN_MODELS)
    with pytest.raises(CwhawqError, match="unknown model"):
        build_builtin("vgg16", 10, (1, 8, 8))


def test_train_and_cache_digits_cnn(digits: DataSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng_state = torch.random.get_rng_state()
    model = load_model("digits_cnn", digits, cache_dir=tmp_path)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # training used its own seeded stream
    assert not model.training
    assert accuracy(model, digits.val) >= 0.9
    (cached,) = tmp_path.glob("digits_cnn-digits-seed0-*.pt")

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached weights should have been reused")

    monkeypatch.setattr(models_module, "train_classifier", no_training)
    start = time.perf_counter()
    again = load_model("digits_cnn", digits, cache_dir=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # a different seed or different training data is a different cache entry
    with pytest.raises(AssertionError, match="cached"):
        load_model("digits_cnn", digits, cache_dir=tmp_path, seed=1)
    with pytest.raises(AssertionError, match="cached"):
        load_model("digits_cnn", load_dataset("digits", seed=1), cache_dir=tmp_path)
    monkeypatch.undo()
    original = cached.read_bytes()
    cached.write_bytes(original[:1000])  # damaged on disk: a cache miss that trains the same weights again
    with pytest.warns(UserWarning, match="ignoring unreadable cached weights .*; training again"):
        retrained = load_model("digits_cnn", digits, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), retrained.state_dict().values()))
    assert cached.read_bytes() == original


def test_training_is_deterministic_under_seed(digits: DataSplits) -> None:
    def trained(seed: int) -> nn.Module:
        torch.manual_seed(0)
        return train_classifier(build_builtin("digits_cnn", 10, (1, 8, 8)), digits, epochs=1, seed=seed)

    a, b, c = trained(0), trained(0), trained(1)
    assert not a.training
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.fc2.weight, c.fc2.weight)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CWHAWQ_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("CWHAWQ_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "cwhawq"


USER_MODULE = """
import torch
from torch import nn

def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

def wrong_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

def not_a_model():
    return 42

def broken():
    raise RuntimeError("boom")

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten, self.head, self.aux = nn.Flatten(), nn.Linear(64, 10), nn.Linear(64, 2)

    def forward(self, x):
        return self.head(self.flatten(x)), self.aux(self.flatten(x))

def two_heads():
    return TwoHeads()

def double():
    return make().double()

class NoLogits(TwoHeads):
    def forward(self, x):
        return {"aux": self.aux(self.flatten(x))}

def no_logits():
    return NoLogits()

def scripted():
    return torch.jit.script(make())

def compiled():
    return torch.compile(make())

def nan_weights():
    model = make()
    model[1].bias.data[3] = float("nan")
    return model
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user module in a fresh working directory that is not on sys.path."""
    name = "cwhawq_test_user_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_module_function_spec(user_module: str, digits: DataSplits) -> None:
    model = load_model(f"{user_module}:make", digits)
    assert isinstance(model, nn.Sequential) and not model.training
    assert model(digits.val.x[:5]).shape == (5, 10)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("missing", "cannot import .*AttributeError"),
        ("not_a_model", "not a torch.nn.Module"),
        ("broken", "cannot import .*RuntimeError: boom"),
        ("wrong_classes", r"expected \(2, 10\)"),
        ("scripted", r"is a TorchScript module; cwhawq needs the Python nn.Module: pass the model before"),
        ("nan_weights", r"holds NaN or infinite values in 1.bias; check the checkpoint"),
        ("no_logits", r"outputs a dict with no entry of shape \(2, 10\) .* under the key 'logits'"),
        ("double", r"has torch.float64 weights.* model.float\(\)"),
    ],
)
def test_module_function_errors(user_module: str, digits: DataSplits, function: str, message: str) -> None:
    with pytest.raises(CwhawqError, match=message) as info:
        load_model(f"{user_module}:{function}", digits)
    assert "\n" not in str(info.value)


def test_a_compiled_model_is_measured_uncompiled(user_module: str, digits: DataSplits) -> None:
    with pytest.warns(UserWarning, match="compiled with torch.compile; cwhawq measures the module inside it"):
        model = load_model(f"{user_module}:compiled", digits)
    assert isinstance(model, nn.Sequential)  # layer names without the wrapper's "_orig_mod." prefix


def test_a_model_returning_a_tuple_is_loaded_as_it_is(user_module: str, digits: DataSplits) -> None:
    """The logits are picked later (`cwhawq.model_output`); loading only checks that they can be found."""
    model = load_model(f"{user_module}:two_heads", digits)
    logits, aux = model(digits.val.x[:3])
    assert logits.shape == (3, 10) and aux.shape == (3, 2)


@pytest.mark.parametrize("spec", ["no_such_module_xyz:make", "nofunction:", ":make"])
def test_unimportable_spec(spec: str, digits: DataSplits) -> None:
    with pytest.raises(CwhawqError, match="cannot import"):
        load_model(spec, digits)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod."])  # saved from DataParallel / torch.compile
def test_checkpoint_round_trip(
    user_module: str, digits: DataSplits, tmp_path: Path, wrapper: str | None, prefix: str
) -> None:
    torch.manual_seed(3)
    source = load_model(f"{user_module}:make", digits)
    state = source.state_dict()
    path = tmp_path / "weights.pt"
    saved = {prefix + key: value for key, value in state.items()}
    torch.save(saved if wrapper is None else {wrapper: saved, "epoch": 3}, path)
    torch.manual_seed(4)  # a differently initialised instance must end up with the saved weights
    loaded = load_model(f"{user_module}:make", digits, checkpoint=str(path))
    assert all(torch.equal(a, b) for a, b in zip(state.values(), loaded.state_dict().values()))


def test_checkpoint_overrides_builtin_training(digits: DataSplits, tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = build_builtin("digits_cnn", 10, (1, 8, 8))
    path = tmp_path / "digits.pt"
    torch.save(source.state_dict(), path)
    cache = tmp_path / "cache"
    loaded = load_model("digits_cnn", digits, checkpoint=str(path), cache_dir=cache)
    assert not cache.exists()  # nothing was trained
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)


def test_missing_checkpoint(digits: DataSplits, tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(CwhawqError, match=f"checkpoint not found: {path}"):
        load_model("digits_cnn", digits, checkpoint=str(path), cache_dir=tmp_path)


def test_checkpoint_with_wrong_keys(digits: DataSplits, tmp_path: Path) -> None:
    path = tmp_path / "lenet.pt"
    torch.save(build_builtin("lenet5", 10, (1, 28, 28)).state_dict(), path)
    with pytest.raises(CwhawqError, match="does not match the model") as info:
        load_model("digits_cnn", digits, checkpoint=str(path), cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_checkpoint_with_wrong_shapes(digits: DataSplits, tmp_path: Path) -> None:
    state = build_builtin("digits_cnn", 3, (1, 8, 8)).state_dict()
    path = tmp_path / "three_classes.pt"
    torch.save(state, path)
    with pytest.raises(CwhawqError, match="does not match the model") as info:
        load_model("digits_cnn", digits, checkpoint=str(path), cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_unreadable_checkpoint(digits: DataSplits, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CwhawqError, match="state_dict"):
        load_model("digits_cnn", digits, checkpoint=str(path), cache_dir=tmp_path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CwhawqError, match="no state_dict"):
        load_model("digits_cnn", digits, checkpoint=str(path), cache_dir=tmp_path)


def test_accuracy_counts_and_restores_mode() -> None:
    class Echo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert not self.training
            return x * self.scale

    x = torch.eye(4)[[0, 1, 2, 3, 0]]
    split = Split(x=x, y=torch.tensor([0, 1, 2, 0, 0]))
    model = Echo().train()
    assert accuracy(model, split, batch_size=2) == pytest.approx(4 / 5)
    assert model.training
    assert accuracy(model, Split(x=torch.zeros(0, 4), y=torch.zeros(0, dtype=torch.int64))) == 0.0


def test_integer_inputs_to_a_model_without_an_embedding_get_the_fix(user_module: str, tmp_path: Path) -> None:
    digits = load_digits()
    np.savez(tmp_path / "pixels.npz", x=digits.images.astype(np.uint8), y=digits.target)  # images saved as bytes
    data = load_dataset(str(tmp_path / "pixels.npz"), seed=0)
    with pytest.raises(CwhawqError, match=r"token ids \(int64\): store other inputs as floats") as info:
        load_model(f"{user_module}:make", data)
    assert "\n" not in str(info.value)
