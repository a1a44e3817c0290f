"""Built-in scenarios: generated or shipped data sets in the lake's layout.

A scenario is a function of keyword parameters returning :class:`ScenarioFrames`;
:func:`lake.ingest.ingest_scenario` writes them through the same validated path
as a user file.

>>> sorted(SCENARIOS)
['agrawal-drift', 'flights', 'friedman-drift', 'rbf-drift', 'urls']
"""

from __future__ import annotations

from collections.abc import Callable

from lake.scenarios.agrawal import agrawal_drift
from lake.scenarios.drifting import friedman_drift, rbf_drift
from lake.scenarios.flights import flights
from lake.scenarios.frames import ScenarioFrames
from lake.scenarios.urls import urls

SCENARIOS: dict[str, Callable[..., ScenarioFrames]] = {
    "flights": flights,
    "agrawal-drift": agrawal_drift,
    "urls": urls,
    "friedman-drift": friedman_drift,
    "rbf-drift": rbf_drift,
}
"""Scenario name → function building its frames."""

__all__ = ["SCENARIOS", "ScenarioFrames", "agrawal_drift", "flights", "friedman_drift", "rbf_drift", "urls"]
