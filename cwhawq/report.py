"""A picture of a result: every channel's bit-width against its Hessian trace, layer by layer.

The channel-wise method gives the channels of a layer their bits in a sensitivity order built on the Hessian trace
(the trace alone with `--channel-order trace`, or with the quantization error by default); this figure shows how
each layer's bit-widths fell against the traces, from `result.json` alone (`cwhawq plot RUN_DIR`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402

from cwhawq.errors import CwhawqError  # noqa: E402

#: The figure's file name in a run's output directory.
FIGURE_FILE = "channel_bits.png"


def channel_bits_figure(result: Mapping[str, Any]) -> plt.Figure:
    """One row per layer (model order, first at the top), one dot per output channel at its Hessian trace
    (symmetric log scale: channel traces can be negative), coloured by its bit-width.

    Raises `CwhawqError` for a result written before `result.json` recorded the traces.
    """
    layers = result["layers"]
    if any("traces" not in layer for layer in layers):
        raise CwhawqError("this result.json records no channel traces (written by an older cwhawq); rerun the run")
    widths = sorted({int(bits) for layer in layers for bits in layer["bits"]})
    colours = plt.get_cmap("tab10")
    magnitudes = np.abs(np.concatenate([np.asarray(layer["traces"], dtype=float) for layer in layers]))
    positive = magnitudes[magnitudes > 0]
    linthresh = float(np.quantile(positive, 0.01)) if positive.size else 1.0

    fig, ax = plt.subplots(figsize=(9.0, min(2.0 + 0.25 * len(layers), 40.0)))
    for index, width in enumerate(widths):  # one scatter per width: one legend entry each, in width order
        traces, rows = [], []
        for row, layer in enumerate(layers):
            chosen = np.asarray(layer["bits"]) == width
            traces.append(np.asarray(layer["traces"], dtype=float)[chosen])
            rows.append(np.full(int(chosen.sum()), row))
        label = "FP32" if width == 32 else f"{width} bits"
        ax.scatter(np.concatenate(traces), np.concatenate(rows), s=9, color=colours(index % 10), label=label)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_yticks(range(len(layers)), [f"{layer['name']} ({layer['avg_bits']:.2f})" for layer in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("channel Hessian trace")
    accuracy, totals = result["accuracy"], result["totals"]
    ax.set_title(
        f"{result.get('method', '')}: {totals['avg_bits']:.3f} average bits, "
        f"val {accuracy['quantized_val']:.2%}, test {accuracy['quantized_test']:.2%}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def save_channel_bits_figure(result: Mapping[str, Any], path: Path) -> None:
    """Draw `channel_bits_figure` of ``result`` into the PNG file ``path``."""
    fig = channel_bits_figure(result)
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
