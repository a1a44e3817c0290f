"""Versioning flow: every checkpoint in the lake becomes a registered MLflow model version.

    python -m flows.versioning --lake lakehouse [--tracking-uri URI] [--run-id R]

Size: the plan, the versioning of one checkpoint (model, signature, tags, lineage) and the flow that
runs them are one sequence, read together; MLflow helpers are in :mod:`flows.registry`.

For each checkpoint MLflow does not have yet, it checks the bytes against their
sha256 and their HMAC with the riverlake key (:mod:`lake.integrity`; tampered or
unsigned checkpoints are refused, never unpickled or uploaded), then
logs one MLflow run, a child of a parent run per lake run in experiment
``riverlake``:

- the checkpoint as a ``pyfunc`` model (:class:`flows.mlflow_model.RiverModel`,
  the River bytes and the featurizer state as its artifacts, ``pip_requirements`` pinning river),
  with a raw-event signature and input example from the lake's ``events`` (:mod:`flows.signature`);
- the run's prequential metrics from ``metrics`` up to the checkpoint, one step
  per event-time window (step = labels scored so far), under the same names for
  every model spec, so the MLflow compare view puts them side by side;
- tags tying it to the lake (``riverlake.*``): run and checkpoint ids, model,
  shard, n_learned, sha256, first/last event learned (id and time), the lake
  path, and the Delta versions of ``events``/``labels`` both when the checkpoint
  was written (``*_version_at_checkpoint``, from the Delta log) and when it was
  synced (``*_version_at_sync``): the run id only holds a hash of the pinned ones;

and registers it as a version of ``riverlake-<model>``, tagged
``riverlake.checkpoint = "<run_id>/<checkpoint_id>"`` and
``riverlake.artifacts_hmac`` (the HMAC of the logged model's files, checked by
:func:`flows.registry.load_verified`).

Idempotence lives in MLflow: what is registered is found by that tag, so a run
twice registers nothing twice, and a store that was reset or moved is simply
filled again (a lake table of "synced" rows could disagree with the store it
describes, and would make this flow a writer of the lake). The registered
version is the commit point: a run left behind by a crash before it (MLflow went
down mid-checkpoint) carries the same tag but has no version; a sync deletes it
once it is ``ORPHAN_AFTER_S`` old (a younger one may be another sync at work) and
starts that checkpoint over. MLflow calls retry with exponential
backoff; when MLflow stays down the flow fails and the next run catches up.
Two syncs at once (versioning and promotion when their schedules meet) may both
find a checkpoint unregistered and both register it: each checks after
registering, and the later version is deleted with its run, so one stays
(:func:`flows.registry.keep_first_version`). Still deploy one versioning flow at
a time per store: the other's work is wasted.

The store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///LAKE/mlflow.db`` with artifacts in ``LAKE/mlartifacts``; browse it with
``mlflow ui --backend-store-uri sqlite:///$PWD/lakehouse/mlflow.db``. Against a
server, consider ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``: the flow's own retries
then decide how long to wait (MLflow's client alone retries for minutes).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import polars.selectors as cs
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.registry import quiet_mlflow  # noqa: F401 - also imported from here
from flows.retry import retry_options
from flows.signature import events_schema, input_example, raw_event_signature
from lake.entry import ArgumentParser, require_tables, run_main
from lake.errors import LakeError
from lake.integrity import IntegrityError
from lake.reproduce import ChecksumError, verify_signed
from lake.table import exists, open_table, scan_table
from lake.table import table_version as lake_table_version

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 600
"""A checkpoint's run without a model version is left behind by a crash once it is this old."""

METRIC_COLUMNS = ("accuracy", "log_loss", "roc_auc", "cum_accuracy", "cum_log_loss", "n", "macro_f1", "mae", "rmse",
                  "r2", "cum_mae", "cum_rmse", "cum_r2")
"""``metrics`` columns logged as MLflow metrics (same names for every model; those its lake's task has)."""

SHOWN_TAGS = ("lake", "run_id", "checkpoint_id", "model", "n_learned", "sha256")
"""Lineage kept as ``riverlake.*`` tags on each model version (with the checkpoint key, kind and HMAC tags);
the rest (events learned, Delta versions at checkpoint and sync, library versions) is in the run's params
and its ``lineage.json`` artifact."""

