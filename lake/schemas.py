"""The lake's tables and their Arrow schemas, written down once.

Every table lives in its own folder under the lake root (``LAKE/events``,
``LAKE/predictions``, ...). ``events`` carries the fixed columns below plus the
feature payload, whose columns are whatever the source had: new columns may
appear at any time (writers append with ``schema_mode="merge"``).

Size: one declaration per table and task, read top to bottom; split, the lake's schema would be in
several places.

>>> sorted(TABLES)[:3]
['anomalies', 'benchmark_runs', 'benchmark_windows']
>>> TABLES["predictions"].field("score").type
DataType(double)
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")
FEATURES = pa.map_(pa.string(), pa.float64())

EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("key", pa.string(), nullable=False),
        # Order of arrival within the source: the replay tie-break between events
        # that share an event_time. Unique per table.
        pa.field("offset", pa.int64(), nullable=False),
    ]
)
"""Fixed columns of ``events``; the payload columns follow them."""

LABELS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("label_time", UTC_TS, nullable=False),
    ]
)

PREDICTIONS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("prediction", pa.int64(), nullable=False),
        pa.field("features", FEATURES, nullable=False),
        # Unsupervised anomaly score of the event (``monitoring.anomaly``; null when off or warming up).
        pa.field("anomaly_score", pa.float64()),
    ]
)

LEARN_LOG = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("label_time", UTC_TS, nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        # 1-based position of this learn step in the model's life on this shard.
        pa.field("learn_order", pa.int64(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

METRICS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("window_start", UTC_TS, nullable=False),
        pa.field("window_end", UTC_TS, nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("n_correct", pa.int64(), nullable=False),
        pa.field("n_positive", pa.int64(), nullable=False),
        pa.field("n_predicted_positive", pa.int64(), nullable=False),
        pa.field("sum_log_loss", pa.float64(), nullable=False),
        pa.field("accuracy", pa.float64()),
        pa.field("log_loss", pa.float64()),
        pa.field("roc_auc", pa.float64()),
        pa.field("n_late_labels", pa.int64(), nullable=False),
        pa.field("cum_n", pa.int64(), nullable=False),
        pa.field("cum_accuracy", pa.float64()),
        pa.field("cum_log_loss", pa.float64()),
    ]
)

CHECKPOINTS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("checkpoint_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("spec", pa.string(), nullable=False),
        pa.field("n_learned", pa.int64(), nullable=False),
        pa.field("last_event_id", pa.string()),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("river_version", pa.string(), nullable=False),
        pa.field("python_version", pa.string(), nullable=False),
        pa.field("riverlake_version", pa.string(), nullable=False),
        pa.field("model_bytes", pa.large_binary(), nullable=False),
        pa.field("created_at", UTC_TS, nullable=False),
        pa.field("hmac", pa.string()),  # of model_bytes (+ featurizer_bytes), with the key outside the lake
        # The pickled featurizer (per-key state) the model predicted with at this point: what a served model
        # featurizes raw events with. Null on untrained checkpoints and on those from before it was kept.
        pa.field("featurizer_bytes", pa.large_binary()),
    ]
)

DEAD_LETTERS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("step", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("event_id", pa.string()),
        # The input as received, JSON-encoded (non-finite numbers kept as strings).
        pa.field("raw", pa.large_string(), nullable=False),
    ]
)

DRIFT_EVENTS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),
        pa.field("signal", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("event_time", UTC_TS, nullable=False),
    ]
)

SCENARIO_DRIFTS = pa.schema(
    [
        pa.field("scenario", pa.string(), nullable=False),
        # 0-based index of the first event generated by the new concept.
        pa.field("position", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("description", pa.string(), nullable=False),
    ]
)

EXPIRED = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("key", pa.string(), nullable=False),
        # The event-time clock when the wait for the label was given up.
        pa.field("expired_at", UTC_TS, nullable=False),
    ]
)
"""Predicted events whose label did not come within the run's ``label_ttl``."""

