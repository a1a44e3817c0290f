"""Drift reports over time: every report also goes to an Evidently workspace, one project per lake.

    evidently ui --workspace LAKE/reports/evidently --host 127.0.0.1 --port 8001

shows the reports of a lake as a list and a dashboard: the share of drifted columns and the number of
drifted columns per report, plotted at the end of each report's current window (event time), so drift
reads as a curve over the history rather than as separate HTML pages. The workspace is a folder of JSON
files written by Evidently's own local workspace; reports are added without their data
(``include_data=False``): the lake keeps the rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROJECT_PREFIX = "riverlake drift: "


def workspace_dir(lake: str | os.PathLike[str]) -> Path:
    """``LAKE/reports/evidently`` (a local folder also for an object-store lake, beside its other reports)."""
    from lake.storage import state_dir

    return state_dir(lake, "reports", "evidently")


def project_for(workspace: Any, lake: str) -> Any:
    """The lake's project in ``workspace``, created with its dashboard on first use."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import counter_panel, line_plot_panel

    name = PROJECT_PREFIX + lake
    for project in workspace.list_projects():
        if project.name == name:
            return project
    project = workspace.create_project(name, description=f"Evidently drift reports of the riverlake lake {lake}")
    share = PanelMetric(legend="share of drifted columns", metric="DriftedColumnsCount",
                        metric_labels={"value_type": "share"})
    count = PanelMetric(legend="drifted columns", metric="DriftedColumnsCount", metric_labels={"value_type": "count"})
    project.dashboard.add_panel(counter_panel("Drifted columns in the latest report", [count], size="half"))
    project.dashboard.add_panel(counter_panel("Share of drifted columns, latest", [share], size="half"))
    project.dashboard.add_panel(line_plot_panel(
        "Share of drifted columns per report", [share],
        description="at the end of each report's current window (event time)"))
    project.dashboard.add_panel(line_plot_panel("Drifted columns per report", [count]))
    return project


def add_report(lake: str, snapshot: Any, *, name: str) -> str:
    """Add a drift ``snapshot`` to the lake's workspace project; returns the workspace folder."""
    from evidently.ui.workspace import Workspace

    folder = workspace_dir(lake)
    folder.mkdir(parents=True, exist_ok=True)
    workspace = Workspace.create(str(folder))
    project = project_for(workspace, lake)
    workspace.add_run(project.id, snapshot, include_data=False, name=name)
    return str(folder)
