"""How the flows' command lines run Prefect: the embedded (ephemeral) API, patient on a busy machine.

Prefect reads its settings when it is imported, so a variable set in ``main`` comes too late;
:func:`embedded_prefect` applies the defaults as temporary settings instead, unless the
environment sets them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

STARTUP_TIMEOUT_S = 180
"""Seconds the embedded Prefect API may take to start (Prefect's own default, 20, fails on a
busy 2-core machine)."""


@contextmanager
def embedded_prefect() -> Iterator[None]:
    """Run the enclosed flows with a startup timeout of :data:`STARTUP_TIMEOUT_S` and analytics off,
    where ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``/``PREFECT_SERVER_ANALYTICS_ENABLED`` are unset."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = STARTUP_TIMEOUT_S
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    with temporary_settings(updates=updates):
        yield
