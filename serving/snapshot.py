"""A snapshot of one server's state at a position, so that a restart replays only the log's tail.

What the log's records up to a position built (the learner: models, events waiting for
labels, metric windows, monitors; the feature store's state; the payload types learned)
is pickled, sealed with :mod:`lake.integrity`'s HMAC bound to the server id (nothing is
unpickled before the tag checks out), and written atomically (temporary file, ``fsync``,
``rename``) to ``STATE/snapshot.bin``. The first answers kept for repeated ids, the part
that grows with what was served, are not pickled whole each time: each snapshot writes the
answers added since the one before to a sealed file of its own (``STATE/answers.P.bin``),
and the snapshot names the files a restart needs (:meth:`serving.requests.Answers.rebuilt`).

A snapshot at position ``P`` is taken in two phases, so that requests do not wait for the
lake (:class:`Snapshots`):

1. between requests, the engine pickles its state at ``P`` (the answers added since the
   last snapshot are only set aside: they are not changed after), starts a new log segment
   for the records from ``P`` on, and notes the highest position it has handed to each lake
   writer; nothing is committed or waited for;
2. once the lake's commits have passed those positions (they land on their own schedule,
   ``flush_seconds``), a low-priority thread writes the answers' file and the snapshot, and
   only then deletes the log segments and answer files that the new snapshot covers.

A crash at any moment leaves a snapshot whose rows are all in the lake and every log
segment after it: a restart loads the snapshot, skips the records below its position and
replays the rest, so nothing is lost or done twice.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "snapshot.bin")
>>> write_snapshot(path, {"next_seq": 3}, server_id="doc") > 0
True
>>> read_snapshot(path, server_id="doc")
{'next_seq': 3}
>>> read_snapshot(path, server_id="other")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lake.integrity.IntegrityError: snapshot of server 'other' (...): HMAC does not match ...
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dataflows.priority import lower_writer_priority
from lake import integrity
from serving.requests import Answers

log = logging.getLogger(__name__)

_MAGIC = b"riverlake serving snapshot 1\n"
_ANSWERS = re.compile(r"^answers\.(\d+)\.bin$")
ANSWERS_SLICE = 2_000
"""Answers pickled per call on the snapshot's thread: a call holds the GIL (~0.5 ms), then the thread
yields it, so a request never waits long behind the snapshot."""


def _purpose(server_id: str, kind: str = "snapshot") -> str:
    return f"serving {kind} {server_id}"


def _write_sealed(path: str, payload: bytes, *, purpose: str) -> int:
    blob = _MAGIC + integrity.sign(payload, purpose=purpose).encode() + b"\n" + payload
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename is durable before what it replaces is deleted
    finally:
        os.close(folder)
    return len(blob)


def _read_sealed(path: str, *, purpose: str, what: str) -> bytes:
    with open(path, "rb") as f:
        blob = f.read()
    head, _, rest = blob.partition(b"\n")
    tag, _, data = rest.partition(b"\n")
    if head + b"\n" != _MAGIC or not tag:
        raise integrity.IntegrityError(f"{what}: not a riverlake serving snapshot; refusing to read it. "
                                       "Delete it to replay the whole log")
    integrity.verify(data, tag.decode("ascii", "replace"), purpose=purpose, what=what)
    return data


def write_snapshot(path: str, state: dict[str, Any] | bytes, *, server_id: str) -> int:
    """Seal ``state`` (or its pickle) and write it to ``path`` atomically; returns the bytes written."""
    payload = state if isinstance(state, bytes) else pickle.dumps(state, protocol=5)
    return _write_sealed(path, payload, purpose=_purpose(server_id))


def read_snapshot(path: str, *, server_id: str) -> dict[str, Any] | None:
    """The state in the snapshot at ``path`` (``None`` if there is none), once its HMAC checked out."""
    if not os.path.exists(path):
        return None
    data = _read_sealed(path, purpose=_purpose(server_id), what=f"snapshot of server {server_id!r} ({path})")
    return pickle.loads(data)  # verified by _read_sealed


def write_answers(path: str, segments: list[tuple[int, list]], *, server_id: str) -> int:
    """Seal the answers' journal ``segments`` and write them to ``path``, pickled a slice at a time."""
    parts: list[bytes] = []
    for gen, adds in segments:
        for start in range(0, len(adds), ANSWERS_SLICE):
            parts.append(pickle.dumps((gen, adds[start:start + ANSWERS_SLICE]), protocol=5))
            time.sleep(0)  # (gives the GIL to a request waiting for it)
    return _write_sealed(path, b"".join(parts), purpose=_purpose(server_id, "answers"))


def read_answers(path: str, *, server_id: str) -> Iterator[tuple[int, list]]:
    """The journal segments in an answers file written by :func:`write_answers`."""
    data = _read_sealed(path, purpose=_purpose(server_id, "answers"), what=f"answers of server {server_id!r} ({path})")
    f = io.BytesIO(data)
    while f.tell() < len(data):
        yield pickle.load(f)  # verified by _read_sealed


