"""The settings of one prediction server, validated once.

>>> cfg = ServeConfig(lake="/tmp/lake", models=("linear",))
>>> cfg.server_id, cfg.store, cfg.state_path.endswith("_serving/serve")
('serve', 'memory', True)
>>> ServeConfig(lake="/tmp/lake", server_id="a/b")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: server_id must be letters, digits, '-', '_' or '.', got 'a/b'
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from dataflows.learner import RunConfig
from monitoring.stream import MonitorConfig

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ServeConfig:
    """What a server serves and where it writes.

    ``server_id`` is the server's identity: the ``run_id`` of its rows in the lake, the
    namespace of its feature state, the folder of its log. A server restarted with the
    same id resumes; two servers with the same id at once are refused.
    """

    lake: str
    server_id: str = "serve"
    models: tuple[str, ...] = ("linear",)
    store: str = "memory"
    state_dir: str | None = None  # default: LAKE/_serving/SERVER_ID (a local lake only)
    seed: int = 42
    checkpoint_every: int = 1_000
    exclude: tuple[str, ...] = ()
    anomaly: str | None = None
    stats_window: str | None = None
    flush_rows: int = 5_000
    flush_seconds: float = 1.0
    remember: int = 500_000  # first answers kept for at least this many recent event ids
    fsync: bool = False
    # Every this many positions, snapshot the state (written once the lake holds its rows; the log segments it
    # covers are then deleted). 0: never; restarts replay the whole log.
    snapshot_every: int = 50_000
    # On a first start (an empty log): learn the lake's events + labels before serving (a replay in process).
    warm_start: bool = False
    # binary, multiclass or regression (lake.tasks); None: the lake's (binary before any label).
    task: str | None = None

    def __post_init__(self) -> None:
        if not _ID.match(self.server_id):
            raise ValueError(f"server_id must be letters, digits, '-', '_' or '.', got {self.server_id!r}")
        if self.flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {self.flush_rows!r}")
        if not self.flush_seconds > 0:
            raise ValueError(f"flush_seconds must be > 0, got {self.flush_seconds!r}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {self.snapshot_every!r}")
        if self.remember < 1:
            raise ValueError(f"remember must be >= 1, got {self.remember!r}")
        if self.state_dir is None and "://" in self.lake:
            raise ValueError(f"lake {self.lake!r} is not a local folder: give state_dir (a local folder)")
        self._resolve_task()
        self.run_config()  # the model names, checkpoint_every, ... fail here

    def _resolve_task(self) -> None:
        """``task`` as the lake's (:func:`lake.tasks.read_task`); a task given that is not the lake's is refused."""
        from lake.tasks import TASKS, read_task

        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        found = read_task(self.lake)
        if found is not None and self.task not in (None, found.name):
            raise ValueError(f"task {self.task!r} is not the lake's: {self.lake} holds a {found.name} task")
        object.__setattr__(self, "task", found.name if found is not None else self.task or "binary")

    @property
    def state_path(self) -> str:
        """The folder of the server's log and lock."""
        if self.state_dir is not None:
            return os.path.abspath(self.state_dir)
        return os.path.join(os.path.abspath(self.lake), "_serving", self.server_id)

    def run_config(self) -> RunConfig:
        """The learner's settings: the same predict/learn step as the dataflow's."""
        return RunConfig(
            run_id=self.server_id, task=self.task, models=self.models, seed=self.seed,
            checkpoint_every=self.checkpoint_every,
            featurizer={"exclude": sorted(self.exclude)},
            monitor=MonitorConfig.from_settings(stats_window=self.stats_window, anomaly=self.anomaly),
        )

    def identity(self) -> dict[str, Any]:
        """What must not change between restarts of the same server (the log replays under it)."""
        keep = ("server_id", "models", "seed", "checkpoint_every", "exclude", "anomaly", "stats_window")
        d = asdict(self)
        if self.task != "binary":  # (servers started before tasks existed are binary and keep their identity)
            keep = (*keep, "task")
        return {k: list(d[k]) if isinstance(d[k], tuple) else d[k] for k in keep}
