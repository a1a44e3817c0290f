"""Lake writes at a lower CPU priority than the prediction path (Linux; elsewhere a no-op).

On a machine with few cores, a Delta commit (Parquet encoding on delta-rs's tokio
threads, Arrow building on a Python thread) competes for the CPU with the thread
that polls, scores and sends. :func:`lower_writer_priority` raises the nice value of
the calling thread and of the process's ``tokio-rt-worker`` threads by
:data:`NICE`, so the scheduler serves the prediction path first and the commits
take the CPU it leaves. Commits still run and still gate nothing but themselves:
exactly-once is unchanged, only when a commit lands moves. :func:`stagger` spreads periodic
commits over their period for the same reason.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

NICE = 10
"""How much lower (in nice steps) lake-writing threads run than the rest of the process."""

_LOWERED: set[int] = set()
_LOCK = threading.Lock()


def _renice(tid: int, by: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as ex:  # gone, or not allowed: the commit just runs at the usual priority
        log.debug("could not lower the priority of thread %d: %s", tid, ex)


def lower_writer_priority(by: int = NICE) -> None:
    """Run the calling thread, and delta-rs's runtime threads, ``by`` nice steps lower (each thread once)."""
    if not hasattr(os, "setpriority"):
        return
    tids = [threading.get_native_id()]
    try:
        for task in Path("/proc/self/task").iterdir():
            if (task / "comm").read_text().strip() == "tokio-rt-worker":
                tids.append(int(task.name))
    except OSError:
        pass
    with _LOCK:
        for tid in tids:
            if tid not in _LOWERED:
                _LOWERED.add(tid)
                _renice(tid, by)


_GOLDEN = (5 ** 0.5 - 1) / 2


def stagger(k: int, period: float) -> float:
    """How far into ``period`` the ``k``-th of several periodic lake writers should be: ``k`` and the ones
    after it spread evenly over the period (the golden-ratio sequence), so their commits, each a burst of
    Parquet encoding, do not all fall on the same moment and stall the prediction path together.

    >>> [round(stagger(k, 5.0), 2) for k in range(4)]
    [0.0, 3.09, 1.18, 4.27]
    """
    return period * ((k * _GOLDEN) % 1.0)