@dataclass
class Pending:
    """A snapshot between its two phases."""

    position: int  # next_seq at the snapshot: it covers the records below
    state: bytes  # the pickled state at ``position``
    journal: list[tuple[int, list]]  # the answers added since the last snapshot, by generation
    chunks: list[tuple[str, int]]  # the answers' files the snapshot needs (name, newest generation in it)
    ready: Callable[[], bool]  # whether the lake holds every row below ``position``
    started: float = field(default_factory=time.perf_counter)
    future: Future[int] | None = None


class Snapshots:
    """The snapshots of one server's state folder: loading the last one, and taking the next in two phases."""

    def __init__(self, folder: str, *, server_id: str, drop_segments: Callable[[int], None]) -> None:
        self.folder = folder
        self.server_id = server_id
        self.path = os.path.join(folder, "snapshot.bin")
        self.chunks: list[tuple[str, int]] = []  # the answers' files of the last snapshot written
        self.pending: Pending | None = None
        self._drop_segments = drop_segments  # deletes the log segments below a position
        self._unwritten: list[tuple[int, list]] = []  # the answers of a snapshot that failed: the next writes them
        self._pool: ThreadPoolExecutor | None = None

    def load(self, *, limit: int, journal: bool) -> dict[str, Any] | None:
        """The last snapshot's state with its answers rebuilt (``None``: there is none); deletes answer files
        that it does not name (a crash came before the snapshot that would have named them). ``journal``:
        whether the answers keep a journal for the next snapshots."""
        state = read_snapshot(self.path, server_id=self.server_id)
        if state is not None and isinstance(state["answers"], dict):
            meta = state["answers"]
            self.chunks = [tuple(c) for c in meta["chunks"]]
            segments = (seg for name, _ in self.chunks
                        for seg in read_answers(os.path.join(self.folder, name), server_id=self.server_id))
            state["answers"] = Answers.rebuilt(limit, generation=meta["generation"], segments=segments,
                                               journal=journal)
        elif state is not None and journal:  # a snapshot that held its answers whole: the next writes them all
            state["answers"].start_journal()
        self._drop_chunks()
        return state

    def begin(self, *, position: int, state: dict[str, Any], journal: list[tuple[int, list]], generation: int,
              ready: Callable[[], bool]) -> Pending:
        """Phase 1: ``state`` (its ``answers`` are set here) pickled now; the rest waits for :meth:`advance`."""
        journal, self._unwritten = self._unwritten + journal, []
        chunks = [c for c in self.chunks if c[1] >= generation - 1]  # older generations are no longer kept
        if journal:
            chunks.append((f"answers.{position:012d}.bin", max(gen for gen, _ in journal)))
        state = {**state, "answers": {"generation": generation, "chunks": chunks}}
        self.pending = Pending(position, pickle.dumps(state, protocol=5), journal, chunks, ready)
        return self.pending

    def advance(self, *, wait: bool = False) -> int | None:
        """Phase 2, called between requests: once the lake holds the rows below the snapshot's position, hand
        the writing to a low-priority thread. Returns the position once the snapshot is written (``wait``:
        wait for the writing, if the rows are there)."""
        p = self.pending
        if p is None:
            return None
        if p.future is None:
            if not p.ready():
                return None
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serving-snapshot",
                                                initializer=lower_writer_priority)
            p.future = self._pool.submit(self._write, p)
        if not wait and not p.future.done():
            return None
        self.pending = None
        try:
            size = p.future.result()
        except Exception:  # the log segments stay: the next snapshot covers them, and writes these answers
            self._unwritten = p.journal
            log.exception("%s: snapshot at position %d failed; the log keeps its records", self.server_id,
                          p.position - 1)
            return None
        self.chunks = p.chunks
        log.info("%s: snapshot at position %d (%d bytes) written %.3f s after it was taken", self.server_id,
                 p.position - 1, size, time.perf_counter() - p.started)
        return p.position

    def _write(self, p: Pending) -> int:
        size = 0
        if p.journal:
            size += write_answers(os.path.join(self.folder, p.chunks[-1][0]), p.journal, server_id=self.server_id)
        size += write_snapshot(self.path, p.state, server_id=self.server_id)
        self._drop_segments(p.position)
        self._drop_chunks(keep={name for name, _ in p.chunks})
        return size

    def _drop_chunks(self, keep: set[str] | None = None) -> None:
        keep = {name for name, _ in self.chunks} if keep is None else keep
        for name in os.listdir(self.folder):
            if (_ANSWERS.match(name) and name not in keep) or name.endswith(".bin.tmp"):
                os.unlink(os.path.join(self.folder, name))

    def close(self) -> None:
        """Drop a snapshot not yet written (its log segments stay) and stop the thread."""
        self.pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
