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
from cwhawq.data import DataSplits, Split, load_dataset
from cwhawq.errors import CwhawqError
from cwhawq.model_output import LogitsLocation, find_logits, logits_location, logits_only, two_class_logits
from tests.toy_models import DigitsBinary, DigitsDictOutput

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
    assert logits_location(logits(), SHAPE) is None


def test_a_tensor_of_another_shape_is_refused() -> None:
    with pytest.raises(CwhawqError, match=r"outputs \(2, 3\) for 2 samples, expected \(2, 10\) logits"):
        logits_location(torch.zeros(2, 3), SHAPE)


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
    assert logits_location(output, SHAPE) == LogitsLocation(key)


@given(position=st.integers(0, 5), others=st.lists(st.integers(1, 9), min_size=5, max_size=5))
def test_the_only_entry_of_the_logits_shape_is_found_anywhere(position: int, others: list[int]) -> None:
    entries = [torch.zeros(2, width) for width in others]
    entries.insert(position, logits())
    assert logits_location(tuple(entries), SHAPE) == LogitsLocation(position)
    assert logits_location({f"k{i}": entry for i, entry in enumerate(entries)}, SHAPE) == LogitsLocation(f"k{position}")


@pytest.mark.parametrize(
    ("output", "location"),
    [
        (torch.zeros(2), LogitsLocation(single_logit=True)),
        (torch.zeros(2, 1), LogitsLocation(single_logit=True)),
        ({"logits": torch.zeros(2, 1), "hidden": torch.zeros(2, 8)}, LogitsLocation("logits", single_logit=True)),
        ((torch.zeros(2, 1), torch.zeros(2, 2)), LogitsLocation(1)),  # two logits per sample are preferred
    ],
)
def test_a_binary_classifiers_single_logit_is_found(output: object, location: LogitsLocation) -> None:
    assert logits_location(output, (2, 2)) == location


def test_a_single_logit_is_not_taken_for_more_than_two_classes() -> None:
    with pytest.raises(CwhawqError, match=r"outputs \(2, 1\) for 2 samples, expected \(2, 3\) logits"):
        logits_location(torch.zeros(2, 1), (2, 3))


@given(st.lists(st.floats(-30, 30), min_size=1, max_size=8))
def test_two_class_logits_give_the_binary_cross_entropy(values: list[float]) -> None:
    logit = torch.tensor(values, dtype=torch.float64)
    target = (logit > 0).long()
    expanded = two_class_logits(logit)
    assert expanded.shape == (len(values), 2)
    assert torch.allclose(torch.softmax(expanded, dim=1)[:, 1], torch.sigmoid(logit))
    bce = nn.functional.binary_cross_entropy_with_logits(logit, target.double())
    assert torch.allclose(nn.functional.cross_entropy(expanded, target), bce)


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
        logits_location(output, SHAPE)
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


@pytest.mark.parametrize("fold", [False, True], ids=["hook", "graph"])
def test_a_single_logit_model_returns_two_class_logits(digits: DataSplits, fold: bool) -> None:
    parts = [Split(split.x[split.y < 2], split.y[split.y < 2]) for split in (digits.train, digits.val, digits.test)]
    binary = DataSplits("zeros and ones", *parts, num_classes=2)
    model = DigitsBinary().eval()
    measured = fold_batchnorm(model) if fold else model
    with pytest.warns(UserWarning, match=r"uses the output, a single logit z expanded to the logits \(0, z\)"):
        selecting = logits_only(measured, binary, "DigitsBinary")
    assert isinstance(selecting, fx.GraphModule) == fold
    x = digits.val.x[:4]
    logit = model(x)[:, 0]
    for candidate in (selecting, pickled(selecting)):
        logits = candidate(x)
        assert logits.shape == (4, 2) and torch.all(logits[:, 0] == 0)
        assert torch.allclose(logits[:, 1], logit, atol=1e-5)
