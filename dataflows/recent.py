"""A bounded memory of recently seen ids, for duplicate detection on endless streams.

>>> r = RecentIds(capacity=2)
>>> r.add("a"); r.add("b"); r.add("c")
>>> "a" in r, "b" in r, "c" in r, len(r)
(False, True, True, 2)
>>> import pickle
>>> "c" in pickle.loads(pickle.dumps(r))
True
>>> r.update(["d", "e", "e"]); list(r._order), r.isdisjoint(["a", "b", "c"])
(['d', 'e'], True)
"""

from __future__ import annotations

import zlib
from collections import deque
from itertools import islice

_SEP = "\x00"
_CHUNK = 1 << 12  # ids per pickled part


class RecentIds:
    """The last ``capacity`` ids added (first in, first out); O(1) add and lookup.

    Its pickled form is a few strings (the ids joined in parts of ``_CHUNK``), so
    recovery snapshots of a million ids cost milliseconds, not the per-object
    pickling of a set; a part once joined is kept, so a snapshot joins only the ids
    added since the last full part. A full part is kept zlib-compressed (level 1,
    ~0.5 ms once per part): ids of one stream share most of their characters, so a
    snapshot carries ~1/4 of the bytes (flights ids: 109 -> 24 KB a part), and
    every snapshot of a long run writes and seals that much less.
    """

    __slots__ = ("capacity", "_order", "_members", "_dropped", "_parts")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()
        self._dropped = 0  # ids forgotten so far: the place of ``_order[0]`` among all ids ever added
        # part k (ids k*_CHUNK ... (k+1)*_CHUNK-1) joined and compressed; None: an id has a NUL
        self._parts: dict[int, bytes | None] = {}

    def add(self, item: str) -> None:
        if item in self._members:
            return
        self._members.add(item)
        self._order.append(item)
        if len(self._order) > self.capacity:
            self._members.discard(self._order.popleft())
            self._forgot(1)

    def update(self, items: list[str]) -> None:
        """``add`` each of ``items``, in order (C-level when none was added before)."""
        members = self._members
        if not members.isdisjoint(items) or len(set(items)) != len(items):
            for item in items:
                self.add(item)
            return
        members.update(items)
        order = self._order
        order.extend(items)
        over = len(order) - self.capacity
        if over > 0:
            for _ in range(over):
                members.discard(order.popleft())
            self._forgot(over)

    def _forgot(self, n: int) -> None:
        before = self._dropped // _CHUNK
        self._dropped += n
        if self._parts and self._dropped // _CHUNK != before:  # whole parts forgotten: their strings go too
            first = self._dropped // _CHUNK
            for k in [k for k in self._parts if k < first]:
                del self._parts[k]

    def age(self, item: str) -> int:
        """How many ids were added before ``item`` among those remembered (0: the next to go); O(n)."""
        return self._order.index(item)

    def isdisjoint(self, items: list[str]) -> bool:
        """Whether none of ``items`` is remembered (one C-level pass)."""
        return self._members.isdisjoint(items)

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._order)

    def __getstate__(self) -> tuple[int, list[str | bytes], int, list[str] | None]:
        """``(capacity, parts, skip, exact)``: the ids are the parts (a ``str``, or ``bytes``: a full part,
        zlib-compressed UTF-8) split at NUL, less the first ``skip`` (or ``exact``, a plain list, where an
        id holds a NUL)."""
        order, parts, start = self._order, self._parts, self._dropped
        end = start + len(order)
        first, last = start // _CHUNK, (end - 1) // _CHUNK
        # The parts not joined yet are the newest ones (and, after a restore, all): read them from the end.
        k = last
        while k >= first and (k not in parts or (k + 1) * _CHUNK > end):
            k -= 1
        fresh_from = max((k + 1) * _CHUNK, start)
        fresh = list(islice(reversed(order), end - fresh_from))[::-1] if end > fresh_from else []
        out: list[str | bytes] = []
        skip = 0
        for k in range(first, last + 1):
            lo, hi = max(k * _CHUNK, start), min((k + 1) * _CHUNK, end)
            joined: str | bytes | None
            if lo >= fresh_from or k not in parts:
                # (before fresh_from only the oldest part, partly forgotten before it was joined)
                ids = fresh[lo - fresh_from:hi - fresh_from] if lo >= fresh_from else list(
                    islice(order, lo - start, hi - start))
                joined = _SEP.join(ids)
                if joined.count(_SEP) != len(ids) - 1:  # ids holding NUL: rare, keep them exact
                    joined = None
                if lo == k * _CHUNK and hi == (k + 1) * _CHUNK:
                    # a full part never changes (it is only forgotten as a whole): compressed once, kept
                    if joined is not None:
                        joined = zlib.compress(joined.encode("utf-8", "surrogatepass"), 1)
                    parts[k] = joined
            else:
                joined = parts[k]
                if lo > k * _CHUNK:  # (only the oldest part can be partly forgotten)
                    skip = lo - k * _CHUNK
            if joined is None:
                return self.capacity, [], 0, list(order)
            out.append(joined)
        return self.capacity, out, skip, None

    def __setstate__(self, state: tuple) -> None:
        if len(state) == 3:  # (capacity, joined, exact): snapshots written before the parts
            capacity, joined, exact = state
            items = exact if exact is not None else (joined.split(_SEP) if joined else [])
        else:
            capacity, out, skip, exact = state
            items = exact if exact is not None else [i for part in out for i in _ids(part)][skip:]
        self.capacity = capacity
        self._order = deque(items)
        self._members = set(items)
        self._dropped = 0
        self._parts = {}


def _ids(part: str | bytes) -> list[str]:
    """The ids of a pickled part (a compressed full part, or the joined ids as they are)."""
    if isinstance(part, bytes):
        part = zlib.decompress(part).decode("utf-8", "surrogatepass")
    return part.split(_SEP)
