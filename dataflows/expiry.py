"""Giving up on labels: events that waited longer than the label TTL (event time) stop waiting."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable
from itertools import islice, repeat
from operator import itemgetter
from typing import Any

from dataflows.rows import row


class LabelExpiry:
    """The pending events in arrival order with their event times, and the clock (latest event time seen).

    ``arrivals`` and ``clock_us`` are public: the step's hot loops append to and advance them directly.
    """

    def __init__(self, arrivals: deque[tuple[int, str]] | None = None, clock_us: int = -(2**62)) -> None:
        self.arrivals: deque[tuple[int, str]] = deque() if arrivals is None else arrivals  # (event_time_us, id)
        self.clock_us = clock_us

    def compact(self, pending: dict[str, Any]) -> None:
        """Drop the arrivals of events no longer pending (labelled or expired), in order: a snapshot
        carries the events still waiting, not the labelled ones that linger until the TTL or the next
        compaction in :meth:`expire`."""
        if len(self.arrivals) > len(pending):
            self.arrivals = deque(a for a in self.arrivals if a[1] in pending)

    def __getstate__(self) -> dict[str, Any]:
        # The times as one bytes value and the ids as a list: a recovery snapshot pickles two objects, not a
        # tuple per waiting event (the ids are the pending dict's own strings, written once).
        times = array("q", map(itemgetter(0), self.arrivals))
        return {"times": times.tobytes(), "ids": list(map(itemgetter(1), self.arrivals)), "clock_us": self.clock_us}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "arrivals" in state:  # (a snapshot from before the compact form)
            self.__dict__.update(state)
            return
        times = array("q")
        times.frombytes(state["times"])
        ids = state["ids"]
        if len(times) != len(ids):
            raise ValueError(f"label expiry state: {len(times)} times for {len(ids)} event ids")
        self.arrivals = deque(zip(times.tolist(), ids, strict=True))
        self.clock_us = state["clock_us"]

    def expire(self, *, ttl_us: int | None, pending: dict[str, Any], expired: Any, seq: int, run_id: str,
               shard: int, time_and_key: Callable[[int], tuple[int, str]]) -> list[tuple]:
        """Stop waiting for labels of events older than ``ttl_us`` before the clock: they leave
        ``pending`` for ``expired``; returns their ``expired`` rows. ``time_and_key`` reads an entry
        the columnar path keeps as an arena slot."""
        arrivals = self.arrivals
        if ttl_us is None or not arrivals:
            return []
        clock = self.clock_us
        cutoff = clock - ttl_us
        rows = []
        n = 0  # the arrivals older than the cutoff, from the front (in arrival order)
        for t, _ in arrivals:
            if t >= cutoff:
                break
            n += 1
        ids = [event_id for _, event_id in islice(arrivals, n)]
        popleft = arrivals.popleft
        for _ in range(n):
            popleft()
        for event_id, entry in zip(ids, map(pending.pop, ids, repeat(None)), strict=True):
            if entry is None:  # labelled meanwhile
                continue
            t, key = time_and_key(entry) if type(entry) is int else (entry[1], entry[2])
            rows.append(row("expired", run_id=run_id, shard=shard, seq=seq, event_id=event_id, event_time=t,
                            key=key, expired_at=clock))
            expired.add(event_id)
        if len(arrivals) > 2 * len(pending) + 10_000:
            # Labelled events linger here until the TTL (days of traffic): drop them, in order, so
            # memory and recovery snapshots follow the pending events (amortised O(1) per event).
            self.arrivals = deque(a for a in arrivals if a[1] in pending)
        return rows