PROMOTIONS = pa.schema(
    [
        pa.field("decided_at", UTC_TS, nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        # Model spec name serving from this decision on, and the one before it.
        pa.field("champion", pa.string(), nullable=False),
        pa.field("previous", pa.string(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),  # promote | keep | rollback
        pa.field("reason", pa.string(), nullable=False),
        pa.field("metric", pa.string()),
        pa.field("champion_value", pa.float64()),
        pa.field("challenger_value", pa.float64()),
        pa.field("n_labels", pa.int64()),
        pa.field("registered_model", pa.string()),
        pa.field("registry_version", pa.string()),
        pa.field("checkpoint_id", pa.string()),
    ]
)
"""Champion decisions; a running dataflow serves the ``champion`` of its run's latest row."""

BENCHMARK_WINDOWS = pa.schema(
    [
        pa.field("benchmark_id", pa.string(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),  # MODE/LEARNER, e.g. periodic-sliding/hgb
        pa.field("window", pa.int64(), nullable=False),  # 0-based index among the windows with labels
        pa.field("window_start", UTC_TS, nullable=False),
        pa.field("window_end", UTC_TS, nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("n_positive", pa.int64(), nullable=False),
        pa.field("accuracy", pa.float64()),
        pa.field("log_loss", pa.float64()),
        pa.field("roc_auc", pa.float64()),
        pa.field("cum_accuracy", pa.float64()),
        # multiclass and regression lakes (null in binary ones; n_positive is 0 there)
        pa.field("macro_f1", pa.float64()),
        pa.field("mae", pa.float64()),
        pa.field("rmse", pa.float64()),
        pa.field("r2", pa.float64()),
        pa.field("cum_mae", pa.float64()),
    ]
)
"""Prequential metrics of each benchmark strategy per event-time window (``flows.benchmark``)."""

BENCHMARK_RUNS = pa.schema(
    [
        pa.field("benchmark_id", pa.string(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("learner", pa.string(), nullable=False),
        pa.field("events_version", pa.int64(), nullable=False),
        pa.field("labels_version", pa.int64()),
        pa.field("n_events", pa.int64(), nullable=False),
        pa.field("n_scored", pa.int64(), nullable=False),
        pa.field("accuracy", pa.float64()),
        pa.field("log_loss", pa.float64()),
        pa.field("roc_auc", pa.float64()),
        pa.field("train_cpu_s", pa.float64()),
        pa.field("predict_cpu_s", pa.float64()),
        pa.field("cpu_s", pa.float64()),
        pa.field("wall_s", pa.float64()),
        pa.field("peak_rss_mb", pa.float64()),
        pa.field("model_bytes", pa.float64()),
        pa.field("model_bytes_max", pa.float64()),
        pa.field("history_rows_max", pa.float64()),
        pa.field("n_retrains", pa.float64()),
        pa.field("latency_p50_us", pa.float64()),
        pa.field("latency_p99_us", pa.float64()),
        pa.field("recovery_events_mean", pa.float64()),
        pa.field("recovery_events_max", pa.float64()),
        pa.field("drifts_measured", pa.float64()),
        pa.field("drifts_not_recovered", pa.float64()),
        pa.field("acc_after_drift_mean", pa.float64()),
        # no-skill baseline (constant score at the base rate), and figures from the first event at
        # which every strategy had a model (``ready_event``)
        pa.field("noskill_accuracy", pa.float64()),
        pa.field("noskill_log_loss", pa.float64()),
        pa.field("first_model_event", pa.float64()),
        pa.field("ready_event", pa.float64()),
        pa.field("n_scored_ready", pa.float64()),
        pa.field("accuracy_ready", pa.float64()),
        pa.field("log_loss_ready", pa.float64()),
        pa.field("roc_auc_ready", pa.float64()),
        pa.field("noskill_accuracy_ready", pa.float64()),
        pa.field("noskill_log_loss_ready", pa.float64()),
        pa.field("note", pa.string()),  # what the time budget changed (subsampled, ...)
        pa.field("recovery", pa.large_string(), nullable=False),  # JSON: one object per drift
        pa.field("config", pa.large_string(), nullable=False),  # JSON: the benchmark's settings
        pa.field("report_path", pa.string(), nullable=False),
        pa.field("created_at", UTC_TS, nullable=False),
        # the lake's task, and the metrics of multiclass and regression lakes (null in binary ones)
        pa.field("task", pa.string()),
        pa.field("macro_f1", pa.float64()),
        pa.field("noskill_macro_f1", pa.float64()),
        pa.field("macro_f1_ready", pa.float64()),
        pa.field("noskill_macro_f1_ready", pa.float64()),
        pa.field("mae", pa.float64()),
        pa.field("noskill_mae", pa.float64()),
        pa.field("mae_ready", pa.float64()),
        pa.field("noskill_mae_ready", pa.float64()),
        pa.field("rmse", pa.float64()),
        pa.field("noskill_rmse", pa.float64()),
        pa.field("rmse_ready", pa.float64()),
        pa.field("noskill_rmse_ready", pa.float64()),
        pa.field("r2", pa.float64()),
        pa.field("noskill_r2", pa.float64()),
        pa.field("r2_ready", pa.float64()),
        pa.field("noskill_r2_ready", pa.float64()),
    ]
)
"""One row per benchmark strategy: overall metrics and costs (``flows.benchmark``)."""

WINDOW_STATS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("window_start", UTC_TS, nullable=False),
        pa.field("window_end", UTC_TS, nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        # Late events (their window had closed) seen since the previous row; they are in `late_events`.
        pa.field("n_late", pa.int64(), nullable=False),
        pa.field("n_labels", pa.int64(), nullable=False),  # labels known while the window was open
        pa.field("n_positive", pa.int64(), nullable=False),
        pa.field("label_rate", pa.float64()),
        pa.field("n_late_labels", pa.int64(), nullable=False),
        pa.field("watermark", UTC_TS, nullable=False),  # when the window closed (event time)
        # Per numeric feature: non-missing count, mean, std (n - 1), min, max.
        pa.field("count", FEATURES, nullable=False),
        pa.field("mean", FEATURES, nullable=False),
        pa.field("std", FEATURES, nullable=False),
        pa.field("min", FEATURES, nullable=False),
        pa.field("max", FEATURES, nullable=False),
        pa.field("closed_at", UTC_TS),  # wall clock when the statistics were computed
    ]
)
"""Statistics per event-time tumbling window, closed by the watermark (``monitoring.windows``)."""

LATE_EVENTS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("window_start", UTC_TS, nullable=False),  # the window, already closed when it arrived
        pa.field("watermark", UTC_TS, nullable=False),
    ]
)
"""Events that arrived after their window's statistics were closed (``monitoring.windows``)."""

DRIFT_REPORTS = pa.schema(
    [
        pa.field("report_id", pa.string(), nullable=False),
        pa.field("created_at", UTC_TS, nullable=False),
        pa.field("by", pa.string(), nullable=False),  # time | version
        # Event-time spans compared (for version windows: the first and last event time in them).
        pa.field("reference_start", UTC_TS),
        pa.field("reference_end", UTC_TS),
        pa.field("current_start", UTC_TS),
        pa.field("current_end", UTC_TS),
        # Delta versions of `events`: the one read (time windows), the last of the range (version windows).
        pa.field("reference_version", pa.int64()),
        pa.field("current_version", pa.int64()),
        pa.field("model", pa.string()),  # whose predictions (score, prediction) were joined
        pa.field("run_id", pa.string()),
        pa.field("reference_rows", pa.int64(), nullable=False),
        pa.field("current_rows", pa.int64(), nullable=False),
        pa.field("n_columns", pa.int64(), nullable=False),  # columns reported
        pa.field("n_columns_available", pa.int64(), nullable=False),  # candidates before the max_columns cut
        pa.field("n_drifted", pa.int64(), nullable=False),
        pa.field("drifted_share", pa.float64(), nullable=False),
        pa.field("drift_share", pa.float64(), nullable=False),  # dataset drift when drifted_share >= this
        pa.field("dataset_drift", pa.bool_(), nullable=False),
        pa.field("column_scores", FEATURES, nullable=False),  # column -> drift score (p-value or distance)
        pa.field("column_drifted", pa.map_(pa.string(), pa.bool_()), nullable=False),
        pa.field("quality", FEATURES),  # "current.accuracy", "reference.roc_auc", ... when labels exist
        pa.field("html_path", pa.string(), nullable=False),
        pa.field("json_path", pa.string(), nullable=False),
        pa.field("quality_html_path", pa.string()),
        pa.field("quality_json_path", pa.string()),
        pa.field("mlflow_run_id", pa.string()),
    ]
)
"""One row per Evidently drift report (``flows.drift``)."""

ANOMALIES = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("scorer", pa.string(), nullable=False),  # e.g. zscore, hst(threshold=0.8)
        pa.field("position", pa.int64(), nullable=False),  # 1-based in the shard's event stream
        pa.field("event_id", pa.string()),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
    ]
)
"""Events whose anomaly score passed the scorer's threshold (no label needed)."""

DRIFT_ACTIONS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),  # reset | retrain
        pa.field("detector", pa.string(), nullable=False),  # the alarm that triggered it
        pa.field("signal", pa.string(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("n_learned_before", pa.int64(), nullable=False),  # learns of the replaced model
        pa.field("trained_on", pa.int64(), nullable=False),  # recent labelled events the new model learned
        pa.field("model_version", pa.string(), nullable=False),  # checkpoint id of the new model
        pa.field("created_at", UTC_TS, nullable=False),
    ]
)
"""What the dataflow did about a drift alarm (``RunConfig.monitor.drift_action``)."""

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("identity", pa.string(), nullable=False),  # sha256 of the fields below (lake.runs)
        pa.field("kind", pa.string(), nullable=False),  # replay | live
        pa.field("lake", pa.string(), nullable=False),  # absolute path or URI of the lake root
        pa.field("events_version", pa.int64()),  # replay: the Delta versions read
        pa.field("labels_version", pa.int64()),
        pa.field("batch_size", pa.int64()),
        pa.field("topic", pa.string()),  # live: the Kafka topic and its partitions ("0,1,2")
        pa.field("partitions", pa.string()),
        pa.field("settings", pa.string(), nullable=False),  # JSON of the run's settings
        pa.field("started_at", UTC_TS, nullable=False),  # when the run id was first used
    ]
)
"""Identity of every run id used on the lake, recorded once when it first starts (:mod:`lake.runs`)."""