_META = ["run_id", "shard", "seq", "checkpoint_id", "model", "spec", "n_learned", "last_event_id", "sha256",
         "river_version", "python_version", "riverlake_version", "created_at"]


@dataclass(frozen=True)
class Pending:
    """A checkpoint MLflow does not have yet."""

    run_id: str
    checkpoint_id: str
    model: str
    spec: str
    shard: int
    seq: int
    n_learned: int
    registered_model: str
    created_at: datetime
    versions_at_checkpoint: dict[str, int | None] = field(default_factory=dict)

    @property
    def key(self) -> str:
        from flows.registry import checkpoint_key

        return checkpoint_key(self.run_id, self.checkpoint_id)


@dataclass(frozen=True)
class SyncPlan:
    """What a sync has to do, read at one Delta version of ``checkpoints``."""

    checkpoints_version: int | None
    versions_at_sync: dict[str, int | None]
    pending: list[Pending]
    already_synced: int
    rejected: list[str]  # "run_id/checkpoint_id: why"
    untrained: int = 0  # checkpoints of models that had learned nothing: never versioned


def _history(lake: str, table: str) -> list[tuple[int, int]]:
    """``(timestamp_ms, version)`` of every commit still in ``table``'s Delta log, oldest first."""
    if not exists(lake, table):
        return []
    return sorted((h["timestamp"], h["version"]) for h in open_table(lake, table).history()
                  if "version" in h and "timestamp" in h)


def _version_at(history: list[tuple[int, int]], when: datetime) -> int | None:
    ms = int(when.timestamp() * 1000)
    before = [v for t, v in history if t <= ms]
    return max(before) if before else None


def plan_sync(lake: str, tracking_uri: str, *, experiment: str = "riverlake",
              registered_model_prefix: str = "riverlake", run_id: str | None = None,
              checkpoint_ids: list[str] | None = None) -> SyncPlan:
    """Checkpoints of the lake (optionally of one run, or only some of it) not yet registered in MLflow."""
    from flows.registry import checkpoint_key, client_for, ensure_experiment, registered_checkpoints
    from flows.registry import registered_model_name as rm_name

    lake = os.path.abspath(lake) if "://" not in lake else lake
    at_sync = {t: lake_table_version(lake, t) for t in ("events", "labels", "checkpoints")}
    if at_sync["checkpoints"] is None:
        return SyncPlan(None, at_sync, [], 0, [])
    scan = scan_table(lake, "checkpoints", version=at_sync["checkpoints"])
    if run_id is not None:
        scan = scan.filter(pl.col("run_id") == run_id)
    if checkpoint_ids is not None:
        scan = scan.filter(pl.col("checkpoint_id").is_in(list(checkpoint_ids)))
    meta = scan.select(_META).collect().sort(["created_at", "run_id", "shard", "n_learned", "model"])
    # a model that learned nothing is no version worth comparing or serving (it predicts the prior)
    untrained = int((meta["n_learned"] == 0).sum())
    meta = meta.filter(pl.col("n_learned") > 0)
    client = client_for(tracking_uri)
    ensure_experiment(client, experiment, tracking_uri)  # fails fast when MLflow is down
    registered: dict[str, dict[str, str]] = {
        m: registered_checkpoints(client, rm_name(registered_model_prefix, m)) for m in meta["model"].unique()}
    todo = meta.filter(pl.Series([checkpoint_key(r, c) not in registered[m] for r, c, m in
                                  zip(meta["run_id"], meta["checkpoint_id"], meta["model"], strict=True)],
                                 dtype=pl.Boolean))
    rejected = _rejected(scan, todo)
    histories = {t: _history(lake, t) for t in ("events", "labels")}
    pending = [
        Pending(run_id=r["run_id"], checkpoint_id=r["checkpoint_id"], model=r["model"], spec=r["spec"],
                shard=r["shard"], seq=r["seq"], n_learned=r["n_learned"],
                registered_model=rm_name(registered_model_prefix, r["model"]), created_at=r["created_at"],
                versions_at_checkpoint={t: _version_at(h, r["created_at"]) for t, h in histories.items()})
        for r in todo.iter_rows(named=True)
        if checkpoint_key(r["run_id"], r["checkpoint_id"]) not in rejected
    ]
    return SyncPlan(at_sync["checkpoints"], at_sync, pending, meta.height - todo.height,
                    [f"{k}: {why}" for k, why in rejected.items()], untrained)


