"""Tests for cwhawq.export: the quantized model written beside result.json reproduces what result.json reports."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cwhawq.baselines import run_method
from cwhawq.data import load_dataset
from cwhawq.errors import CwhawqError
from cwhawq.evaluation import accuracy
from cwhawq.export import (
    PACKED_WEIGHTS_FILE,
    QUANTIZED_MODEL_FILE,
    dequantized_weight,
    load_packed_model,
    load_packed_weights,
    load_quantized_model,
    save_packed_weights,
    save_quantized_model,
)
from cwhawq.layers import layer_weight
from cwhawq.packing import packed_size
from cwhawq.problem import QuantProblem, build_problem, prepare_problem
from cwhawq.result import build_result, write_result
from tests.conftest import small_settings
from tests.toy_models import DigitsDictOutput


def test_the_saved_model_reproduces_the_result(digits_problem: QuantProblem, tmp_path) -> None:
    problem = digits_problem
    assignment = run_method(problem, "greedy-channel")
    result = build_result(problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})
    originals = {layer.name: layer_weight(problem.model, layer.name).clone() for layer in problem.layers}
    write_result(tmp_path, problem, result)
    saved = load_quantized_model(tmp_path / QUANTIZED_MODEL_FILE)
    assert accuracy(saved["model"], problem.data.test) == result["accuracy"]["quantized_test"]
    stored_bits = 0
    for layer in problem.layers:
        entry = saved["layers"][layer.name]
        assert np.array_equal(entry["bits"].numpy(), assignment[layer.name])
        assert torch.equal(dequantized_weight(entry), layer_weight(saved["model"], layer.name))
        stored_bits += int(entry["bits"].sum()) * layer.params_per_channel
        # the problem's own model is left at full precision
        assert torch.equal(layer_weight(problem.model, layer.name), originals[layer.name])
    assert stored_bits == result["totals"]["weight_bits"]
    model_state = saved["model"].state_dict()
    assert saved["state_dict"].keys() == model_state.keys()
    assert all(torch.equal(value, model_state[key]) for key, value in saved["state_dict"].items())


def test_the_packed_weights_are_the_measured_weights_at_the_reported_size(digits_problem: QuantProblem, tmp_path):
    problem = digits_problem
    assignment = run_method(problem, "greedy-channel")
    result = build_result(problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})
    write_result(tmp_path, problem, result)
    model = load_quantized_model(tmp_path / QUANTIZED_MODEL_FILE)["model"]
    weights = load_packed_weights(tmp_path / PACKED_WEIGHTS_FILE)
    assert weights.keys() == {layer.name for layer in problem.layers}
    assert all(torch.equal(weights[layer.name], layer_weight(model, layer.name)) for layer in problem.layers)
    with zipfile.ZipFile(tmp_path / PACKED_WEIGHTS_FILE) as archive:
        members = {info.filename: info for info in archive.infolist()}
    assert all(info.compress_type == zipfile.ZIP_STORED for info in members.values())  # sizes are not zipped away
    with np.load(tmp_path / PACKED_WEIGHTS_FILE) as stored:
        code_bytes = sum(stored[key].nbytes for key in stored.files if "|codes" in key)
        scale_bytes = sum(stored[key].nbytes for key in stored.files if key.endswith("|scales"))
    expected = 0
    for layer in problem.layers:
        widths, channels = np.unique(assignment[layer.name], return_counts=True)
        expected += sum(packed_size(int(n) * layer.params_per_channel, int(b)) for b, n in zip(widths, channels))
    assert code_bytes == expected
    # every width's codes add at most one byte of padding to the size result.json reports
    assert result["totals"]["weight_bytes"] <= code_bytes < result["totals"]["weight_bytes"] + len(members)
    assert scale_bytes == result["totals"]["scale_overhead_bytes"]


def test_a_layer_pinned_at_fp32_has_no_codes(cache_dir, tmp_path) -> None:
    problem = build_problem(small_settings(cache_dir, pin={"conv1": 32}, budget_bits=3.0), progress=False)
    assignment = run_method(problem, "greedy-channel")
    save_quantized_model(problem, assignment, tmp_path / QUANTIZED_MODEL_FILE)
    entry = load_quantized_model(tmp_path / QUANTIZED_MODEL_FILE)["layers"]["conv1"]
    assert entry["codes"] is None and entry["scales"] is None and bool((entry["bits"] == 32).all())
    with pytest.raises(CwhawqError, match="kept at FP32"):
        dequantized_weight(entry)
    save_packed_weights(problem, assignment, tmp_path / PACKED_WEIGHTS_FILE)
    weights = load_packed_weights(tmp_path / PACKED_WEIGHTS_FILE)
    assert torch.equal(weights["conv1"], problem.quantizer.original_weight("conv1"))


class Unpicklable(nn.Module):
    """A classifier holding a lambda, which pickle refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)
        self.flatten = lambda x: x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(x))


