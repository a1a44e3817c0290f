"""The events waiting for their labels, as a recovery snapshot carries them: pickled once, not at every snapshot.

A live shard holds thousands of events waiting for their labels (``ShardLearner.pending``: event id ->
``(features, event_time, key, scores)`` on the item path, or the slot of its row in the columnar step's arena).
An entry never changes once the event is predicted: it is added, then removed when the label comes or the
label TTL passes (the columnar step may move it into its arena, which replaces the value). Pickling every
entry at every snapshot (~2 µs each) paused the flow for most of a snapshot's time.

:class:`PendingPacker` keeps, between snapshots, the item entries it already pickled, in compressed chunks
of the entries that were new at one snapshot. A snapshot's :class:`PackedPending` holds the waiting ids in
their order, each one's arena slot or (chunk, position), and the chunks still referenced: only the entries
new since the last snapshot are pickled again. When the chunks hold more removed entries than waiting ones,
the waiting ones are packed again into one chunk (amortised: each entry is pickled O(1) times).

>>> packer = PendingPacker()
>>> pending = {"e1": ({"x": 1.0}, 5, "k", [0.5]), "e2": 7}
>>> packed = packer.pack(pending)
>>> packed.unpack() == pending
True
>>> pending["e3"] = ({"x": 2.0}, 6, "k", [0.4])
>>> del pending["e1"]
>>> again = packer.pack(pending)
>>> again.unpack() == pending, len(again.chunks)
(True, 2)
"""

from __future__ import annotations

import pickle
from array import array
from typing import Any

from dataflows.sealed import compress, decompress

_CHUNK_BITS = 32
_POSITION = (1 << _CHUNK_BITS) - 1


class PackedPending:
    """A snapshot of ``pending`` (see the module docstring); :meth:`unpack` gives the dict back, in order."""

    __slots__ = ("ids", "refs", "chunks")

    def __init__(self, ids: list[str], refs: bytes, chunks: list[bytes | None]) -> None:
        self.ids = ids
        self.refs = refs  # int64 per id: the arena slot (>= 0) or -(1 + (chunk << 32 | position))
        self.chunks = chunks  # compressed pickles of lists of entries (None: a chunk no id refers to)

    def __getstate__(self) -> tuple:
        return self.ids, self.refs, self.chunks

    def __setstate__(self, state: tuple) -> None:
        self.ids, self.refs, self.chunks = state

    def unpack(self) -> dict[str, Any]:
        refs = array("q")
        refs.frombytes(self.refs)
        if len(refs) != len(self.ids):
            raise ValueError(f"pending events in a snapshot: {len(refs)} references for {len(self.ids)} ids")
        # (the snapshot's own bytes, under its HMAC: checked before anything of it was unpickled)
        chunks = [None if c is None else pickle.loads(decompress(c)) for c in self.chunks]
        out: dict[str, Any] = {}
        for event_id, ref in zip(self.ids, refs, strict=True):
            if ref >= 0:
                out[event_id] = ref
            else:
                ref = -1 - ref
                out[event_id] = chunks[ref >> _CHUNK_BITS][ref & _POSITION]  # type: ignore[index]
        return out


class PendingPacker:
    """Packs ``pending`` at each snapshot, reusing the chunks of entries pickled at earlier ones (not state:
    a learner restored from a snapshot starts with none)."""

    def __init__(self) -> None:
        self._chunks: list[bytes | None] = []
        self._where: dict[str, tuple[int, Any]] = {}  # event id -> (reference, the entry object it packed)

    def pack(self, pending: dict[str, Any]) -> PackedPending:
        where = self._where
        if len(where) > 2 * len(pending) + 1_000:  # (more entries gone than waiting: pack the waiting ones anew)
            self._chunks, where = [], {}
            self._where = where
        chunk = len(self._chunks)
        fresh: list[Any] = []
        refs = array("q")
        append = refs.append
        get = where.get
        for event_id, entry in pending.items():
            if type(entry) is int and entry >= 0:  # (an arena slot)
                append(entry)
                continue
            known = get(event_id)
            if known is not None and known[1] is entry:
                append(known[0])
                continue
            ref = -1 - (chunk << _CHUNK_BITS | len(fresh))
            fresh.append(entry)
            where[event_id] = (ref, entry)
            append(ref)
        if fresh:
            self._chunks.append(compress(pickle.dumps(fresh, protocol=5)))
        used = {(-1 - r) >> _CHUNK_BITS for r in refs if r < 0}
        for i in range(len(self._chunks)):
            if i not in used:  # (its entries all left: none can come back, an entry is never re-added)
                self._chunks[i] = None
        return PackedPending(list(pending), refs.tobytes(), list(self._chunks))
