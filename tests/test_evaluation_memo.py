"""The evaluation memo: keys, the file on disk, refusal of another problem's memo, and its use by QuantProblem."""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cwhawq.errors import CwhawqError
from cwhawq.evaluation import Evaluation
from cwhawq.evaluation_memo import EvaluationMemo, assignment_key

layer_bits = st.lists(st.integers(min_value=2, max_value=8), min_size=1, max_size=6).map(np.array)
assignments = st.dictionaries(st.sampled_from(["conv1", "conv2", "fc"]), layer_bits, min_size=1)


@given(assignments)
def test_key_ignores_order_and_container_types(assignment):
    reordered = {name: assignment[name].tolist() for name in reversed(list(assignment))}
    assert assignment_key(reordered) == assignment_key(assignment)


@given(assignments, st.sampled_from(["conv1", "conv2", "fc"]))
def test_key_changes_with_any_channel(assignment, name):
    if name not in assignment:
        return
    changed = dict(assignment)
    changed[name] = assignment[name].copy()
    changed[name][0] += 1
    assert assignment_key(changed) != assignment_key(assignment)


def test_evaluations_survive_reopening(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    memo = EvaluationMemo(path, "f")
    first, second = {"a": np.array([2, 4])}, {"a": np.array([4, 4])}
    memo.add(first, Evaluation(0.5, 0.25))
    memo.add(second, Evaluation(0.75, math.inf))  # predictions that were not finite
    memo.add(first, Evaluation(0.5, 0.25))  # already known: not written twice
    assert len(path.read_text().splitlines()) == 3  # the header and two evaluations
    reopened = EvaluationMemo(path, "f")
    assert len(reopened) == 2
    assert reopened.get(second) == Evaluation(0.75, math.inf) and reopened.get({"a": np.array([2, 2])}) is None
    assert reopened.hits == 1


def test_an_entry_without_kl_divergence_is_measured_again(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    EvaluationMemo(path, "f")  # the header
    with path.open("a") as file:  # as written before the KL divergence was measured
        file.write(json.dumps({"key": assignment_key({"a": np.array([2])}), "val_accuracy": 0.5}) + "\n")
    assert EvaluationMemo(path, "f").get({"a": np.array([2])}) is None


def test_a_line_cut_short_by_a_kill_is_measured_again(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    EvaluationMemo(path, "f").add({"a": np.array([2])}, Evaluation(0.5, 0.1))
    with path.open("a") as file:
        file.write('{"key": "abc", "val_acc')
    assert len(EvaluationMemo(path, "f")) == 1


def test_an_unreadable_memo_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    path.write_text('{"fingerpr')  # a header cut short by a kill
    with pytest.raises(CwhawqError, match="is not a cwhawq evaluation memo"):
        EvaluationMemo(path, "f")


def test_another_problems_memo_is_refused(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    EvaluationMemo(path, "one problem")
    with pytest.raises(CwhawqError, match="evaluations of another model or data"):
        EvaluationMemo(path, "another")


def test_memoized_problem_replays_and_still_counts(digits_problem, tmp_path, monkeypatch):
    memo = EvaluationMemo(tmp_path / "evaluations.jsonl", digits_problem.fingerprint())
    assignment = digits_problem.uniform_assignment(2)
    measured = []
    original = digits_problem.quantizer.quantized
    monkeypatch.setattr(digits_problem.quantizer, "quantized", lambda a: measured.append(a) or original(a))
    before = digits_problem.evaluations
    with digits_problem.memoized(memo):
        first = digits_problem.evaluate(assignment)
        again = digits_problem.evaluate(assignment)
        test = digits_problem.evaluate(assignment, split="test", count=False)
    assert first == again and len(measured) == 2  # validation once, then the test split (never memoized)
    assert digits_problem.evaluations == before + 2 and memo.hits == 1
    assert digits_problem.memo is None
    assert test == digits_problem.evaluate(assignment, split="test", count=False)


def test_fingerprint_follows_the_weights(digits_problem):
    import torch

    fingerprint = digits_problem.fingerprint()
    assert fingerprint == digits_problem.fingerprint()
    weight = next(digits_problem.model.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight[0].add_(1.0)
        try:
            assert digits_problem.fingerprint() != fingerprint
        finally:
            weight.copy_(saved)
    assert digits_problem.fingerprint() == fingerprint
