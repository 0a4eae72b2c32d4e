"""Progress bars: plain lines (no carriage returns) when the output is not a terminal."""

import io

from cwhawq.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_terminal_every_update_is_a_line_without_carriage_returns():
    out = io.StringIO()
    for _ in progress_bar(range(5), file=out, desc="work", mininterval=0, miniters=1):
        pass
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("work:") for line in lines)
    assert "5/5" in lines[-1]


def test_on_a_terminal_tqdm_redraws_in_place():
    out = _Terminal()
    for _ in progress_bar(range(3), file=out, desc="work", mininterval=0, miniters=1):
        pass
    assert "\r" in out.getvalue()


def test_disabled_bar_writes_nothing():
    out = io.StringIO()
    for _ in progress_bar(range(3), file=out, disable=True):
        pass
    assert out.getvalue() == ""