def _rejected(scan: pl.LazyFrame, todo: pl.DataFrame) -> dict[str, str]:
    """Checkpoints among ``todo`` whose bytes do not match their sha256 or their HMAC."""
    from flows.registry import checkpoint_key

    bad: dict[str, str] = {}
    if todo.height == 0:
        return bad
    keys = todo.select(pl.format("{}/{}", "run_id", "checkpoint_id").alias("k"))["k"].to_list()
    names = scan.collect_schema().names()
    if "hmac" not in names:  # a lake from before checkpoints were signed
        scan = scan.with_columns(hmac=pl.lit(None, pl.String))
    if "featurizer_bytes" not in names:  # ... or kept their featurizer state
        scan = scan.with_columns(featurizer_bytes=pl.lit(None, pl.Binary))
    rows = (scan.filter(pl.format("{}/{}", "run_id", "checkpoint_id").is_in(keys))
            .select("run_id", "checkpoint_id", "sha256", "model_bytes", "hmac", "featurizer_bytes").collect())
    for r in rows.iter_rows(named=True):
        try:
            verify_signed(r)
        except IntegrityError as ex:
            bad[checkpoint_key(r["run_id"], r["checkpoint_id"])] = str(ex)
    return bad


def _metrics(lake: str, item: Pending) -> list[Any]:
    from mlflow.entities import Metric

    if not exists(lake, "metrics"):
        return []
    rows = (scan_table(lake, "metrics")
            .filter((pl.col("run_id") == item.run_id) & (pl.col("model") == item.model)
                    & (pl.col("shard") == item.shard) & (pl.col("seq") <= item.seq))
            .select("window_end", "cum_n", cs.by_name(*METRIC_COLUMNS, require_all=False))
            .collect()
            .sort(["window_end", "cum_n"]))
    out = []
    for r in rows.iter_rows(named=True):
        ts = int(r["window_end"].timestamp() * 1000)
        for name in METRIC_COLUMNS:
            if r.get(name) is not None:
                out.append(Metric(name, float(r[name]), ts, int(r["cum_n"])))
    return out


def _learned_span(lake: str, item: Pending) -> dict[str, str]:
    """First and last event the checkpoint's model learned (id and event time)."""
    if item.n_learned == 0 or not exists(lake, "learn_log"):
        return {}
    rows = (scan_table(lake, "learn_log")
            .filter((pl.col("run_id") == item.run_id) & (pl.col("model") == item.model)
                    & (pl.col("shard") == item.shard) & pl.col("learn_order").is_in([1, item.n_learned]))
            .select("learn_order", "event_id", "event_time")
            .collect())
    tags = {}
    for r in rows.iter_rows(named=True):
        end = "first" if r["learn_order"] == 1 else "last"
        tags[f"{end}_event_id"] = r["event_id"]
        tags[f"{end}_event_time"] = r["event_time"].isoformat()
    if item.n_learned == 1 and "first_event_id" in tags:
        tags["last_event_id"], tags["last_event_time"] = tags["first_event_id"], tags["first_event_time"]
    return tags


def _parent_run(client: Any, experiment_id: str, run_id: str, lake: str) -> str:
    """The MLflow run grouping one lake run's checkpoints (found by tag, else created)."""
    from flows.registry import KIND_TAG, RUN_TAG, TAG, runs_tagged

    found = runs_tagged(client, experiment_id, kind="run", run_id=run_id)
    if found:
        return sorted(found, key=lambda r: r.info.start_time)[0].info.run_id
    run = client.create_run(experiment_id, run_name=run_id,
                            tags={KIND_TAG: "run", RUN_TAG: run_id, TAG + "lake": lake})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def summarize_parent(lake: str, run_id: str, *, tracking_uri: str, experiment: str = "riverlake") -> dict[str, float]:
    """Log the lake run's latest prequential figures on its parent MLflow run, one metric per model and figure
    (``linear.cum_accuracy``, ``linear.n_learned``, ...), so runs compare side by side in the MLflow UI."""
    from mlflow.entities import Metric

    from flows.registry import client_for, ensure_experiment

    summary: dict[str, float] = {}
    if exists(lake, "metrics"):
        last = (scan_table(lake, "metrics").filter(pl.col("run_id") == run_id)
                .select("model", "shard", cs.starts_with("cum_")).collect()  # the running metrics of the lake's task
                .sort("cum_n").group_by("model", "shard").last()
                .group_by("model").agg(pl.col("cum_n").sum(), ((cs.starts_with("cum_") - cs.by_name("cum_n")).as_expr()
                                                               * pl.col("cum_n")).sum() / pl.col("cum_n").sum()))
        for r in last.iter_rows(named=True):
            for name in (c for c in last.columns if c.startswith("cum_")):
                if r[name] is not None:
                    summary[f"{r['model']}.{name}"] = float(r[name])
    if not summary:
        return summary
    client = client_for(tracking_uri)
    parent = _parent_run(client, ensure_experiment(client, experiment, tracking_uri), run_id, lake)
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in sorted(summary.items())])
    return summary


