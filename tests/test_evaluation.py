"""Accuracy and KL divergence from reference predictions, and the "kl" search objective built on them."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from agents.random_search import random_search
from cwhawq.data import Split
from cwhawq.errors import CwhawqError
from cwhawq.evaluation import Evaluation, accuracy, evaluate, log_probs
from cwhawq.problem import build_problem
from cwhawq.settings import ProblemSettings
from envs.channel_bits_env import ChannelBitsEnv, evaluate_outcome
from tests.conftest import small_settings


def _classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(5, 3)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), samples=st.integers(1, 40), batch_size=st.integers(1, 16))
def test_kl_matches_its_definition_at_any_batch_size(seed, samples, batch_size):
    generator = torch.Generator().manual_seed(seed)
    split = Split(torch.randn(samples, 5, generator=generator), torch.randint(0, 3, (samples,), generator=generator))
    reference, model = _classifier(seed), _classifier(seed + 1)
    with torch.no_grad():
        p, q = torch.softmax(reference(split.x), 1), torch.softmax(model(split.x), 1)
    expected = float((p * (p.log() - q.log())).sum(1).mean())
    measured = evaluate(model, split, log_probs(reference, split), batch_size=batch_size)
    assert measured.kl == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert measured.accuracy == accuracy(model, split) == int((q.argmax(1) == split.y).sum()) / samples
    itself = evaluate(reference, split, log_probs(reference, split), batch_size=batch_size)
    assert itself.kl == pytest.approx(0, abs=1e-6)


def test_predictions_that_are_not_finite_are_infinitely_far():
    model = _classifier(0)
    split = Split(torch.randn(4, 5), torch.zeros(4, dtype=torch.int64))
    reference = log_probs(model, split)
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    assert evaluate(model, split, reference).kl == math.inf


def test_score_follows_the_objective():
    assert Evaluation(0.9, 0.2).score("accuracy") == 0.9
    assert Evaluation(0.9, 0.2).score("kl") == -0.2


@pytest.fixture(scope="module")
def kl_problem(cache_dir):
    return build_problem(small_settings(cache_dir, objective="kl"), progress=False)


def test_kl_objective_reward_and_best(kl_problem):
    assignment = kl_problem.uniform_assignment(2)
    info, reward = evaluate_outcome(kl_problem, assignment)
    assert info["val_kl"] > 0 and info["val_score"] == -info["val_kl"]
    assert reward == pytest.approx(-10 * info["val_kl"])
    record = random_search(kl_problem, evaluations=6, seed=3)
    kls = [h["val_kl"] for h in record.history]
    assert record.best_val_score == -min(kls)
    assert record.best_val_accuracy == record.history[int(np.argmin(kls))]["val_accuracy"]


def test_the_objective_changes_only_the_choice(digits_problem, kl_problem):
    assignment = digits_problem.uniform_assignment(3)
    assert digits_problem.validate(assignment, count=False) == kl_problem.validate(assignment, count=False)
    env = ChannelBitsEnv(dataclasses.replace(digits_problem, objective="kl"))
    _, reward = evaluate_outcome(env.problem, assignment)
    assert reward == pytest.approx(-10 * kl_problem.validate(assignment, count=False).kl)


def test_unknown_objective_is_refused(cache_dir):
    with pytest.raises(CwhawqError, match="unknown objective 'loss'"):
        build_problem(small_settings(cache_dir, objective="loss"), progress=False)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), samples=st.integers(1, 30), extra=st.integers(1, 30), batch_size=st.integers(1, 16))
def test_extra_inputs_pool_into_the_kl_but_not_the_accuracy(seed, samples, extra, batch_size):
    generator = torch.Generator().manual_seed(seed)
    make = lambda n: Split(torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator))  # noqa: E731
    split, more = make(samples), make(extra)
    reference, model = _classifier(seed), _classifier(seed + 1)
    alone = evaluate(model, split, log_probs(reference, split))
    other = evaluate(model, more, log_probs(reference, more))
    pooled = evaluate(
        model, split, log_probs(reference, split), batch_size, extra=more, extra_reference=log_probs(reference, more)
    )
    assert pooled.accuracy == alone.accuracy
    assert pooled.kl == pytest.approx((samples * alone.kl + extra * other.kl) / (samples + extra), rel=1e-4, abs=1e-6)


def test_the_kl_divergence_is_measured_on_training_inputs_too(digits_problem, cache_dir):
    assignment = digits_problem.uniform_assignment(2)
    samples = digits_problem.kl_extra
    assert len(samples) == 1000 and torch.equal(samples.x, digits_problem.data.train.x[:1000])
    alone = build_problem(small_settings(cache_dir, kl_train_samples=0), progress=False)
    assert alone.kl_extra is None and alone.fingerprint() != digits_problem.fingerprint()
    pooled, on_val = digits_problem.validate(assignment, count=False), alone.validate(assignment, count=False)
    assert pooled.accuracy == on_val.accuracy and pooled.kl != on_val.kl
    with digits_problem.quantizer.quantized(assignment):
        on_train = evaluate(digits_problem.model, samples, digits_problem.fp_kl_extra_log_probs).kl
    n_val = len(digits_problem.data.val)
    assert pooled.kl == pytest.approx((n_val * on_val.kl + 1000 * on_train) / (n_val + 1000), rel=1e-4)


@pytest.mark.parametrize("samples", [-1, 2.5, True])
def test_a_count_of_training_inputs_that_is_not_one_is_refused(samples):
    with pytest.raises(CwhawqError, match="kl_train_samples must be a whole number"):
        ProblemSettings(kl_train_samples=samples)
