"""Progress bars that stay readable in log files: a redrawn tqdm bar on a terminal, plain lines elsewhere.

Off a terminal (a batch job's log, CI, a pipe) tqdm would append a carriage-return redraw per update to one
ever-growing line. There each update becomes its own line instead, at most one per `LOG_INTERVAL_S` seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Seconds between progress lines when the output is not a terminal.
LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream for tqdm that writes every bar state as a line of its own instead of redrawing it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self._stream.write(text + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(iterable: Iterable | None = None, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on `file` (default stderr), in plain lines when `file` is not a terminal."""
    stream = file if file is not None else sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        stream = _Lines(stream)
    return tqdm(iterable, file=stream, **kwargs)