def sync_checkpoint(lake: str, item: Pending, *, tracking_uri: str, experiment: str = "riverlake",
                    checkpoints_version: int | None = None,
                    versions_at_sync: dict[str, int | None] | None = None) -> dict[str, str]:
    """Log and register one checkpoint; returns ``{"checkpoint", "registered_model", "version", "mlflow_run_id"}``.

    Does nothing (returns the existing version) when the checkpoint is registered already.
    """
    import mlflow
    from mlflow.entities import Param

    from flows import mlflow_model
    from flows.registry import (
        ARTIFACTS_HMAC_TAG,
        CHECKPOINT_TAG,
        KIND_TAG,
        TAG,
        artifacts_hmac,
        client_for,
        ensure_experiment,
        ensure_registered_model,
        find_version,
        keep_first_version,
        runs_tagged,
        using,
    )

    lake = os.path.abspath(lake) if "://" not in lake else lake
    key = item.key
    row = (scan_table(lake, "checkpoints", version=checkpoints_version)
           .filter((pl.col("run_id") == item.run_id) & (pl.col("checkpoint_id") == item.checkpoint_id))
           .collect())
    if row.height != 1:
        raise LakeError(f"checkpoint {key!r}: {row.height} rows in the lake, expected 1")
    ck = row.row(0, named=True)
    verify_signed(ck)
    result = {"checkpoint": key, "registered_model": item.registered_model}

    client = client_for(tracking_uri)
    existing = find_version(client, item.registered_model, key)
    if existing is not None:
        return {**result, "version": existing, "mlflow_run_id": ""}
    experiment_id = ensure_experiment(client, experiment, tracking_uri)
    started_before = int(time.time() * 1000) - ORPHAN_AFTER_S * 1000  # younger: another sync may be at work
    for orphan in runs_tagged(client, experiment_id, kind="checkpoint", checkpoint=key):
        if orphan.info.start_time < started_before:
            log.warning("%s: deleting run %s left without a model version", key, orphan.info.run_id)
            client.delete_run(orphan.info.run_id)
    parent = _parent_run(client, experiment_id, item.run_id, lake)

    tags = {
        "lake": lake, "run_id": item.run_id, "checkpoint_id": item.checkpoint_id, "model": item.model,
        "spec": item.spec, "shard": str(item.shard), "n_learned": str(item.n_learned), "sha256": ck["sha256"],
        "created_at": ck["created_at"].isoformat(), "river_version": ck["river_version"],
        **({"checkpoint_last_event_id": ck["last_event_id"]} if ck["last_event_id"] else {}),
        **_learned_span(lake, item),
        **{f"{t}_version_at_checkpoint": str(v) for t, v in item.versions_at_checkpoint.items() if v is not None},
        **{f"{t}_version_at_sync": str(v) for t, v in (versions_at_sync or {}).items() if v is not None},
    }
    # a handful of tags to find and trust a version by; the rest of the lineage as run params and lineage.json
    all_tags = {TAG + k: tags[k] for k in SHOWN_TAGS} | {CHECKPOINT_TAG: key, KIND_TAG: "checkpoint"}
    run = client.create_run(experiment_id, run_name=item.checkpoint_id,
                            tags=all_tags | {"mlflow.parentRunId": parent})
    lineage = {**tags, "python_version": ck["python_version"], "riverlake_version": ck["riverlake_version"]}
    params = [Param(k, str(v)[:500]) for k, v in sorted(lineage.items()) if k not in ("lake",)]
    client.log_batch(run.info.run_id, params=params)
    client.log_dict(run.info.run_id, lineage, "lineage.json")
    metrics = _metrics(lake, item)
    for i in range(0, len(metrics), 900):
        client.log_batch(run.info.run_id, metrics=metrics[i:i + 900])
    events_version = (versions_at_sync or {}).get("events")
    schema = events_schema(lake, version=events_version)
    signature = raw_event_signature(schema) if schema is not None else None
    example = (input_example(lake, signature, event_id=ck["last_event_id"], version=events_version)
               if signature is not None else None)
    with tempfile.TemporaryDirectory(prefix="riverlake-ckpt-") as tmp:
        path = Path(tmp) / "model.pkl"
        path.write_bytes(ck["model_bytes"])
        artifacts = {mlflow_model.ARTIFACT: str(path)}
        if ck.get("featurizer_bytes") is not None:  # raw events served with the checkpoint's featurizer state
            artifacts[mlflow_model.FEATURIZER] = str(Path(tmp) / "featurizer.pkl")
            Path(artifacts[mlflow_model.FEATURIZER]).write_bytes(ck["featurizer_bytes"])
        with using(tracking_uri), quiet_mlflow():  # the registry resolves models:/<id> through the fluent URI
            with mlflow.start_run(run_id=run.info.run_id):
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=mlflow_model.RiverModel(),
                    artifacts=artifacts, pip_requirements=mlflow_model.pip_requirements(),
                    code_paths=mlflow_model.stage_code(Path(tmp) / "code"),
                    uv_project_path=tmp,  # not the cwd's uv project: requirements are the explicit pins
                    signature=signature, input_example=example,
                    model_config={"sha256": ck["sha256"], "checkpoint": key, "hmac": ck["hmac"],
                                  "run_id": item.run_id, "checkpoint_id": item.checkpoint_id,
                                  "threshold": _threshold(lake, item.run_id), "task": _task(lake)})
            logged = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{info.model_id}",
                                                         dst_path=str(Path(tmp) / "logged"))
            signed = all_tags | {ARTIFACTS_HMAC_TAG: artifacts_hmac(logged, checkpoint=key)}
            ensure_registered_model(client, item.registered_model,
                                    description=f"riverlake model spec {item.model!r}: {item.spec}")
            mv = client.create_model_version(item.registered_model, source=f"models:/{info.model_id}",
                                             run_id=run.info.run_id, tags=signed, model_id=info.model_id,
                                             description=f"{item.spec}; {item.checkpoint_id} of run {item.run_id}")
    kept = keep_first_version(client, item.registered_model, key, version=str(mv.version), run_id=run.info.run_id)
    return {**result, "version": kept, "mlflow_run_id": run.info.run_id if kept == str(mv.version) else ""}


