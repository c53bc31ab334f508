"""Progress of a run, shown whatever the terminal: a bar on a TTY, plain lines elsewhere.

A real model on the CPU can take minutes per mode; a run that prints nothing looks hung. On a
terminal the bar is tqdm's (a well-kept library; ``delay=1`` so runs shorter than a second show
none). When stderr is not a terminal (a CI log, ``| tee``, a notebook's captured stream)
tqdm's carriage returns pile up on one line, so :class:`LineProgress` prints a short line
instead — at most one every few seconds, and the last one always.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LineProgress", "make_progress"]


class LineProgress:
    """tqdm's ``update``/``set_postfix_str``/``close`` as plain lines on ``stream``.

    Args:
        total: items expected; desc: what is counted (``requests``).
        min_interval_s: clock seconds between two lines (the final line always prints).
        delay_s: nothing is printed before this many clock seconds (short runs stay quiet).
    """

    def __init__(self, total: int, desc: str, *, stream: TextIO | None = None,
                 min_interval_s: float = 5.0, delay_s: float = 1.0) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self.postfix = ""
        self.stream = stream or sys.stderr
        self.min_interval_s = min_interval_s
        self._t0 = time.monotonic()
        self._next = self._t0 + delay_s
        self._printed = False

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now >= self._next or (self.n >= self.total and self._printed):
            self._line(now)

    def _line(self, now: float) -> None:
        where = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} done ({now - self._t0:.0f} s{where})",
              file=self.stream, flush=True)
        self._printed = True
        self._next = now + self.min_interval_s

    def tick(self) -> None:
        """Print a line when one is due even though nothing finished (a long request)."""
        now = time.monotonic()
        if now >= self._next:
            self._line(now)

    def close(self) -> None:
        now = time.monotonic()
        if self._printed and self.n < self.total:
            self._line(now)


def make_progress(total: int, desc: str, *, stream: TextIO | None = None) -> Any:
    """A tqdm bar on a terminal, else a :class:`LineProgress` (both quiet for the first
    second)."""
    out = stream or sys.stderr
    if getattr(out, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="req", leave=False, delay=1.0, file=out)
    return LineProgress(total, desc, stream=out)
