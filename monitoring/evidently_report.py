"""Evidently drift reports between two windows of the lake: build, save, summarise, read back.

A window is a span of event time (``"2026-01-01T00:00/2026-01-02T00:00"``, or
``"2026-01-01/1d"``) or the rows added by a range of Delta versions of ``events``
(``"3"``, ``"3-5"``). For each window :func:`load_window` takes the events' feature
columns and joins the champion's ``score``/``prediction`` (from ``predictions``)
and, where it has arrived, the ``label``. :func:`select_columns` keeps the columns
worth reporting (wide or sparse feature spaces are cut to ``max_columns``, most
present first), :func:`build_snapshots` runs Evidently's ``DataDriftPreset`` (and, on
the labelled rows when both windows have some, the quality report of the lake's task:
``ClassificationPreset`` for binary and multiclass lakes, ``RegressionPreset`` for
regression ones),
:func:`make_report` does all of it and saves HTML + JSON under
``LAKE/reports/drift/REPORT_ID/``; :func:`read_report` reads a saved JSON back
into the same :class:`DriftSummary` (a round trip), :func:`report_row` is the
``drift_reports`` row. The windows themselves (parsing, choosing, loading) live in
:mod:`monitoring.report_windows`; their names are re-exported here.

>>> parse_window("2026-01-01/1d", by="time").end.isoformat()
'2026-01-02T00:00:00+00:00'
>>> parse_window("3-5", by="version")[3:]
(3, 5)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import polars as pl

from lake import names as lake_names
from lake.storage import canonical, state_dir
from monitoring.report_windows import (  # noqa: F401  (re-exported: the windows were split out)
    AUTO_DURATIONS,
    COUNT_WINDOW_EVENTS,
    FIXED,
    JOINED,
    MIN_WINDOW_EVENTS,
    By,
    Window,
    WindowChoice,
    attach_labels,
    attach_predictions,
    check_windows,
    choose_windows,
    last_vs_previous_windows,
    load_window,
    parse_time,
    parse_window,
    scan_window,
)


def expand_features(frame: pl.DataFrame, *, max_keys: int = 1_000) -> pl.DataFrame:
    """The ``features`` map (of predictions) as one column ``f:KEY`` per key (0 where absent), at most the
    ``max_keys`` most frequent keys; the map column is dropped. Feature-evolving and hashed streams
    report on what the model saw."""
    if "features" not in frame.columns:
        return frame
    long = (frame.select("event_id", pl.col("features").map.entries()).explode("features")
            .select("event_id", pl.col("features").struct.field("key").alias("k"),
                    pl.col("features").struct.field("value").alias("v"))
            .drop_nulls("k"))
    top = long.group_by("k").len().sort(["len", "k"], descending=[True, False]).head(max_keys)["k"]
    wide = (long.filter(pl.col("k").is_in(top.implode()))
            .pivot(on="k", index="event_id", values="v", aggregate_function="first"))
    names = [c for c in wide.columns if c != "event_id"]
    wide = wide.rename({c: f"f:{c}" for c in names})
    # a feature absent from the map is a 0 to the model (River's sparse dicts)
    return (frame.drop("features").join(wide, on="event_id", how="left", maintain_order="left")
            .with_columns(lake_names.cols(f"f:{c}" for c in names).fill_null(0.0)))


# ------------------------------------------------------------------------------ column selection


class Columns(NamedTuple):
    numerical: list[str]
    categorical: list[str]
    available: int  # candidate columns before the cut to max_columns


def select_columns(reference: pl.DataFrame, current: pl.DataFrame, *, max_columns: int = 20,
                   max_categories: int = 50, min_presence: float = 0.01, exclude: tuple[str, ...] = ()) -> Columns:
    """Columns worth reporting, at most ``max_columns`` (the model's ``score`` always, when present).

    Candidates: numeric and boolean columns, and string columns with at most
    ``max_categories`` distinct values (ids, URLs and other free text are left out);
    constant columns and columns present (a value other than null or 0) in less than
    ``min_presence`` of the rows of both windows are dropped. The cut keeps the columns
    most present over both windows (ties in column order): a choice blind to drift, so
    the drifted share is not inflated by picking the columns that moved.
    """
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns!r}")
    both = pl.concat([reference, current], how="diagonal_relaxed")
    skip = set(FIXED) | {"prediction", "label", "features"} | set(exclude)
    scored: list[tuple[float, int, str, str]] = []
    for i, name in enumerate(both.columns):
        if name in skip:
            continue
        col = lake_names.plain(both.get_column(name))
        dtype = col.dtype
        if dtype.is_numeric():
            kind = "num"
        elif dtype == pl.Boolean:
            kind = "cat"
        elif dtype in (pl.String, pl.Categorical, pl.Enum):
            kind = "cat" if col.n_unique() <= max_categories else ""
        else:
            kind = ""
        if not kind or col.n_unique() < 2:  # nothing to compare in a constant column
            continue
        if max(_presence(reference, name), _presence(current, name)) < min_presence:
            continue
        scored.append((-_presence(both, name), i, name, kind))
    available = len(scored)
    scored.sort()
    keep = [s for s in scored if s[2] == "score"]
    keep += [s for s in scored if s[2] != "score"][: max_columns - len(keep)]
    keep.sort(key=lambda s: s[1])
    return Columns([s[2] for s in keep if s[3] == "num"], [s[2] for s in keep if s[3] == "cat"], available)


def _presence(frame: pl.DataFrame, name: str) -> float:
    """Share of rows where ``name`` holds a value: not null, and for numbers not 0 nor NaN (an absent
    hashed or one-hot feature is a 0)."""
    if name not in frame.columns or frame.height == 0:
        return 0.0
    col = lake_names.plain(frame.get_column(name))
    if col.dtype.is_numeric():
        return float((col.fill_nan(0) if col.dtype.is_float() else col).fill_null(0).ne(0).mean())
    return 1.0 - col.null_count() / frame.height


# ------------------------------------------------------------------------------------- reports


@dataclass
class DriftSummary:
    """What a drift snapshot says, read from its dict (or saved JSON)."""

    n_columns: int
    n_drifted: int
    drifted_share: float
    drift_share: float
    dataset_drift: bool
    column_scores: dict[str, float] = field(default_factory=dict)
    column_drifted: dict[str, bool] = field(default_factory=dict)
    column_methods: dict[str, str] = field(default_factory=dict)


def summarize_drift(snapshot: dict[str, Any]) -> DriftSummary:
    """Drifted share, dataset drift (share >= drift_share) and per-column scores of a drift snapshot dict."""
    count = None
    scores, drifted, methods = {}, {}, {}
    for m in snapshot["metrics"]:
        kind = m["config"]["type"]
        if kind.endswith(":DriftedColumnsCount"):
            count = m
        elif kind.endswith(":ValueDrift"):
            col, method, thr, value = (m["config"]["column"], m["config"]["method"], m["config"]["threshold"],
                                       float(m["value"]))
            scores[col] = value
            methods[col] = method
            drifted[col] = value < thr if "p_value" in method else value >= thr
    if count is None:
        raise ValueError("the snapshot holds no DriftedColumnsCount metric: not a DataDriftPreset report")
    share = float(count["value"]["share"])
    drift_share = float(count["config"]["drift_share"])
    return DriftSummary(len(scores), int(round(count["value"]["count"])), share, drift_share, share >= drift_share,
                        scores, drifted, methods)


QUALITY_METRICS = {"Accuracy": "accuracy", "Precision": "precision", "Recall": "recall", "F1Score": "f1",
                   "RocAuc": "roc_auc", "LogLoss": "log_loss", "MAE": "mae", "RMSE": "rmse", "R2Score": "r2",
                   "MeanError": "mean_error", "AbsMaxError": "abs_max_error"}
QUALITY_TITLES = {"binary": "Classification quality", "multiclass": "Multiclass classification quality",
                  "regression": "Regression quality"}
"""The heading of each task's quality report."""


def summarize_quality(snapshot: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics of a ``ClassificationPreset`` or ``RegressionPreset`` snapshot dict (a metric
    given as mean and deviation, as Evidently gives MAE, counts by its mean)."""
    out = {}
    for m in snapshot["metrics"]:
        name = QUALITY_METRICS.get(m["config"]["type"].rsplit(":", 1)[-1])
        value = m["value"]
        if isinstance(value, dict) and isinstance(value.get("mean"), int | float):
            value = value["mean"]
        if name and isinstance(value, int | float):
            out[name] = float(value)
    return out


def read_report(json_path: str | os.PathLike[str]) -> DriftSummary:
    """Summary of a drift report saved as JSON (the round trip of :func:`make_report`)."""
    with open(json_path, encoding="utf-8") as fh:
        return summarize_drift(json.load(fh))


def build_snapshots(reference: pl.DataFrame, current: pl.DataFrame, columns: Columns, *,
                    drift_share: float = 0.5, timestamp: datetime | None = None,
                    metadata: dict[str, str] | None = None, task: str = "binary") -> tuple[Any, Any | None, Any | None]:
    """Evidently snapshots: data drift over ``columns``; the ``task``'s quality (binary or multiclass
    classification, regression) of current vs reference and of the reference alone, on labelled rows
    with a prediction (``None`` when a window has none). ``timestamp`` (the drift snapshot's time in a
    workspace dashboard) and ``metadata`` go to the drift snapshot."""
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
        Report,
    )
    from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

    cols = columns.numerical + columns.categorical
    dd = DataDefinition(numerical_columns=columns.numerical, categorical_columns=columns.categorical)

    def pandas(frame: pl.DataFrame, names: list[str]) -> Any:
        return (lake_names.select(frame, names).with_columns(lake_names.cols(columns.categorical).cast(pl.String))
                .to_pandas())

    drift = Report([DataDriftPreset(columns=cols, drift_share=drift_share)]).run(
        reference_data=Dataset.from_pandas(pandas(reference, cols), data_definition=dd),
        current_data=Dataset.from_pandas(pandas(current, cols), data_definition=dd),
        timestamp=timestamp, metadata=metadata or {})
    if not all({"score", "prediction", "label"} <= set(f.columns) for f in (reference, current)):
        return drift, None, None
    labelled = [f.filter(pl.col("label").is_not_null() & pl.col("score").is_not_null()) for f in (reference, current)]
    if any(f.height == 0 or f["label"].n_unique() < 2 for f in labelled):
        return drift, None, None
    if task == "regression":
        qdd = DataDefinition(numerical_columns=["label", "prediction"],
                             regression=[Regression(target="label", prediction="prediction")])
        preset: Any = RegressionPreset()
        names = ["label", "prediction"]
    elif task == "multiclass":  # the classes as text; the predicted class (probabilities are a map column)
        qdd = DataDefinition(categorical_columns=["label", "prediction"], classification=[
            MulticlassClassification(target="label", prediction_labels="prediction")])
        preset = ClassificationPreset()
        names = ["label", "prediction"]
        labelled = [f.with_columns(pl.col("label", "prediction").cast(pl.String)) for f in labelled]
    else:
        qdd = DataDefinition(numerical_columns=["score"], classification=[BinaryClassification(
            target="label", prediction_labels="prediction", prediction_probas="score")])
        preset = ClassificationPreset()
        names = ["label", "prediction", "score"]
    ref_l, cur_l = (Dataset.from_pandas(f.select(names).to_pandas(), data_definition=qdd) for f in labelled)
    quality = Report([preset]).run(reference_data=ref_l, current_data=cur_l)
    ref_quality = Report([preset]).run(current_data=ref_l)
    return drift, quality, ref_quality


@dataclass
class DriftReport:
    """A built and saved report, and what goes into its ``drift_reports`` row."""

    report_id: str
    created_at: datetime
    by: str
    reference: Window
    current: Window
    reference_span: tuple[datetime | None, datetime | None]
    current_span: tuple[datetime | None, datetime | None]
    reference_version: int | None
    current_version: int | None
    model: str | None
    run_id: str | None
    reference_rows: int
    current_rows: int
    columns: Columns
    summary: DriftSummary
    quality: dict[str, float] | None
    html_path: str
    json_path: str
    quality_html_path: str | None
    quality_json_path: str | None
    seconds: float = 0.0
    mlflow_run_id: str | None = None


def report_id_for(identity: dict[str, Any], at: datetime) -> str:
    """``drift-HASH-TIME``: HASH (12 hex) is the same exactly when the inputs are (windows, Delta versions,
    columns, settings), TIME tells reruns apart.

    >>> report_id_for({"a": 1}, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    'drift-f9d86028c6e0-20260102T030405000006'
    """
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"drift-{digest}-{at:%Y%m%dT%H%M%S%f}"


def make_report(lake: str, reference: str | tuple[Any, Any], current: str | tuple[Any, Any], *, by: By = "time",
                max_columns: int = 20, run_id: str | None = None, model: str | None = None,
                source: Literal["events", "predictions"] = "events", drift_share: float = 0.5,
                max_rows: int = 50_000, seed: int = 42, exclude: tuple[str, ...] = ()) -> DriftReport:
    """Build the report comparing two windows and save it under ``LAKE/reports/drift/REPORT_ID/``.

    For a lake on object storage the HTML/JSON files stay local, under
    :func:`lake.storage.state_dir` (the drift flow logs them to MLflow's artifact store).

    ``source="predictions"`` reports on the model's ``features`` map instead of the
    events' columns (hashed and feature-evolving streams). Windows larger than
    ``max_rows`` are sampled (seeded) to that many rows. ``exclude`` names columns left out.
    """
    import time

    from lake.table import table_version

    started = time.perf_counter()
    if source not in ("events", "predictions"):
        raise ValueError(f"source must be 'events' or 'predictions', got {source!r}")
    if max_rows < 2:
        raise ValueError(f"max_rows must be >= 2, got {max_rows!r}")
    if not 0 < drift_share <= 1:
        raise ValueError(f"drift_share must be in (0, 1], got {drift_share!r}")
    ref_w, cur_w = parse_window(reference, by=by), parse_window(current, by=by)
    events_version = table_version(lake, "events")
    if events_version is None:
        from lake.errors import TableNotFoundError
        from lake.table import table_uri

        raise TableNotFoundError("events", table_uri(lake, "events"))
    labels_version = table_version(lake, "labels")
    pinned = events_version if by == "time" else None
    frames, spans = [], []
    for w in (ref_w, cur_w):
        frame = load_window(lake, w, events_version=pinned)
        if frame.height < 2:
            from lake.errors import UsageError

            raise UsageError(f"window {w.label} holds {frame.height} event(s) in {lake}: need at least 2")
        frame, run_id, used = attach_predictions(lake, frame, run_id=run_id, model=model,
                                                 features=source == "predictions")
        model = model or used
        frame = attach_labels(lake, frame, labels_version=labels_version)
        if source == "predictions":
            frame = frame.select([c for c in (*FIXED, *JOINED, "features") if c in frame.columns])
        spans.append((w.start or frame["event_time"].min(), w.end or frame["event_time"].max()))
        frames.append(frame)
    sizes = [f.height for f in frames]
    if source == "predictions":
        both = expand_features(pl.concat(frames, how="diagonal_relaxed"))
        frames = [both.head(sizes[0]), both.slice(sizes[0])]
    frames = [f.sample(max_rows, seed=seed) if f.height > max_rows else f for f in frames]
    columns = select_columns(*frames, max_columns=max_columns, exclude=tuple(exclude))
    if not columns.numerical and not columns.categorical:
        raise ValueError(f"no column worth reporting between {ref_w.label} and {cur_w.label}")
    identity = {"lake": canonical(lake), "by": by, "reference": ref_w.label, "current": cur_w.label,
                "events": events_version, "labels": labels_version, "run_id": run_id, "model": model,
                "columns": columns.numerical + columns.categorical, "source": source, "drift_share": drift_share,
                "max_rows": max_rows, "seed": seed, "exclude": sorted(exclude)}
    created = datetime.now(UTC)
    rid = report_id_for(identity, created)
    title = f"Drift report: {canonical(lake)}, {ref_w.label} vs {cur_w.label}"
    about = [f"reference {_span(spans[0])} ({sizes[0]:,} rows) against current {_span(spans[1])} ({sizes[1]:,} rows)",
             f"{len(columns.numerical) + len(columns.categorical)} columns of {source}"
             + (f"; scores of model {model} (run {run_id})" if model else "; no model's predictions joined"),
             f"events version {events_version}, labels version {labels_version}; report {rid}"]
    from lake.tasks import read_task

    found = read_task(lake)
    task = found.name if found is not None else "binary"
    drift, quality, ref_quality = build_snapshots(
        *frames, columns, drift_share=drift_share, timestamp=spans[1][1],
        metadata={"lake": canonical(lake), "reference": ref_w.label, "current": cur_w.label, "model": model or "",
                  "run_id": run_id or "", "report_id": rid}, task=task)
    folder = state_dir(lake, "reports", "drift", rid)  # LAKE/reports/...; local for an object-store lake
    folder.mkdir(parents=True, exist_ok=True)
    html, js = folder / "drift.html", folder / "drift.json"
    drift.save_html(str(html))
    add_heading(html, title, about)
    drift.save_json(str(js))
    from monitoring.evidently_workspace import add_report

    add_report(canonical(lake), drift, name=f"{cur_w.label} vs {ref_w.label}")
    q_html = q_json = None
    q_summary = None
    if quality is not None:
        q_html, q_json = str(folder / "quality.html"), str(folder / "quality.json")
        quality.save_html(q_html)
        add_heading(Path(q_html), title.replace("Drift report", QUALITY_TITLES[task]), about)
        quality.save_json(q_json)
        q_summary = {f"current.{k}": v for k, v in summarize_quality(quality.dict()).items()}
        q_summary.update({f"reference.{k}": v for k, v in summarize_quality(ref_quality.dict()).items()})
    with open(folder / "meta.json", "w", encoding="utf-8") as fh:
        json.dump({**identity, "report_id": rid, "reference_rows": sizes[0], "current_rows": sizes[1],
                   "columns_available": columns.available}, fh, indent=1, default=str)
    return DriftReport(
        report_id=rid, created_at=created, by=by, reference=ref_w, current=cur_w,
        reference_span=spans[0], current_span=spans[1],
        reference_version=ref_w.last if by == "version" else events_version,
        current_version=cur_w.last if by == "version" else events_version,
        model=model, run_id=run_id, reference_rows=sizes[0], current_rows=sizes[1], columns=columns,
        summary=summarize_drift(drift.dict()), quality=q_summary, html_path=str(html), json_path=str(js),
        quality_html_path=q_html, quality_json_path=q_json, seconds=time.perf_counter() - started)


def _span(span: tuple[Any, Any]) -> str:
    start, end = span
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" if isinstance(start, datetime) else f"{start}-{end}"


def add_heading(path: Path, title: str, lines: list[str]) -> None:
    """Give an Evidently HTML page a ``<title>`` and a heading that says what it compares (Evidently's own
    pages have neither: every report looks the same in a browser tab and in a folder of files)."""
    import html as html_lib

    page = path.read_text(encoding="utf-8")
    head = f"<head>\n<title>{html_lib.escape(title)}</title>"
    banner = ("<body>\n<header style=\"font-family: sans-serif; padding: 12px 24px; border-bottom: 1px solid #ddd\">"
              f"<h1 style=\"font-size: 20px; margin: 0 0 6px 0\">{html_lib.escape(title)}</h1>"
              + "".join(f"<div style=\"color: #444; font-size: 14px\">{html_lib.escape(line)}</div>" for line in lines)
              + "</header>")
    page = page.replace("<head>", head, 1).replace("<body>", banner, 1)
    path.write_text(page, encoding="utf-8")


def report_row(report: DriftReport) -> dict[str, Any]:
    """The ``drift_reports`` row of ``report``."""
    s = report.summary
    return {
        "report_id": report.report_id, "created_at": report.created_at, "by": report.by,
        "reference_start": report.reference_span[0], "reference_end": report.reference_span[1],
        "current_start": report.current_span[0], "current_end": report.current_span[1],
        "reference_version": report.reference_version, "current_version": report.current_version,
        "model": report.model, "run_id": report.run_id, "reference_rows": report.reference_rows,
        "current_rows": report.current_rows, "n_columns": s.n_columns, "n_columns_available": report.columns.available,
        "n_drifted": s.n_drifted, "drifted_share": s.drifted_share, "drift_share": s.drift_share,
        "dataset_drift": s.dataset_drift, "column_scores": s.column_scores, "column_drifted": s.column_drifted,
        "quality": report.quality, "html_path": report.html_path, "json_path": report.json_path,
        "quality_html_path": report.quality_html_path, "quality_json_path": report.quality_json_path,
        "mlflow_run_id": report.mlflow_run_id,
    }


def append_report_row(lake: str, report: DriftReport) -> int:
    """Append the report's row to ``drift_reports`` (idempotent per report id); returns rows written."""
    import pyarrow as pa

    from lake.schemas import DRIFT_REPORTS
    from lake.table import append

    table = pa.Table.from_pylist([report_row(report)], schema=DRIFT_REPORTS)
    return append(lake, "drift_reports", table, writer_id=f"drift_reports/{report.report_id}", position=1)


def read_reports(lake: str) -> pl.DataFrame:
    """``drift_reports`` in order of the current window (empty frame when there is none yet)."""
    from lake.table import exists, read_table

    if not exists(lake, "drift_reports"):
        from lake.schemas import DRIFT_REPORTS

        return pl.from_arrow(DRIFT_REPORTS.empty_table())
    return read_table(lake, "drift_reports").sort("current_end", "created_at")
