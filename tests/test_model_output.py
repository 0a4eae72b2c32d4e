"""Tests for cwhawq.model_output: finding the logits in tuple and dict outputs, and returning only them."""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import fx, nn

from cwhawq.bn_fold import fold_batchnorm
from cwhawq.data import DataSplits, load_dataset
from cwhawq.errors import CwhawqError
from cwhawq.model_output import find_logits, logits_key, logits_only
from tests.toy_models import DigitsDictOutput

SHAPE = (2, 10)


def logits() -> torch.Tensor:
    return torch.zeros(SHAPE)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


class TwoHeads(nn.Module):
    """Logits and an auxiliary head's output, in a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.aux = nn.Linear(64, 10), nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        return self.aux(flat), self.head(flat)


def test_a_tensor_needs_no_selection() -> None:
    assert logits_key(logits(), SHAPE) is None


def test_a_tensor_of_another_shape_is_refused() -> None:
    with pytest.raises(CwhawqError, match=r"outputs \(2, 3\) for 2 samples, expected \(2, 10\) logits"):
        logits_key(torch.zeros(2, 3), SHAPE)


@pytest.mark.parametrize(
    ("output", "key"),
    [
        ({"hidden": torch.zeros(2, 5), "logits": logits()}, "logits"),
        (OrderedDict(logits=logits(), pooled=logits()), "logits"),  # a ModelOutput is an OrderedDict
        ({"scores": logits(), "hidden": torch.zeros(2, 5)}, "scores"),
        ((logits(), logits()), 0),  # torchvision's auxiliary heads come after the logits
        ([torch.zeros(2, 3), logits()], 1),
    ],
)
def test_the_logits_entry_is_found(output: object, key: int | str) -> None:
    assert logits_key(output, SHAPE) == key


@given(position=st.integers(0, 5), others=st.lists(st.integers(1, 9), min_size=5, max_size=5))
def test_the_only_entry_of_the_logits_shape_is_found_anywhere(position: int, others: list[int]) -> None:
    entries = [torch.zeros(2, width) for width in others]
    entries.insert(position, logits())
    assert logits_key(tuple(entries), SHAPE) == position
    assert logits_key({f"k{i}": entry for i, entry in enumerate(entries)}, SHAPE) == f"k{position}"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"a": logits(), "b": logits()}, r"dict with 2 entries of shape \(2, 10\)"),
        ((torch.zeros(2, 3), None), r"tuple with no entry of shape \(2, 10\) \(\[0\] \(2, 3\), \[1\] NoneType\)"),
        ("text", r"outputs a str, expected \(2, 10\) logits"),
    ],
)
def test_outputs_without_one_clear_logits_entry_are_refused(output: object, message: str) -> None:
    with pytest.raises(CwhawqError, match=message) as info:
        logits_key(output, SHAPE)
    assert "\n" not in str(info.value)


def test_find_logits_names_the_model(digits: DataSplits) -> None:
    with pytest.raises(CwhawqError, match=r"^model 'mine' outputs \(2, 3\) for 2 samples"):
        find_logits(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), digits, "mine")


def pickled(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_a_plain_module_gets_a_hook_that_survives_pickling(digits: DataSplits) -> None:
    model = TwoHeads()
    x = digits.val.x[:4]
    with pytest.warns(UserWarning, match=r"uses output\[1\] as the logits"):
        selecting = logits_only(model, digits, "TwoHeads")
    expected = model(x)[1]
    assert torch.equal(selecting(x), expected)
    assert torch.equal(pickled(selecting)(x), expected)
    assert isinstance(model(x), tuple)  # the user's model is left as it was


def test_a_traced_model_returns_the_logits_from_its_graph(digits: DataSplits) -> None:
    model = DigitsDictOutput().eval()
    folded = fold_batchnorm(model)
    assert isinstance(folded, fx.GraphModule)
    with pytest.warns(UserWarning, match=r"uses output\['logits'\]"):
        selecting = logits_only(folded, digits, "DigitsDictOutput")
    x = digits.val.x[:4]
    expected = model(x)["logits"]
    assert torch.allclose(selecting(x), expected, atol=1e-5)
    assert torch.allclose(pickled(selecting)(x), expected, atol=1e-5)  # pickling a GraphModule drops hooks
    assert isinstance(folded(x), dict)


def test_a_graph_returning_a_leaf_modules_tuple_gets_a_getitem(digits: DataSplits) -> None:
    graph = fx.Graph()
    graph.output(graph.call_module("heads", (graph.placeholder("x"),)))
    traced = fx.GraphModule({"heads": TwoHeads()}, graph)
    with pytest.warns(UserWarning):
        selecting = logits_only(traced, digits, "heads")
    x = digits.val.x[:4]
    assert torch.equal(pickled(selecting)(x), traced(x)[1])


def test_a_model_returning_logits_is_not_copied(digits: DataSplits) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert logits_only(model, digits, "mlp") is model
