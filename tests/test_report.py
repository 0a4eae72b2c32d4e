"""Tests for cwhawq.report: the figure of each channel's bits against its Hessian trace."""

from __future__ import annotations

import numpy as np
import pytest

from cwhawq.baselines import run_method
from cwhawq.errors import CwhawqError
from cwhawq.problem import QuantProblem
from cwhawq.report import channel_bits_figure, save_channel_bits_figure
from cwhawq.result import build_result


@pytest.fixture(scope="module")
def greedy_result(digits_problem: QuantProblem) -> dict:
    assignment = run_method(digits_problem, "greedy-channel")
    return build_result(digits_problem, assignment, "greedy-channel", {"problem": {"model": "digits_cnn"}})


def test_every_channel_is_drawn_at_its_trace_in_its_bits_colour(greedy_result: dict) -> None:
    figure = channel_bits_figure(greedy_result)
    (ax,) = figure.axes
    layers = greedy_result["layers"]
    assert [label.get_text().split(" (")[0] for label in ax.get_yticklabels()] == [layer["name"] for layer in layers]
    widths = sorted({bits for layer in layers for bits in layer["bits"]})
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [f"{width} bits" for width in widths]
    for width, points in zip(widths, ax.collections):  # one scatter per width: (trace, layer row) per channel
        expected = sorted(
            (trace, row)
            for row, layer in enumerate(layers)
            for trace, bits in zip(layer["traces"], layer["bits"])
            if bits == width
        )
        drawn = sorted(map(tuple, np.asarray(points.get_offsets())))
        np.testing.assert_allclose(np.array(drawn), np.array(expected))


def test_the_figure_is_written_as_png(greedy_result: dict, tmp_path) -> None:
    save_channel_bits_figure(greedy_result, tmp_path / "bits.png")
    assert (tmp_path / "bits.png").read_bytes().startswith(b"\x89PNG")


def test_a_result_without_traces_is_refused_in_one_line(greedy_result: dict) -> None:
    layers = [{key: value for key, value in layer.items() if key != "traces"} for layer in greedy_result["layers"]]
    older = {**greedy_result, "layers": layers}
    with pytest.raises(CwhawqError, match="records no channel traces .*; rerun the run"):
        channel_bits_figure(older)
