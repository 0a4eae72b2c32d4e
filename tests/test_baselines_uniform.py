"""Uniform baseline: the highest single width that fits."""

import numpy as np
import pytest

from cwhawq.baselines.uniform import uniform
from cwhawq.errors import CwhawqError
from tests.baseline_problems import tiny_problem


@pytest.mark.parametrize("budget_bits, expected", [(18 * 8, 8), (18 * 8 - 1, 4), (18 * 4, 4), (18 * 4 - 1, 2)])
def test_highest_width_that_fits(budget_bits, expected):
    problem = tiny_problem(budget_bits=budget_bits)
    assignment = uniform(problem)
    problem.check_assignment(assignment)
    assert all(np.all(bits == expected) and bits.dtype == np.int64 for bits in assignment.values())


def test_pinned_layers_keep_their_pins():
    # 12 weights pinned at 8 bits cost 96; the 6 searchable weights then afford 4 bits but not 8.
    problem = tiny_problem(budget_bits=96 + 6 * 4, pin={"0": 8})
    assignment = uniform(problem)
    problem.check_assignment(assignment)
    assert assignment["0"].tolist() == [8, 8, 8] and assignment["2"].tolist() == [4, 4]


def test_nothing_fits_raises():
    with pytest.raises(CwhawqError, match="no single width"):
        uniform(tiny_problem(budget_bits=18 * 2 - 1))