def _threshold(lake: str, run_id: str) -> float:
    """The score from which the run predicted positive (its recorded settings), 0.5 when not recorded."""
    import json

    from lake.runs import recorded_run

    recorded = recorded_run(lake, run_id)
    return float(json.loads(recorded["settings"]).get("threshold", 0.5)) if recorded else 0.5


def _task(lake: str) -> str:
    """The lake's task (:func:`lake.tasks.read_task`), which the served model answers; binary without one."""
    from lake.tasks import read_task

    task = read_task(lake)
    return task.name if task is not None else "binary"


def sync_lake(lake: str, tracking_uri: str | None = None, *, experiment: str = "riverlake",
              registered_model_prefix: str = "riverlake", run_id: str | None = None,
              checkpoint_ids: list[str] | None = None) -> dict[str, Any]:
    """The versioning flow without Prefect: register every missing checkpoint, in one call.

    Returns ``{"registered": [...], "already_synced": n}``; raises :class:`ChecksumError`
    after registering the others when some checkpoints' bytes do not match their sha256 or HMAC.
    """
    from flows.registry import tracking_uri_for

    uri = tracking_uri_for(lake, tracking_uri)
    plan = plan_sync(lake, uri, experiment=experiment, registered_model_prefix=registered_model_prefix,
                     run_id=run_id, checkpoint_ids=checkpoint_ids)
    done = [sync_checkpoint(lake, item, tracking_uri=uri, experiment=experiment,
                            checkpoints_version=plan.checkpoints_version, versions_at_sync=plan.versions_at_sync)
            for item in plan.pending]
    for run in sorted({item.run_id for item in plan.pending}):
        summarize_parent(lake, run, tracking_uri=uri, experiment=experiment)
    if plan.rejected:
        raise ChecksumError(_rejected_message(plan.rejected, len(done)))
    return {"registered": done, "already_synced": plan.already_synced, "untrained": plan.untrained}


