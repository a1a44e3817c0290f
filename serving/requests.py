"""What the serving engine keeps per request: refusals (:class:`Problem`), the first answer of each
event id (:class:`Answers`), and one request's items within a step (:class:`Job`).

Split from :mod:`serving.engine`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dataflows.items import raw_json

_FIELD = re.compile(r"field '([^']*)'")
_TOP_FIELDS = ("event_id", "event_time", "key", "payload", "label_time", "label")


@dataclass(frozen=True)
class Problem:
    """Why one input of a request was refused."""

    index: int
    event_id: str | None
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "field": self.field, "reason": self.reason}


def field_of(reason: str) -> str | None:
    m = _FIELD.search(reason)
    if m:
        return f"payload.{m.group(1)}"
    head = reason.split(" ", 1)[0].rstrip(":")
    return head if head in _TOP_FIELDS else None


def now_us() -> int:
    return int(time.time() * 1_000_000)


def iso_time(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat()


class Answers:
    """The first answer of each of the last ``limit`` to ``2 * limit`` event ids (two generations of dicts:
    O(1) per id, memory bounded).

    With ``journal=True`` it also keeps the answers added since :meth:`take_journal` was last called, by
    generation, so that a snapshot writes only those (:mod:`serving.snapshot`) and :meth:`rebuilt` puts
    the two generations back together from what the snapshots wrote.

    >>> a = Answers(2, journal=True)
    >>> for i in range(5):
    ...     a.add(f"e{i}", i)
    >>> a.get("e0"), a.get("e3"), "e4" in a
    (None, 3, True)
    >>> b = Answers.rebuilt(2, generation=a.generation, segments=a.take_journal())
    >>> [b.get(f"e{i}") for i in range(5)] == [a.get(f"e{i}") for i in range(5)]
    True
    """

    def __init__(self, limit: int, *, journal: bool = False) -> None:
        self.limit = limit
        self._new: dict[str, Any] = {}
        self._old: dict[str, Any] = {}
        self.generation = 0  # of ``_new``; ``_old`` is the one before
        self._journal: list[tuple[int, list[tuple[str, Any]]]] | None = [(0, [])] if journal else None

    def add(self, event_id: str, answer: Any) -> None:
        self._new[event_id] = answer
        journal = self._journal
        if journal is not None:
            journal[-1][1].append((event_id, answer))
        if len(self._new) >= self.limit:
            self._old, self._new = self._new, {}
            self.generation += 1
            if journal is not None:
                journal.append((self.generation, []))

    def get(self, event_id: str) -> Any:
        a = self._new.get(event_id)
        return self._old.get(event_id) if a is None else a

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._new or event_id in self._old

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"generation": 0, "_journal": None, **state})  # (pickled before the journal)

    def start_journal(self) -> None:
        """Journal from here on, starting with every answer kept (what the next snapshot must write whole)."""
        self._journal = [(self.generation - 1, list(self._old.items())), (self.generation, list(self._new.items()))]

    def take_journal(self) -> list[tuple[int, list[tuple[str, Any]]]]:
        """``(generation, [(event_id, answer), ...])`` of the answers added since the last call (O(1); the
        answers are not copied, and nothing mutates them after)."""
        if self._journal is None:
            raise ValueError("this Answers keeps no journal (create it with journal=True)")
        journal, self._journal = self._journal, [(self.generation, [])]
        return [(gen, adds) for gen, adds in journal if adds]

    @classmethod
    def rebuilt(cls, limit: int, *, generation: int, segments: Any, journal: bool = True) -> Answers:
        """The answers kept at ``generation`` from journal segments (older generations are dropped)."""
        answers = cls(limit, journal=journal)
        answers.generation = generation
        if journal:
            answers._journal = [(generation, [])]
        for gen, adds in segments:
            if gen == generation:
                answers._new.update(adds)
            elif gen == generation - 1:
                answers._old.update(adds)
        return answers


class Job:
    """One request within a step: its items (or its final answer) and where its items start."""

    __slots__ = ("kind", "single", "items", "dead", "order", "answer", "first")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.single = False
        self.items: list[tuple] = []
        self.dead: list[tuple] = []
        self.order: list[str] = []  # predict: the event ids in request order, answered ones included
        self.answer: tuple[int, Any] | None = None
        self.first = 0

    def refuse(self, status: int, reason: str, source: str, raw: Any) -> Job:
        self.dead.append((0, "decode", reason, source, None, raw_json(raw)))
        self.answer = (status, {"detail": [{"index": 0, "event_id": None, "field": None, "reason": reason}]})
        return self
