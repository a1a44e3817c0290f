"""Where the lake lives: a local folder or an object-store URI, and what must stay local.

The lake root is a folder (``lakehouse``) or any URI deltalake opens:
``s3://bucket/prefix`` (AWS S3 and S3-compatible servers: MinIO, Cloudflare R2,
moto), ``gs://``, ``az://``/``abfss://``, ``file:///abs/path``. Tables are
``ROOT/<table>`` either way (:func:`lake.table.table_uri`).

Credentials and endpoints come from the environment, which deltalake and polars
both read on every open, so every reader and writer of the project sees the same
store without passing options around: for S3, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, and for an S3-compatible server
``AWS_ENDPOINT_URL`` (plus ``AWS_ALLOW_HTTP=true`` when it speaks plain http).
Set ``AWS_CONDITIONAL_PUT=etag`` for concurrent writers: deltalake then creates each
log entry with a conditional put (``If-None-Match: *``), so two writers racing for the
same version cannot both win; the loser re-reads and retries. Never set
``AWS_S3_ALLOW_UNSAFE_RENAME=true`` for a lake with more than one writer.

Bytewax recovery state is *not* in the object store: Bytewax keeps it in SQLite
files in a local folder. For a local lake that folder is ``LAKE/_recovery``; for
an object-store lake it is ``$RIVERLAKE_STATE_DIR`` (default ``./riverlake-state``)
followed by the URI's scheme, bucket and prefix, so two lakes never share state.
A restarted worker must find its folder again: keep it on a persistent volume.

>>> is_remote("s3://bucket/lake"), is_remote("lakehouse"), is_remote("file:///data/lake")
(True, False, False)
>>> str(state_dir("s3://bucket/lake/", "_recovery", "run-1", base="/var/riverlake"))
'/var/riverlake/s3/bucket/lake/_recovery/run-1'
>>> str(state_dir("/data/lake", "_recovery", "run-1"))
'/data/lake/_recovery/run-1'
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

STATE_DIR_ENV = "RIVERLAKE_STATE_DIR"
DEFAULT_STATE_DIR = "riverlake-state"


def is_remote(lake: str | os.PathLike[str]) -> bool:
    """Whether the lake root is an object-store URI (``file://`` counts as local)."""
    root = os.fspath(lake)
    return "://" in root and not root.startswith("file://")


def local_path(lake: str | os.PathLike[str]) -> Path:
    """The folder of a local lake root (a path or a ``file://`` URI); :class:`ValueError` for an object store."""
    root = os.fspath(lake)
    if is_remote(root):
        raise ValueError(f"lake {root!r} is an object-store URI, not a local folder")
    if root.startswith("file://"):
        root = unquote(urlparse(root).path)
    return Path(os.path.abspath(root))


def canonical(lake: str | os.PathLike[str]) -> str:
    """The lake root as it should be recorded (tags, parameters, ids): absolute path or URI without a trailing ``/``.

    >>> canonical("s3://bucket/lake/")
    's3://bucket/lake'
    """
    root = os.fspath(lake)
    return root.rstrip("/") if is_remote(root) else str(local_path(root))


def state_dir(lake: str | os.PathLike[str], *parts: str, base: str | os.PathLike[str] | None = None) -> Path:
    """Local folder for state that belongs to ``lake`` but must stay on this machine (Bytewax recovery).

    Inside the lake for a local lake; for an object-store lake, under ``base``
    (default ``$RIVERLAKE_STATE_DIR``, else ``./riverlake-state``) by scheme, bucket
    and prefix. Nothing is created here.
    """
    root = os.fspath(lake)
    if not is_remote(root):
        return local_path(root).joinpath(*parts)
    url = urlparse(root.rstrip("/"))
    top = Path(os.path.abspath(base or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR))
    segments = [url.scheme, url.netloc, *[s for s in url.path.split("/") if s]]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"lake URI {root!r} has '.' or '..' segments")
    return top.joinpath(*segments, *parts)