def test_an_unpicklable_model_is_saved_as_a_state_dict_and_codes(cache_dir, tmp_path) -> None:
    data = load_dataset("digits", seed=0)
    settings = small_settings(cache_dir, fold_bn=False)  # folding would trace the lambda away
    with pytest.warns(UserWarning):  # random weights: near chance
        problem = prepare_problem(Unpicklable(), data, settings, progress=False)
    assignment = problem.uniform_assignment(2)
    with pytest.warns(UserWarning, match="cannot be pickled"):
        save_quantized_model(problem, assignment, tmp_path / QUANTIZED_MODEL_FILE)
    saved = load_quantized_model(tmp_path / QUANTIZED_MODEL_FILE)
    assert saved["model"] is None
    assert torch.equal(saved["state_dict"]["head.weight"], dequantized_weight(saved["layers"]["head"]))


@pytest.fixture(scope="module")
def dict_output_run(cache_dir, tmp_path_factory) -> tuple[QuantProblem, Path]:
    """A model with BatchNorm (non-trivial statistics, so folding changes the biases) and a dict output,
    searched by the channel greedy, with its files written."""
    torch.manual_seed(0)
    model = DigitsDictOutput()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    with pytest.warns(UserWarning):  # random weights: near chance; the dict output's logits are taken
        problem = prepare_problem(model, load_dataset("digits", seed=0), small_settings(cache_dir), progress=False)
    out = tmp_path_factory.mktemp("dict_output_run")
    result = build_result(problem, run_method(problem, "greedy-channel"), "greedy-channel", {"problem": {"model": "m"}})
    write_result(out, problem, result)
    return problem, out


def test_the_packed_file_and_the_architecture_rebuild_the_measured_model(dict_output_run) -> None:
    problem, out = dict_output_run
    torch.manual_seed(1)  # other initial weights: every tensor must come from the file
    rebuilt = load_packed_model(DigitsDictOutput(), out / PACKED_WEIGHTS_FILE)
    measured = load_quantized_model(out / QUANTIZED_MODEL_FILE)["model"]
    x = problem.data.test.x
    assert torch.equal(rebuilt(x)["logits"], measured(x))  # the user's own output format, the measured logits
    assert "bn" not in dict(rebuilt.named_modules())  # folded, as searched


def test_a_packed_file_is_refused_for_another_architecture_or_fold_setting(dict_output_run) -> None:
    _, out = dict_output_run
    path = out / PACKED_WEIGHTS_FILE
    with pytest.raises(CwhawqError, match=r"lacks \['bn\..*with fold_bn=True if the run used the default") as info:
        load_packed_model(DigitsDictOutput(), path, fold_bn=False)
    assert "\n" not in str(info.value)
    with pytest.raises(CwhawqError, match="does not fit the model .*pass the architecture that was searched"):
        load_packed_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), path)


def test_unreadable_files_are_refused_in_one_line(tmp_path) -> None:
    with pytest.raises(CwhawqError, match="not found"):
        load_quantized_model(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_text("hello")
    with pytest.raises(CwhawqError, match="cannot read"):
        load_quantized_model(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CwhawqError, match="not a cwhawq quantized model"):
        load_quantized_model(tmp_path / "other.pt")
    with pytest.raises(CwhawqError, match="packed weights not found"):
        load_packed_weights(tmp_path / "missing.npz")
    with pytest.raises(CwhawqError, match="cannot read"):
        load_packed_weights(tmp_path / "garbage.pt")
    np.savez(tmp_path / "other.npz", weights=np.zeros(2))
    with pytest.raises(CwhawqError, match="not cwhawq packed weights"):
        load_packed_weights(tmp_path / "other.npz")
    with pytest.raises(CwhawqError, match="not cwhawq packed weights"):
        load_packed_model(nn.Linear(2, 2), tmp_path / "other.npz")