RUN_SUMMARIES = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("n_events", pa.int64(), nullable=False),  # events predicted
        pa.field("n_labels", pa.int64(), nullable=False),  # labels that arrived (learned + lost)
        pa.field("n_learned", pa.int64(), nullable=False),
        pa.field("n_positive_learned", pa.int64(), nullable=False),
        # Labels that arrived and were not learned (dead letters); positives among those whose value is known.
        pa.field("n_labels_lost", pa.int64(), nullable=False),
        pa.field("n_positive_lost", pa.int64(), nullable=False),
        pa.field("n_negative_lost", pa.int64(), nullable=False),
        pa.field("n_expired", pa.int64(), nullable=False),  # events whose label was no longer waited for
        pa.field("n_expired_labels", pa.int64(), nullable=False),  # of those, labels that came afterwards
        pa.field("n_expired_positive", pa.int64(), nullable=False),
        pa.field("label_ttl_us", pa.int64()),
        pa.field("n_dead_letters", pa.int64(), nullable=False),
        pa.field("dead_letters", pa.map_(pa.string(), pa.int64()), nullable=False),  # reason -> count
        pa.field("n_late_events", pa.int64(), nullable=False),
        pa.field("warning", pa.string()),  # set when past the thresholds of dataflows.discards
        pa.field("summary", pa.string(), nullable=False),  # the line printed at the end of the run
    ]
)
"""What one shard of a run did not learn from, written when its input ends (``dataflows.discards``)."""

