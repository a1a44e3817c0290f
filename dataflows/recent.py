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

from collections import deque

_SEP = "\x00"


class RecentIds:
    """The last ``capacity`` ids added (first in, first out); O(1) add and lookup.

    Its pickled form is one string, so recovery snapshots of a million ids cost
    milliseconds, not the per-object pickling of a set.
    """

    __slots__ = ("capacity", "_order", "_members")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def add(self, item: str) -> None:
        if item in self._members:
            return
        self._members.add(item)
        self._order.append(item)
        if len(self._order) > self.capacity:
            self._members.discard(self._order.popleft())

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
        while len(order) > self.capacity:
            members.discard(order.popleft())

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

    def __getstate__(self) -> tuple[int, str, list[str] | None]:
        joined = _SEP.join(self._order)
        if joined.count(_SEP) != max(len(self._order) - 1, 0):  # ids holding NUL: rare, keep them exact
            return self.capacity, "", list(self._order)
        return self.capacity, joined, None

    def __setstate__(self, state: tuple[int, str, list[str] | None]) -> None:
        capacity, joined, exact = state
        items = exact if exact is not None else (joined.split(_SEP) if joined else [])
        self.capacity = capacity
        self._order = deque(items)
        self._members = set(items)
