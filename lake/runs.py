"""Run identity: what a run id stands for, recorded once in the lake's ``runs`` table.

A run id names the rows a run writes and the positions its writers resume from, so
one id must always mean the same inputs and settings. :class:`RunIdentity` holds
them (the lake, the Delta versions read or the Kafka topic and partitions, the batch
size, the settings); :meth:`RunIdentity.run_id` derives an id from them, and
:func:`record_run` checks a starting run against what its id was first used for:
the same identity resumes, another one is refused before any work.

>>> import tempfile
>>> lake = tempfile.mkdtemp()
>>> ident = RunIdentity(kind="replay", lake=lake, events_version=3, labels_version=3, batch_size=50,
...                     settings={"models": ["linear"], "seed": 42})
>>> ident.run_id().startswith("replay-")
True
>>> record_run(lake, "r1", ident)
True
>>> record_run(lake, "r1", ident)  # the same run again: it resumes
False
>>> record_run(lake, "r1", RunIdentity(kind="replay", lake=lake, events_version=4, labels_version=3,
...            batch_size=50, settings={"models": ["linear"], "seed": 42}))
Traceback (most recent call last):
...
lake.errors.RunIdentityError: run 'r1' is recorded in ... (recorded -> now: events_version 3 -> 4); ...
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl

from lake.errors import RunIdentityError, WriterFencedError
from lake.table import TableWriter, exists, read_table

_COLUMNS = ("kind", "lake", "events_version", "labels_version", "batch_size", "topic", "partitions")


def lake_uri(lake: str | os.PathLike[str]) -> str:
    """The lake root as recorded in a run's identity: an absolute path, or the URI without a trailing slash.

    >>> lake_uri("s3://bucket/lake/")
    's3://bucket/lake'
    """
    root = os.fspath(lake)
    return root.rstrip("/") if "://" in root else os.path.abspath(root)


@dataclass(frozen=True)
class RunIdentity:
    """Everything that decides what a run writes; two runs with equal identities write the same rows.

    ``kind`` is ``"replay"`` (``events_version``/``labels_version`` set) or ``"live"``
    (``topic`` and ``partitions`` set). ``settings`` must be JSON-serialisable; the flows pass
    :meth:`dataflows.settings.RunSettings.identity`, every setting that can change a row.
    """

    kind: Literal["replay", "live"]
    lake: str
    settings: dict[str, Any] = field(default_factory=dict)
    events_version: int | None = None
    labels_version: int | None = None
    batch_size: int | None = None
    topic: str | None = None
    partitions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("replay", "live"):
            raise ValueError(f"kind must be 'replay' or 'live', got {self.kind!r}")
        if self.kind == "live" and (not self.topic or not self.partitions):
            raise ValueError(f"a live run's identity needs a topic and partitions, got {self.topic!r}, "
                             f"{self.partitions!r}")
        object.__setattr__(self, "lake", lake_uri(self.lake))
        object.__setattr__(self, "partitions", tuple(sorted(int(p) for p in self.partitions)))
        json.dumps(self.settings)  # fails here, naming the value, rather than when recorded

    def columns(self) -> dict[str, Any]:
        """The identity as the ``runs`` table's columns (``settings`` as sorted JSON)."""
        return {"kind": self.kind, "lake": self.lake, "events_version": self.events_version,
                "labels_version": self.labels_version, "batch_size": self.batch_size, "topic": self.topic,
                "partitions": ",".join(map(str, self.partitions)) if self.partitions else None,
                "settings": json.dumps(self.settings, sort_keys=True)}

    def digest(self) -> str:
        """sha256 of the identity: equal exactly when every field is."""
        return hashlib.sha256(json.dumps(self.columns(), sort_keys=True).encode()).hexdigest()

    def run_id(self) -> str:
        """A run id derived from the identity, e.g. ``replay-1a2b3c4d5e6f`` or ``live-...``."""
        return f"{self.kind}-{self.digest()[:12]}"


def _differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = [f"{name} {recorded[name]!r} -> {now[name]!r}" for name in _COLUMNS if recorded[name] != now[name]]
    old, new = json.loads(recorded["settings"]), json.loads(now["settings"])
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key} {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}")
    return out


def recorded_run(lake: str | os.PathLike[str], run_id: str) -> dict[str, Any] | None:
    """The ``runs`` row of ``run_id`` (as a dict), ``None`` if the id was never used on this lake."""
    if not exists(lake, "runs"):
        return None
    rows = read_table(lake, "runs").filter(pl.col("run_id") == run_id)
    return rows.row(0, named=True) if rows.height else None


def record_run(lake: str | os.PathLike[str], run_id: str, identity: RunIdentity) -> bool:
    """Record ``run_id``'s identity on first use; returns ``True`` then, ``False`` when it resumes.

    Raises :class:`~lake.errors.RunIdentityError` when the id was first used with another
    identity (another lake, other Delta versions, topic, batch size or settings). Two
    starts at the same moment record one row; the second then checks against it.
    """
    if not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    now = identity.columns()
    recorded = recorded_run(lake, run_id)
    if recorded is None:
        row = {"run_id": run_id, "identity": identity.digest(), **now, "started_at": datetime.now(UTC)}
        try:
            if TableWriter(lake, "runs", writer_id=f"runs/{run_id}").append(pl.DataFrame([row]), position=0):
                return True
        except WriterFencedError:
            pass  # another start recorded it first
        recorded = recorded_run(lake, run_id)
        assert recorded is not None, f"runs: {run_id!r} neither recorded nor readable"
    if recorded["identity"] != identity.digest():
        raise RunIdentityError(run_id, _differences(recorded, now), lake=lake_uri(lake))
    return False
