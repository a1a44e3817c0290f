"""A stage trace of the live path: when each run of offsets of a partition passed a stage.

``StageTrace(path).mark("consumed", partition, lo, hi)`` appends one JSON line
``{"stage", "p", "lo", "hi", "t"}`` (``t``: wall-clock seconds) to ``{path}.{pid}``,
one file per process, shared by the partitions and threads of that process.
:mod:`dataflows.bench.live` joins these lines with the produce time of each
offset to tell where a message's latency goes. One line per batch, not per
message: a few microseconds per batch when on, nothing when off.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO

_str = json.encoder.encode_basestring_ascii  # (a str as json.dumps writes it, quotes included)

_FILES: dict[str, tuple[IO[str], threading.Lock]] = {}
_OPEN = threading.Lock()


class StageTrace:
    """Appends stage marks of one process to ``{path}.{pid}``."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        if not path:
            raise ValueError(f"trace path must be a non-empty string, got {path!r}")
        self.path = path

    def _file(self) -> tuple[IO[str], threading.Lock]:
        name = f"{self.path}.{os.getpid()}"
        with _OPEN:
            entry = _FILES.get(name)
            if entry is None:
                entry = _FILES[name] = (open(name, "a", encoding="utf-8"), threading.Lock())  # noqa: SIM115
            return entry

    def mark(self, stage: str, partition: int, lo: int, hi: int) -> None:
        """Offsets ``lo..hi`` of ``partition`` passed ``stage`` now."""
        # (the line json.dumps would write, without a dict per mark: the marks are on the prediction path)
        line = (f'{{"stage": {_str(stage)}, "p": {int(partition)}, "lo": {int(lo)}, "hi": {int(hi)}, '
                f'"t": {time.time()!r}}}\n')
        f, lock = self._file()
        with lock:
            f.write(line)
            f.flush()
