"""Tests for cwhawq.result: the result document, its assignment, and what is written beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cwhawq.baselines import run_method
from cwhawq.evaluation import log_probs
from cwhawq.export import QUANTIZED_MODEL_FILE
from cwhawq.problem import QuantProblem
from cwhawq.result import RESULT_FILE, build_result, format_summary, result_assignment, write_result


def test_result_records_the_assignment_and_the_versions_it_ran_with(digits_problem: QuantProblem, tmp_path) -> None:
    assignment = run_method(digits_problem, "greedy-channel")
    result = build_result(digits_problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})
    write_result(tmp_path / "new", digits_problem, result)
    written = json.loads((tmp_path / "new" / RESULT_FILE).read_text())
    assert (tmp_path / "new" / QUANTIZED_MODEL_FILE).is_file()
    rebuilt = result_assignment(written)
    assert rebuilt.keys() == assignment.keys()
    assert all(np.array_equal(rebuilt[name], bits) for name, bits in assignment.items())
    recorded_torch = written["environment"]["packages"]["torch"]
    assert torch.__version__.split("+")[0] == recorded_torch.split("+")[0]  # local tags (+cpu, +cu130) vary
    assert written["environment"]["torch_cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert written["environment"]["torch_threads"] == torch.get_num_threads()
    assert written["totals"]["weight_bits"] == digits_problem.size_bits(assignment)
    for layer in written["layers"]:  # the channel traces that ordered the bits, in channel order
        assert np.array_equal(layer["traces"], digits_problem.traces.traces[layer["name"]])
        assert np.array_equal(layer["trace_stderr"], digits_problem.traces.stderr[layer["name"]])
        assert len(layer["traces"]) == len(layer["bits"]) == layer["channels"]
        traces, errors = np.asarray(layer["traces"]), np.asarray(layer["trace_stderr"])
        assert layer["ranking_reliability"] == 1 - np.mean(errors**2) / np.var(traces)
    assert written["traces"]["probes"] == digits_problem.traces.n_probes


def test_result_measures_the_test_kl_divergence_from_the_fp32_predictions(digits_problem: QuantProblem) -> None:
    assignment = run_method(digits_problem, "greedy-channel")
    accuracy = build_result(digits_problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})[
        "accuracy"
    ]
    reference = log_probs(digits_problem.model, digits_problem.data.test)
    with digits_problem.quantizer.quantized(assignment):
        predicted = log_probs(digits_problem.model, digits_problem.data.test)
    expected = float((reference.exp() * (reference - predicted)).sum(dim=1).mean())
    assert expected > 0 and accuracy["quantized_test_kl"] == pytest.approx(expected, rel=1e-4)
    correct = int((predicted.argmax(dim=1) == digits_problem.data.test.y).sum())
    assert accuracy["quantized_test"] == correct / len(digits_problem.data.test.y)


def test_summary_shows_the_test_kl_divergence_when_the_result_records_it(digits_problem: QuantProblem) -> None:
    assignment = run_method(digits_problem, "greedy-channel")
    result = build_result(digits_problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})
    kl = result["accuracy"]["quantized_test_kl"]
    assert f"(KL divergence from FP32 {kl:.4f})" in format_summary(result)
    older = {**result, "accuracy": {k: v for k, v in result["accuracy"].items() if k != "quantized_test_kl"}}
    assert "KL divergence" not in format_summary(older)  # a result.json written before the field still reads


def test_summary_says_what_a_search_explored_from(digits_problem: QuantProblem) -> None:
    assignment = run_method(digits_problem, "greedy-channel")
    result = build_result(
        digits_problem,
        assignment,
        "ddpg-channel",
        {"problem": {"model": "digits_cnn"}},
        extra={"search": {"start": "greedy-channel, replayed"}},
    )
    assert format_summary(result).endswith("search explored from greedy-channel, replayed")
    baseline = build_result(digits_problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})
    assert "explored from" not in format_summary(baseline)  # baselines, and searches older than the field
