"""One retry policy for the lake's own I/O races (outside Prefect flows, which use Prefect's
task retries with :func:`prefect.tasks.exponential_backoff`, see :mod:`flows.retry`).

>>> tries = []
>>> def flaky():
...     tries.append(1)
...     if len(tries) < 3:
...         raise ConnectionError("lost")
...     return "done"
>>> retrying(flaky, on=ConnectionError, attempts=3, delay_s=0), len(tries)
('done', 3)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retrying(fn: Callable[[], T], *, on: type[BaseException] | tuple[type[BaseException], ...], attempts: int = 5,
             delay_s: float = 0.05, before_retry: Callable[[BaseException], None] | None = None) -> T:
    """``fn()``, called again after an exception of type ``on``, at most ``attempts`` times in all,
    waiting ``delay_s`` times the attempt number between tries (a short linear backoff for commit
    races that the next try resolves); ``before_retry(exc)`` runs before each new try. The last
    failure propagates unchanged."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts!r}")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except on as ex:
            if attempt == attempts:
                raise
            time.sleep(delay_s * attempt)
            if before_retry is not None:
                before_retry(ex)
    raise AssertionError("unreachable")
