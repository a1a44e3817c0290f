"""Replay the newest version of a lake's history through the dataflow, as a Prefect flow.

    python -m flows.serve --lake lakehouse      # serves it as the deployment "replay" (run it from the UI)

The flow pins the newest Delta versions of ``events`` and ``labels`` when it starts and runs
:func:`dataflows.online.run_replay` on them with recovery on. Its run id is derived from the lake, the
versions and the settings (:mod:`lake.runs`): a run on a lake that did not change resumes or finds the
run done (its writers skip what is committed); a run after new events arrived is a new run. The
parameters are the settings a user edits in the Prefect UI; ``settings`` passes any other keyword of
:func:`dataflows.online.replay_job` (e.g. ``{"shards": 2, "label_ttl": "30d"}``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger


@flow(name="replay")
def replay(lake: str = "lakehouse", model: str = "linear", exclude: str = "", window: str | None = None,
           settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dataflow over the newest versions of ``events`` and ``labels``; returns the run id and the versions."""
    from dataflows.online import run_replay
    from lake.table import open_table

    extra = dict(settings or {})
    pinned = {"events_version": open_table(lake, "events").version(),
              "labels_version": open_table(lake, "labels").version()}
    for name in ("events_version", "labels_version"):
        extra.setdefault(name, pinned[name])
    if exclude:
        extra["exclude"] = exclude
    if window:
        extra["window"] = window
    logger = get_run_logger()
    logger.info("replay of %s: models %s, events v%s, labels v%s", lake, model, extra["events_version"],
                extra["labels_version"])
    run_id = run_replay(lake, model, **extra)
    logger.info("run %s done", run_id)
    return {"run_id": run_id, "events_version": extra["events_version"], "labels_version": extra["labels_version"]}
