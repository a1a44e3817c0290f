"""The server's write-ahead log: every accepted request, in order, before it is answered.

One JSON line per request: its items (events and labels as the dataflow's item
tuples, payloads already fitted to the lake's types) and its dead letters, each
with its position ``seq``. A line is one ``write(2)`` on a file opened for
appending, so it is in the file as soon as the call returns: a ``kill -9`` of the
server cannot lose a request it answered. (A power cut can lose what the OS had
not written yet; ``fsync=True`` closes that too, at ~1 ms per request on SSDs.)

At start the server replays the log through a fresh learner: the same items in
the same order give the same models, the same feature state and the same rows, so
the lake's idempotent writers add exactly what a crash kept from them. A torn last
line (a write the crash cut short) is cut off.

A snapshot at position ``P`` (:mod:`serving.snapshot`) starts a new segment: the records
below ``P`` move to ``log.P.jsonl`` (a rename: nothing is copied), new ones go to
``log.jsonl``; once the snapshot is written the segments it covers are deleted. Until then,
and after a crash in between, :meth:`ServingLog.records` reads every segment in order.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
>>> log = ServingLog(path)
>>> log.append({"items": [[0, 0, "e1", 0, "k", {"x": 1.5}]], "dead": []})
>>> log.close()
>>> log.rotate(1)
>>> log.append({"items": [[1, 0, "e2", 0, "k", {"x": 2.5}]], "dead": []})
>>> [r["items"][0][2] for r in ServingLog(path).records()]
['e1', 'e2']
>>> log.drop_below(1)
>>> [r["items"][0][2] for r in ServingLog(path).records()]
['e2']
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def last_position(record: dict[str, Any]) -> int:
    """The last position of a logged request (its items' and dead letters' ``seq``)."""
    return max([it[0] for it in record["items"]] + [d[0] for d in record["dead"]])


class ServingLog:
    """Append-only JSON-lines log of one server, in segments: ``path`` (the one written to) and, before it,
    the segments a snapshot in progress or a crash left (``log.P.jsonl``: the records below ``P``)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._fd: int | None = None
        self._folder, name = os.path.split(os.path.abspath(self.path))
        self._stem, self._ext = os.path.splitext(name)
        self._segment = re.compile(re.escape(self._stem) + r"\.(\d+)" + re.escape(self._ext) + "$")
        self._empty: bool | None = None  # whether ``path`` holds no record (None: not looked yet)

    def _segments(self) -> list[tuple[int, str]]:
        """``(P, path)`` of the closed segments (records below ``P``), oldest first."""
        found = []
        for name in os.listdir(self._folder) if os.path.isdir(self._folder) else ():
            m = self._segment.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self._folder, name)))
        return sorted(found)

    def records(self) -> Iterator[dict[str, Any]]:
        """The logged requests in order, every segment; cuts off a torn last line."""
        for _, path in self._segments():
            yield from self._read(path)
        yield from self._read(self.path)

    @staticmethod
    def _read(path: str) -> Iterator[dict[str, Any]]:
        if not os.path.exists(path):
            return
        good = 0
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                good += len(line)
                yield record
        size = os.path.getsize(path)
        if size > good:
            log.warning("%s: cutting off %d bytes of a torn last record", path, size - good)
            os.truncate(path, good)

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line (one system call)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._empty = False
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: the record would be torn; refuse it
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        if self.fsync:
            os.fsync(self._fd)

    def rotate(self, position: int) -> None:
        """Start a new segment: the records so far (all below ``position``) move to ``log.P.jsonl``."""
        self.close()
        if self._empty is None:
            self._empty = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        if self._empty:
            return
        # (No segment of this position exists: a restart's positions start above every logged one, and a
        # rotation needs a record logged since the last.)
        os.rename(self.path, os.path.join(self._folder, f"{self._stem}.{position:012d}{self._ext}"))
        self._empty = True
        if self.fsync:
            folder = os.open(self._folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def drop_below(self, position: int) -> None:
        """Delete the closed segments whose records are all below ``position`` (a snapshot covers them)."""
        for upto, path in self._segments():
            if upto <= position:
                os.unlink(path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