def _rejected_message(rejected: list[str], n_done: int) -> str:
    return (f"{len(rejected)} checkpoint(s) refused, {n_done} registered; refused: " + "; ".join(rejected))




@task(name="plan-versioning", cache_policy=NO_CACHE)
def plan_task(lake: str, tracking_uri: str, experiment: str, registered_model_prefix: str,
              run_id: str | None) -> SyncPlan:
    return plan_sync(lake, tracking_uri, experiment=experiment, registered_model_prefix=registered_model_prefix,
                     run_id=run_id)


@task(name="version-checkpoint", cache_policy=NO_CACHE, task_run_name="version-{item.checkpoint_id}")
def sync_task(lake: str, item: Pending, tracking_uri: str, experiment: str, checkpoints_version: int | None,
              versions_at_sync: dict[str, int | None]) -> dict[str, str]:
    return sync_checkpoint(lake, item, tracking_uri=tracking_uri, experiment=experiment,
                           checkpoints_version=checkpoints_version, versions_at_sync=versions_at_sync)


@flow(name="version-checkpoints")
def version_checkpoints(lake: str = "lakehouse", tracking_uri: str | None = None, experiment: str = "riverlake",
                        registered_model_prefix: str = "riverlake", run_id: str | None = None,
                        retries: int = 3, retry_delay_s: float = 5.0) -> dict[str, Any]:
    """Register every checkpoint of ``lake`` (or of one run) that MLflow does not have yet."""
    from flows.registry import redact_uri, tracking_uri_for

    logger = get_run_logger()
    uri = tracking_uri_for(lake, tracking_uri)
    retry = retry_options(retries, retry_delay_s)
    plan = plan_task.with_options(**retry)(lake, uri, experiment, registered_model_prefix, run_id)
    logger.info("%d checkpoint(s) to register, %d already in MLflow (%s)", len(plan.pending),
                plan.already_synced, redact_uri(uri))
    done = []
    for item in plan.pending:
        done.append(sync_task.with_options(**retry)(lake, item, uri, experiment, plan.checkpoints_version,
                                                    plan.versions_at_sync))
        logger.info("%s -> %s version %s", item.key, done[-1]["registered_model"], done[-1]["version"])
    for run in sorted({item.run_id for item in plan.pending}):
        summarize_parent(lake, run, tracking_uri=uri, experiment=experiment)
    if plan.rejected:
        for why in plan.rejected:
            logger.error("refused: %s", why)
        raise ChecksumError(_rejected_message(plan.rejected, len(done)))
    return {"registered": done, "already_synced": plan.already_synced, "untrained": plan.untrained,
            "tracking_uri": redact_uri(uri)}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m flows.versioning", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"), help="lake root folder")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///LAKE/mlflow.db)")
    parser.add_argument("--experiment", default="riverlake")
    parser.add_argument("--prefix", default="riverlake", help="registered models are named PREFIX-MODEL")
    parser.add_argument("--run-id", default=None, help="only this lake run's checkpoints")
    parser.add_argument("--retries", type=int, default=3, help="retries of each MLflow step (default 3)")
    parser.add_argument("--retry-delay", type=float, default=5.0, help="first retry delay in s, doubling")
    args = parser.parse_args(argv)
    require_tables(args.lake, "checkpoints")  # before the flow: a missing table is one line
    from flows.registry import use_tracking_uri

    try:
        use_tracking_uri(args.tracking_uri)  # not a flow parameter: Prefect stores those
        report = version_checkpoints(args.lake, None, args.experiment, args.prefix, args.run_id,
                                     args.retries, args.retry_delay)
    except LakeError as ex:  # e.g. tampered checkpoints; the others were registered
        print(f"error: {ex}", file=sys.stderr)
        return 2
    for r in report["registered"]:
        print(f"{r['checkpoint']} -> {r['registered_model']} version {r['version']}")
    print(f"{len(report['registered'])} registered, {report['already_synced']} already in {report['tracking_uri']}"
          + (f" ({report['untrained']} untrained checkpoint(s) not versioned)" if report.get("untrained") else ""))
    return 0


if __name__ == "__main__":
    run_main(main)
