"""Progress of one benchmark strategy with an ETA: a bar on a terminal, a log line now and then otherwise.

>>> import io
>>> out = io.StringIO()
>>> p = StrategyProgress("online/linear", index=1, count=2, estimate_s=10.0, out=out, tty=False, every_s=0.0)
>>> p.update(500, 1000)
>>> "[1/2] online/linear: 50% of 1,000 events" in out.getvalue()
True
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

_BAR = 24


class StrategyProgress:
    """``update(done, total)`` as the strategy serves events; ``close()`` when it has finished.

    The ETA comes from the rate so far once a twentieth of the events is done, from the
    estimate before that. ``tty`` (default: whether ``out`` is a terminal) draws a bar
    redrawn in place; otherwise a line goes to ``log`` (default: ``out``) every ``every_s`` seconds.
    """

    def __init__(self, name: str, *, index: int, count: int, estimate_s: float, out: TextIO | None = None,
                 tty: bool | None = None, every_s: float = 15.0, log: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.prefix = f"[{index}/{count}] {name}"
        self.estimate_s = estimate_s
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = every_s
        self.log = log or (lambda line: print(line, file=self.out, flush=True))
        self.started = time.monotonic()
        self.last_line = self.started
        self.drawn = False

    def eta(self, done: int, total: int) -> float:
        elapsed = time.monotonic() - self.started
        if total and done >= total / 20:
            return elapsed * (total - done) / max(done, 1)
        return max(0.0, self.estimate_s - elapsed)

    def update(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        share = done / total if total else 1.0
        eta = self.eta(done, total)
        if self.tty:
            filled = int(round(_BAR * share))
            self.out.write(f"\r{self.prefix} [{'#' * filled}{'.' * (_BAR - filled)}] {share:4.0%} "
                           f"{elapsed:5.0f} s, ETA {eta:4.0f} s ")
            self.out.flush()
            self.drawn = True
        elif time.monotonic() - self.last_line >= self.every_s:
            self.last_line = time.monotonic()
            self.log(f"{self.prefix}: {share:.0%} of {total:,} events, {elapsed:.0f} s, ETA {eta:.0f} s")

    def close(self) -> float:
        """End the bar's line; returns the seconds taken."""
        elapsed = time.monotonic() - self.started
        if self.drawn:
            self.out.write("\n")
            self.out.flush()
        return elapsed
