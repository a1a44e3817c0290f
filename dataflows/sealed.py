"""Pickles compressed and sealed for a live recovery snapshot.

A live snapshot carries what is not yet in the lake (the sink's rows, the
recorder's messages). Bytewax writes every snapshot into its SQLite store on the
worker's thread, so each byte saved there shortens the pause; a pickle is
compressed with zstd at level 1 (:func:`compress`, ~1/4-1/5 of these pickles,
~1-2 ms a MB) and sealed with the lake's HMAC key (:func:`lake.integrity.seal`).
The tag covers the compressed bytes: a restart checks it before anything is
decompressed or unpickled.

:func:`seal_parts` seals several compressed pickles at once, so a writer can
compress its items in parts as they come and a snapshot only joins them.

>>> import os; os.environ["RIVERLAKE_KEY"] = "00" * 32
>>> sealed = seal_parts([pack([1, 2]), pack([3])], purpose="recovery state: test")
>>> unseal_parts(sealed, purpose="recovery state: test", what="test state")
[[1, 2], [3]]
>>> unseal_parts((sealed[0], sealed[1] + b"x"), purpose="recovery state: test", what="test state")
Traceback (most recent call last):
...
lake.integrity.IntegrityError: test state: HMAC does not match ...
>>> del os.environ["RIVERLAKE_KEY"]
"""

from __future__ import annotations

import pickle
from typing import Any

import pyarrow as pa

from lake import integrity

PARTS = b"riverlake parts zstd\n"
"""Marks sealed parts: ``PARTS + (each part's length, 8 bytes big-endian, + the part)...``."""

_SIZE = 8


def compress(data: bytes) -> bytes:
    """``data``'s size (8 bytes, big-endian) + ``data`` zstd-compressed at level 1."""
    return len(data).to_bytes(_SIZE, "big") + pa.Codec("zstd", compression_level=1).compress(data, asbytes=True)


def decompress(framed: bytes | memoryview) -> bytes:
    """The bytes :func:`compress` took (call it only on bytes whose HMAC checked out)."""
    framed = memoryview(framed)
    size = int.from_bytes(framed[:_SIZE], "big")
    return pa.Codec("zstd").decompress(framed[_SIZE:], decompressed_size=size, asbytes=True)


def pack(obj: Any) -> bytes:
    """``obj`` pickled and compressed: a part for :func:`seal_parts`."""
    return compress(pickle.dumps(obj, protocol=5))


def seal_parts(parts: list[bytes], *, purpose: str) -> tuple[str, bytes]:
    """``(tag, data)``: :func:`pack`-ed parts joined and sealed for ``purpose``."""
    joined = [PARTS]
    for part in parts:
        joined += (len(part).to_bytes(_SIZE, "big"), part)
    return integrity.seal(b"".join(joined), purpose=purpose)


def is_sealed_parts(state: Any) -> bool:
    """Whether a snapshot's value has the form :func:`seal_parts` gives (its tag not yet checked)."""
    return (isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], str)
            and isinstance(state[1], bytes) and state[1].startswith(PARTS))


def unseal_parts(sealed: Any, *, purpose: str, what: str) -> list[Any]:
    """The objects :func:`seal_parts` sealed, in order; decompressed and unpickled only once the tag checked out
    (:class:`lake.integrity.IntegrityError` otherwise, naming ``what``)."""
    if not is_sealed_parts(sealed):
        raise integrity.IntegrityError(f"{what}: not parts sealed with an HMAC (replaced, or written by another "
                                       "program); refusing to unpickle it. Delete the recovery folder to start "
                                       "the run over")
    tag, data = sealed
    integrity.verify(data, tag, purpose=purpose, what=what)  # before anything is decompressed or unpickled
    view, at, out = memoryview(data), len(PARTS), []
    while at < len(view):
        n = int.from_bytes(view[at:at + _SIZE], "big")
        at += _SIZE
        out.append(pickle.loads(decompress(view[at:at + n])))  # verified above
        at += n
    return out