LAKE_META = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # e.g. task
        pa.field("value", pa.string(), nullable=False),  # e.g. regression
        pa.field("recorded_at", UTC_TS, nullable=False),
    ]
)
"""Facts about the whole lake, written once (:mod:`lake.tasks`: the task of a multiclass or regression lake)."""

PROBABILITIES = pa.map_(pa.string(), pa.float64())

_TASK_METRICS = {
    "regression": [
        pa.field("sum_abs_error", pa.float64(), nullable=False),
        pa.field("sum_sq_error", pa.float64(), nullable=False),
        pa.field("mae", pa.float64()),
        pa.field("rmse", pa.float64()),
        pa.field("r2", pa.float64()),  # null with fewer than two labels or labels all equal
        pa.field("n_late_labels", pa.int64(), nullable=False),
        pa.field("cum_n", pa.int64(), nullable=False),
        pa.field("cum_mae", pa.float64()),
        pa.field("cum_rmse", pa.float64()),
        pa.field("cum_r2", pa.float64()),
    ],
    "multiclass": [
        pa.field("n_correct", pa.int64(), nullable=False),
        pa.field("n_classes", pa.int64(), nullable=False),  # distinct labels in the window
        pa.field("sum_log_loss", pa.float64(), nullable=False),
        pa.field("accuracy", pa.float64()),
        pa.field("macro_f1", pa.float64()),  # over the classes seen in the window (labels or predictions)
        pa.field("log_loss", pa.float64()),
        pa.field("n_late_labels", pa.int64(), nullable=False),
        pa.field("cum_n", pa.int64(), nullable=False),
        pa.field("cum_accuracy", pa.float64()),
        pa.field("cum_log_loss", pa.float64()),
    ],
}


