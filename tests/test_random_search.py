"""Random search: evaluation count, budget, best tracking, determinism."""

import numpy as np

from agents.random_search import random_search


def test_random_search_counts_and_budget(digits_problem):
    before = digits_problem.evaluations
    record = random_search(digits_problem, evaluations=6, seed=3)
    assert digits_problem.evaluations - before == 6
    assert record.episodes == 6
    best = max(record.history, key=lambda h: h["val_score"])
    assert (record.best_val_score, record.best_val_accuracy) == (best["val_score"], best["val_accuracy"])
    digits_problem.check_assignment(record.best_assignment)


def test_random_search_is_seeded(digits_problem):
    first = random_search(digits_problem, evaluations=4, seed=1)
    second = random_search(digits_problem, evaluations=4, seed=1)
    other = random_search(digits_problem, evaluations=4, seed=2)
    assert first.history == second.history
    assert first.history != other.history
    for name, bits in first.best_assignment.items():
        assert np.array_equal(bits, second.best_assignment[name])
