"""A snapshot of one server's state at a position, so that a restart replays only the log's tail.

What the log's records up to a position built (the learner: models, events waiting for
labels, metric windows, monitors; the feature store's state; the payload types learned;
the first answers kept) is pickled, sealed with :mod:`lake.integrity`'s HMAC bound to the
server id (nothing is unpickled before the tag checks out), and written atomically
(temporary file, ``fsync``, ``rename``) to ``STATE/snapshot.bin``.

The engine takes one only when the lake holds every row up to that position (it commits
first), then empties its log. A restart unseals the snapshot, puts its feature state back
in the store (skipped by a store that is already there or beyond: updates are idempotent
by position) and replays only the log's records after it. A crash between the rename and
the emptying leaves records the snapshot covers in the log: the replay skips them.

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

import os
import pickle
from typing import Any

from lake import integrity

_MAGIC = b"riverlake serving snapshot 1\n"


def _purpose(server_id: str) -> str:
    return f"serving snapshot {server_id}"


def write_snapshot(path: str, state: dict[str, Any], *, server_id: str) -> int:
    """Seal ``state`` and write it to ``path`` atomically; returns the bytes written."""
    tag, data = integrity.seal(pickle.dumps(state, protocol=5), purpose=_purpose(server_id))
    blob = _MAGIC + tag.encode() + b"\n" + data
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
        os.fsync(folder)  # the rename is durable before the log is emptied
    finally:
        os.close(folder)
    return len(blob)


def read_snapshot(path: str, *, server_id: str) -> dict[str, Any] | None:
    """The state in the snapshot at ``path`` (``None`` if there is none), once its HMAC checked out."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        blob = f.read()
    what = f"snapshot of server {server_id!r} ({path})"
    head, _, rest = blob.partition(b"\n")
    tag, _, data = rest.partition(b"\n")
    if head + b"\n" != _MAGIC or not tag:
        raise integrity.IntegrityError(f"{what}: not a riverlake serving snapshot; refusing to read it. "
                                       "Delete it to replay the whole log")
    return integrity.unseal((tag.decode("ascii", "replace"), data), purpose=_purpose(server_id), what=what)
