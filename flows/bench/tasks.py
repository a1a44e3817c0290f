"""The benchmark flow's parts: plain helpers (strategy names, the benchmark id, MLflow logging)
and the Prefect tasks :func:`flows.benchmark.benchmark` runs.

Split from :mod:`flows.benchmark`, which re-exports the public names.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.bench.progress import StrategyProgress
from flows.bench.report import (
    StrategyResult,
)
from flows.bench.strategies import BenchConfig, StrategyRun, StrategySpec, run_isolated, run_strategy
from flows.bench.stream import Stream, build_stream
from flows.retry import retry_options

# --------------------------------------------------------------------------- plain helpers


def strategy_names(online: str = "linear", adwin: str = "linear", batch: str = "sk-logreg,hgb",
                   windows: str = "sliding,expanding", static: str = "sk-logreg,hgb",
                   extra: str = "", *, task: str | None = "binary") -> list[str]:
    """Strategy names from the CLI's comma lists (``extra``: full names such as ``periodic-sliding/river-linear``),
    checked against ``task``'s learners (``None``: the task is not known yet, the flow checks them)."""
    def split(s: str) -> list[str]:
        return [p.strip() for p in s.split(",") if p.strip()]

    names = [f"online/{m}" for m in split(online)] + [f"adwin-reset/{m}" for m in split(adwin)]
    names += [f"periodic-{w}/{m}" for m in split(batch) for w in split(windows)]
    names += [f"static/{m}" for m in split(static)] + split(extra)
    for name in names if task is not None else ():
        StrategySpec.parse(name, task=task)
    if len(set(names)) != len(names):
        raise ValueError(f"strategies must be distinct, got {names}")
    if not names:
        raise ValueError("no strategy to run")
    return names


def benchmark_id_for(identity: dict[str, Any], *, now: datetime) -> str:
    """``b<config hash>-<UTC time>``: the hash is the same exactly when pin and settings are."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"b{digest}-{now:%Y%m%dT%H%M%S}"


def log_to_mlflow(*, tracking_uri: str, artifact_location: str | None, experiment: str, benchmark_id: str,
                  params: dict[str, Any], results: list[StrategyResult], strategy_params: dict[str, dict[str, Any]],
                  report_path: str) -> str:
    """One parent run (params, report artifact) with a child run per strategy; returns the parent's id.

    Idempotent under retries: runs of an earlier try of the same benchmark are deleted first,
    and a try that had completed is returned as it is.
    """
    from mlflow.entities import Metric, Param, RunTag

    from flows.registry import client_for

    client = client_for(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_location)
    from flows.registry import runs_tagged

    earlier = runs_tagged(client, exp_id, benchmark_id=benchmark_id)
    for run in earlier:
        if run.data.tags.get("riverlake.complete") == "true":
            return run.info.run_id
    for run in earlier:
        client.delete_run(run.info.run_id)
    now = int(time.time() * 1000)
    tags = {"riverlake.benchmark_id": benchmark_id, "riverlake.lake": str(params.get("lake", "")),
            "riverlake.events_version": str(params.get("events_version")),
            "riverlake.labels_version": str(params.get("labels_version"))}
    parent = client.create_run(exp_id, run_name=f"benchmark {benchmark_id}", tags=tags).info.run_id
    client.log_batch(parent, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())])
    for r in results:
        child = client.create_run(exp_id, run_name=r.name, tags={
            **tags, "mlflow.parentRunId": parent, "riverlake.strategy": r.name}).info.run_id
        metrics = [Metric(k, float(v), now, 0) for k, v in r.metrics.items() if v is not None]
        for i, w in enumerate(r.windows):
            metrics += [Metric(f"window_{k}", float(w[k]), now, i)
                        for k in ("accuracy", "log_loss", "roc_auc", "macro_f1", "mae", "rmse", "r2")
                        if w.get(k) is not None]
        for k in range(0, len(metrics), 900):
            client.log_batch(child, metrics=metrics[k:k + 900])
        client.log_batch(child, params=[Param(k, str(v)) for k, v in sorted(strategy_params[r.name].items())])
        client.set_terminated(child)
    client.log_artifact(parent, report_path)
    client.log_batch(parent, tags=[RunTag("riverlake.complete", "true")])
    client.set_terminated(parent)
    return parent


def ensure_history(lake: str, scenario: str | None, params: dict[str, Any] | None = None) -> str | None:
    """Fill an empty lake with ``scenario`` (``params`` such as ``n`` go to it); returns what was done
    (``None``: nothing to do)."""
    from lake.table import exists

    if scenario is None or exists(lake, "events"):
        return None
    from lake.ingest import ingest_scenario

    return str(ingest_scenario(lake, scenario, **(params or {})))


def as_version(value: str | int | None) -> int | str | None:
    if value is None or value == "latest":
        return None
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    return str(value)  # an ISO timestamp: both tables as of that time


# --------------------------------------------------------------------------- tasks


@task(cache_policy=NO_CACHE)
def pin_history(lake: str, as_of: str | int | None, labels_as_of: str | int | None) -> dict[str, int | None]:
    """The Delta versions the benchmark reads, resolved once (the tables may grow meanwhile)."""
    from dataflows.replay import pin_versions
    from lake.table import open_table

    ev, lv = as_version(as_of), as_version(labels_as_of)
    if isinstance(ev, str):  # a timestamp pins both tables
        events = open_table(lake, "events", version=ev).version()
        labels = open_table(lake, "labels", version=lv if lv is not None else ev).version()
        return {"events": events, "labels": labels}
    if isinstance(lv, str):
        lv = open_table(lake, "labels", version=lv).version()
    pin = pin_versions(lake, events_version=ev, labels_version=lv)
    return {"events": pin.events, "labels": pin.labels}


@task(cache_policy=NO_CACHE)
def featurize(lake: str, pin: dict[str, int | None], featurizer: dict[str, Any]) -> Stream:
    from dataflows.replay import Pin

    return build_stream(lake, Pin(pin["events"], pin["labels"]), featurizer=featurizer)


@task(cache_policy=NO_CACHE, task_run_name="strategy {name}")
def run_one(stream: Stream, stream_dir: str | None, name: str, config: BenchConfig, work: str,
            progress: StrategyProgress | None = None) -> StrategyRun:
    update = None if progress is None else progress.update
    try:
        if stream_dir is None:
            return run_strategy(stream, name, config, progress=update)
        return run_isolated(stream_dir, name, config, out_dir=Path(work) / name.replace("/", "__"), progress=update)
    finally:
        if progress is not None:
            progress.close()


@task(cache_policy=NO_CACHE)
def write_lake(lake: str, benchmark_id: str, windows: list[dict], runs: list[dict]) -> dict[str, int]:
    """Idempotent appends (one app transaction per benchmark and table)."""
    import polars as pl

    from lake.schemas import schema_of
    from lake.table import append

    out = {}
    for table, rows in (("benchmark_windows", windows), ("benchmark_runs", runs)):
        frame = pl.from_arrow(_arrow(rows, schema_of(table)))
        out[table] = append(lake, table, frame, writer_id=f"benchmark/{benchmark_id}", position=1)
    return out


def _arrow(rows: list[dict], schema: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)


@task(cache_policy=NO_CACHE)
def write_report(path: str, page: str) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


log_mlflow = task(log_to_mlflow, name="log-to-mlflow", cache_policy=NO_CACHE, **retry_options(3, 2.0, only_io=True))