def task_schema(table: str, task: str) -> pa.Schema:
    """Schema of ``table`` in a lake of ``task`` (``binary``, ``multiclass``, ``regression``).

    Binary lakes keep the schemas above, unchanged. In the others the label columns hold
    the label's own type (a float, or the class as text), ``predictions.prediction`` the
    predicted value or class, ``score`` the predicted value (regression) or the predicted
    class's probability (multiclass), multiclass ``predictions`` add ``probabilities``
    (class -> probability), and ``metrics`` carry the task's metrics.

    >>> task_schema("labels", "regression").field("label").type
    DataType(double)
    >>> task_schema("predictions", "multiclass").field("probabilities").type
    MapType(map<string, double>)
    >>> task_schema("predictions", "binary") == PREDICTIONS
    True
    """
    base = schema_of(table)
    if task == "binary":
        return base
    if task not in _TASK_METRICS:
        raise ValueError(f"task must be one of binary, multiclass, regression, got {task!r}")
    value = pa.string() if task == "multiclass" else pa.float64()
    if table == "metrics":
        common = [f for f in METRICS if f.name in ("run_id", "shard", "seq", "model", "window_start",
                                                    "window_end", "n")]
        return pa.schema([*common, *_TASK_METRICS[task]])
    fields = []
    for f in base:
        if (table, f.name) in (("labels", "label"), ("learn_log", "label"), ("predictions", "prediction")):
            f = f.with_type(value)
        fields.append(f)
        if table == "predictions" and f.name == "prediction" and task == "multiclass":
            fields.append(pa.field("probabilities", PROBABILITIES, nullable=False))
    return pa.schema(fields)


TABLES: dict[str, pa.Schema] = {
    "events": EVENTS,
    "labels": LABELS,
    "predictions": PREDICTIONS,
    "learn_log": LEARN_LOG,
    "metrics": METRICS,
    "checkpoints": CHECKPOINTS,
    "dead_letters": DEAD_LETTERS,
    "drift_events": DRIFT_EVENTS,
    "scenario_drifts": SCENARIO_DRIFTS,
    "expired": EXPIRED,
    "promotions": PROMOTIONS,
    "benchmark_windows": BENCHMARK_WINDOWS,
    "benchmark_runs": BENCHMARK_RUNS,
    "window_stats": WINDOW_STATS,
    "late_events": LATE_EVENTS,
    "drift_reports": DRIFT_REPORTS,
    "anomalies": ANOMALIES,
    "drift_actions": DRIFT_ACTIONS,
    "runs": RUNS,

    "run_summaries": RUN_SUMMARIES,
    "lake_meta": LAKE_META,
}
"""Every table's schema. For ``events`` the schema lists the fixed columns only."""

OPEN_TABLES = frozenset({"events"})
"""Tables whose rows may carry columns beyond their schema (the feature payload)."""


def schema_of(table: str) -> pa.Schema:
    """Schema of ``table``; raises :class:`KeyError` naming the known tables."""
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(sorted(TABLES))}") from None
