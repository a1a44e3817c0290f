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

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "log.jsonl")
>>> log = ServingLog(path)
>>> log.append({"items": [[0, 0, "e1", 0, "k", {"x": 1.5}]], "dead": []})
>>> log.close()
>>> [r["items"][0][2] for r in ServingLog(path).records()]
['e1']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def last_position(record: dict[str, Any]) -> int:
    """The last position of a logged request (its items' and dead letters' ``seq``)."""
    return max([it[0] for it in record["items"]] + [d[0] for d in record["dead"]])


class ServingLog:
    """Append-only JSON-lines log of one server."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._fd: int | None = None

    def records(self) -> Iterator[dict[str, Any]]:
        """The logged requests in order; cuts off a torn last line."""
        if not os.path.exists(self.path):
            return
        good = 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                good += len(line)
                yield record
        size = os.path.getsize(self.path)
        if size > good:
            log.warning("%s: cutting off %d bytes of a torn last record", self.path, size - good)
            os.truncate(self.path, good)

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line (one system call)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, data)
        if written != len(data):  # a full disk: the record would be torn; refuse it
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        if self.fsync:
            os.fsync(self._fd)

    def reset(self) -> None:
        """Empty the log (a snapshot now holds what its records built)."""
        self.close()
        if os.path.exists(self.path):
            os.truncate(self.path, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
