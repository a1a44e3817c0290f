"""Scoring the strategies of a benchmark, and its results as lake rows and an HTML report.

Metrics are prequential: every strategy scored each labelled event at the event's
time. Overall and per event-time tumbling window (aligned to the epoch, as the
dataflow's ``metrics``), the lake's task's metrics (:data:`TASK_METRICS`): accuracy,
log loss, ROC AUC (binary); accuracy, macro-F1, log loss (multiclass); MAE, RMSE, R²
(regression).

Recovery after a drift (known from ``scenario_drifts``, else detected by ADWIN on the
reference strategy's error stream): counting labelled events in event order, the events
from the drift until the strategy's accuracy over the last ``w`` labelled events first
comes within ``tol`` of the level it settles at on the new concept (its accuracy over
the ``w`` labelled events before the next drift or the end). ``None``: it did not get
there before the next drift, or the segment is shorter than ``2 w`` (not measurable). The
resolution is ``w`` events: a strategy that does not dip needs ``w`` events. On a
regression lake the level is minus the mean absolute error, and ``tol`` is in units of
the labels' standard deviation.

Beside every metric, the no-skill baseline (:func:`no_skill`): a constant score at the
base rate of the same labels (accuracy of the majority class, log loss of the base rate,
ROC AUC 0.5; multiclass: the classes' shares; regression: the labels' mean, R² 0). The
online baselines ``online/mean``, ``online/persistence`` (regression) and
``online/majority`` (multiclass) learn as they go, and are strategies like the others.
Whole-run figures are also given from the first event at which every
strategy had a model (``*_ready``): before it, some strategies served their prior.

"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from flows.bench.metrics import LABELS, TASK_METRICS, no_skill, overall
from flows.bench.stream import Stream

_WINDOWS_US = [(n, s * 1_000_000) for n, s in (("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("6h", 21600),
                                                ("1d", 86400), ("7d", 604800), ("28d", 2419200),
                                                ("91d", 7862400), ("365d", 31536000), ("1826d", 157766400))]


def add_ready_metrics(stream: Stream, results: Sequence[StrategyResult], runs: Sequence[Any], *,
                      threshold: float = 0.5) -> int:
    """Add the ``*_ready`` figures (from the first event at which every strategy had a model) and the
    no-skill baselines to every result's metrics; returns that event's index."""
    ready = max((int(r.costs.get("first_model_event", 0)) for r in runs), default=0)
    sc = stream.scored
    late = sc[sc >= ready]
    task, k = stream.task, len(stream.classes)
    base, base_ready = no_skill(stream.y[sc], task=task, n_classes=k), no_skill(stream.y[late], task=task, n_classes=k)
    for result, run in zip(results, runs, strict=True):
        m = overall(stream.y[late], run.scores[late], threshold, task=task)
        result.metrics.update({f"{k}_ready": v for k, v in m.items()})
        result.metrics.update({f"noskill_{k}": base[k] for k in TASK_METRICS[task]})
        result.metrics.update({f"noskill_{k}_ready": base_ready[k] for k in TASK_METRICS[task]})
        result.metrics["first_model_event"] = float(run.costs.get("first_model_event", 0))
        result.metrics["ready_event"] = float(ready)
        result.metrics["n_scored_ready"] = float(len(late))
    return ready


def auto_window(stream: Stream, *, max_windows: int = 60) -> tuple[str, int]:
    """The shortest of 1m, 5m, 15m, 1h, 6h, 1d, 7d, 28d, 91d, 365d, 1826d giving at most ``max_windows`` windows."""
    if stream.n_events == 0:
        return _WINDOWS_US[-1]
    span = int(stream.event_time[-1]) - int(stream.event_time[0])
    for name, us in _WINDOWS_US:
        if span // us + 1 <= max_windows:
            return name, us
    return _WINDOWS_US[-1]


def windows(stream: Stream, scores: np.ndarray, window_us: int, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Metrics of the labelled events per event-time window, oldest first (``cum_accuracy`` of the
    classification tasks, ``cum_mae`` of a regression: over every window up to this one)."""
    task = stream.task
    sc = stream.scored
    y, p = stream.y[sc], scores[sc]
    starts = stream.event_time[sc] - stream.event_time[sc] % window_us
    rows = []
    cut = np.flatnonzero(np.diff(starts)) + 1  # event times are sorted
    cum_n = cum_correct = 0
    cum_abs = 0.0
    for lo, hi in zip([0, *cut.tolist()], [*cut.tolist(), len(sc)], strict=True):
        if lo == hi:
            continue
        m = overall(y[lo:hi], p[lo:hi], threshold, task=task)
        n = hi - lo
        cum_n += n
        row = {"window_start": int(starts[lo]), "window_end": int(starts[lo]) + window_us, "n": n,
               "n_positive": int((y[lo:hi] == 1).sum()) if task == "binary" else 0, **m}
        if task == "regression":
            cum_abs += m["mae"] * n
            row["cum_mae"] = cum_abs / cum_n
        else:
            cum_correct += round(m["accuracy"] * n)
            row["cum_accuracy"] = cum_correct / cum_n
        rows.append(row)
    return rows


def detect_drifts(stream: Stream, scores: np.ndarray, threshold: float = 0.5, *, min_gap: int = 0) -> list[int]:
    """Events first served after each ADWIN alarm on the 0/1 errors of ``scores``, in label arrival order.

    Alarms less than ``min_gap`` events after the last one kept are merged into it (one drift,
    not a burst of alarms).
    """
    from monitoring.error_drift import DETECTORS

    det = DETECTORS["adwin"]()
    arrival = stream.arrival
    errors = event_errors(stream, scores, arrival, threshold).tolist()
    out: list[int] = []
    for k, err in enumerate(errors):
        det.update(err)
        if det.drift_detected:
            e = stream.next_event_after_label(k)
            if e < stream.n_events and (not out or e - out[-1] >= max(min_gap, 1)):
                out.append(e)
    return out


def event_errors(stream: Stream, scores: np.ndarray, events: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The error of each of ``events`` as the dataflow's detectors see it: 0/1 (binary, multiclass),
    absolute (regression)."""
    y, p = stream.y[events], scores[events]
    if stream.task == "regression":
        return np.abs(p - y)
    if stream.task == "multiclass":
        return (np.argmax(p, axis=1) != y).astype(float)
    return ((p >= threshold) != (y == 1)).astype(float)


def known_drifts(lake: str | os.PathLike[str], stream: Stream) -> list[int] | None:
    """Event indices of the drifts ``scenario_drifts`` records for the pinned events; ``None`` without any."""
    from lake.table import exists, read_table

    if not exists(lake, "scenario_drifts") or not stream.event_ids:
        return None
    ids = read_table(lake, "scenario_drifts", columns=["event_id"]).get_column("event_id").to_list()
    index = {eid: i for i, eid in enumerate(stream.event_ids)}
    found = sorted(index[i] for i in ids if i in index)
    return found or None


def recovery(stream: Stream, scores: np.ndarray, drifts: Sequence[int], *, w: int = 1_000, tol: float = 0.02,
             threshold: float = 0.5) -> list[dict[str, Any]]:
    """Per drift: accuracy over ``w`` labelled events before and after it, the settled level, the events to it."""
    sc = stream.scored
    if stream.task == "regression":  # the level is minus the absolute error; tol in the labels' sd
        correct = -event_errors(stream, scores, sc)
        tol *= float(np.std(stream.y[sc])) if len(sc) else 1.0
    else:
        correct = 1.0 - event_errors(stream, scores, sc, threshold)
    csum = np.concatenate(([0.0], np.cumsum(correct)))
    starts = np.searchsorted(sc, np.asarray(drifts, dtype=np.int64)).tolist()
    out = []
    for i, (d, s) in enumerate(zip(drifts, starts, strict=True)):
        end = starts[i + 1] if i + 1 < len(starts) else len(sc)
        before = (csum[s] - csum[max(0, s - w)]) / (s - max(0, s - w)) if s > 0 else None
        after = (csum[min(end, s + w)] - csum[s]) / (min(end, s + w) - s) if end > s else None
        settled = events = None
        measurable = end - s >= 2 * w
        if measurable:
            settled = float((csum[end] - csum[end - w]) / w)
            rolling = (csum[s + w:end + 1] - csum[s:end + 1 - w]) / w
            hit = np.flatnonzero(rolling >= settled - tol)
            if hit.size:
                j = s + w + int(hit[0])  # scored events [s, j) reach the level
                events = int(sc[j - 1]) - int(d) + 1
        out.append({"event": int(d), "event_time": int(stream.event_time[min(d, stream.n_events - 1)]),
                    "acc_before": None if before is None else float(before),
                    "acc_after": None if after is None else float(after),
                    "settled_acc": settled, "recovery_events": events, "measurable": measurable})
    return out


def latency_us(latency_ns: np.ndarray) -> tuple[float | None, float | None]:
    if len(latency_ns) == 0:
        return None, None
    p50, p99 = np.percentile(latency_ns, [50, 99])
    return float(p50) / 1000.0, float(p99) / 1000.0


@dataclass
class StrategyResult:
    """Everything the benchmark reports about one strategy."""

    name: str
    metrics: dict[str, float | None]  # the MLflow metric names, the same for every strategy
    windows: list[dict[str, Any]]
    recovery: list[dict[str, Any]]
    resets: list[int]
    fits: list[tuple[int, int, float]]  # batch strategies: (time, training rows, CPU seconds) per fit


def score_strategy(stream: Stream, run: Any, *, window_us: int, drifts: Sequence[int],
                   threshold: float = 0.5, w: int = 1_000, tol: float = 0.02) -> StrategyResult:
    """Metrics of one :class:`flows.bench.strategies.StrategyRun` (see module doc)."""
    sc = stream.scored
    m: dict[str, float | None] = dict(overall(stream.y[sc], run.scores[sc], threshold, task=stream.task))
    c = run.costs
    p50, p99 = latency_us(run.latency_ns)
    rec = recovery(stream, run.scores, drifts, w=w, tol=tol, threshold=threshold)
    got = [r["recovery_events"] for r in rec if r["recovery_events"] is not None]
    m.update({
        "train_cpu_s": c["train_cpu_s"], "predict_cpu_s": c["predict_cpu_s"],
        "cpu_s": c["train_cpu_s"] + c["predict_cpu_s"], "wall_s": c.get("wall_s"),
        "peak_rss_mb": c.get("peak_rss_mb"), "model_bytes": c["model_bytes"], "model_bytes_max": c["model_bytes_max"],
        "history_rows_max": c["history_rows_max"], "n_retrains": c["n_retrains"],
        "latency_p50_us": p50, "latency_p99_us": p99,
        "recovery_events_mean": float(np.mean(got)) if got else None,
        "recovery_events_max": float(max(got)) if got else None,
        "drifts_measured": float(sum(1 for r in rec if r["measurable"])),
        "drifts_not_recovered": float(sum(1 for r in rec if r["measurable"] and r["recovery_events"] is None)),
        "acc_after_drift_mean": _mean([r["acc_after"] for r in rec]),
    })
    fits = [] if run.audit is None else [(t.at_time_us, t.n_rows, t.cpu_s) for t in run.audit.trainings
                                         if t.cpu_s is not None]
    return StrategyResult(run.name, m, windows(stream, run.scores, window_us, threshold), rec, list(run.resets), fits)


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


# --------------------------------------------------------------------------- lake rows


def window_rows(benchmark_id: str, results: Sequence[StrategyResult]) -> list[dict[str, Any]]:
    """Rows of ``benchmark_windows``."""
    rows = []
    for r in results:
        for i, w in enumerate(r.windows):
            rows.append({"benchmark_id": benchmark_id, "strategy": r.name, "window": i,
                         "window_start": _ts(w["window_start"]), "window_end": _ts(w["window_end"]),
                         "n": w["n"], "n_positive": w["n_positive"],
                         **{k: w.get(k) for k in ("accuracy", "log_loss", "roc_auc", "cum_accuracy", "macro_f1",
                                                  "mae", "rmse", "r2", "cum_mae")}})
    return rows


def run_rows(benchmark_id: str, results: Sequence[StrategyResult], *, info: dict[str, Any], config: dict[str, Any],
             report_path: str, created_at: datetime, notes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``benchmark_runs`` (``notes``: what the time budget changed, per strategy)."""
    notes = notes or {}
    rows = []
    for r in results:
        mode, _, learner = r.name.partition("/")
        m = r.metrics
        rows.append({
            "benchmark_id": benchmark_id, "strategy": r.name, "mode": mode, "learner": learner,
            "events_version": info["events_version"], "labels_version": info["labels_version"],
            "n_events": info["n_events"], "n_scored": info["n_labels"], "task": info.get("task", "binary"),
            **{k: m.get(k) for k in RUN_METRICS}, "note": notes.get(r.name),
            "recovery": json.dumps(r.recovery), "config": json.dumps(config, sort_keys=True),
            "report_path": report_path, "created_at": created_at,
        })
    return rows


RUN_METRICS = ("accuracy", "log_loss", "roc_auc", "train_cpu_s", "predict_cpu_s", "cpu_s", "wall_s", "peak_rss_mb",
               "model_bytes", "model_bytes_max", "history_rows_max", "n_retrains", "latency_p50_us",
               "latency_p99_us", "recovery_events_mean", "recovery_events_max", "drifts_measured",
               "drifts_not_recovered",
               "acc_after_drift_mean", "noskill_accuracy", "noskill_log_loss", "first_model_event", "ready_event",
               "n_scored_ready", "accuracy_ready", "log_loss_ready", "roc_auc_ready", "noskill_accuracy_ready",
               "noskill_log_loss_ready",
               *(f"{pre}{m}{post}" for m in ("macro_f1", "mae", "rmse", "r2") for pre in ("", "noskill_")
                 for post in ("", "_ready")))
"""The per-strategy metrics, in ``benchmark_runs`` and in each MLflow child run."""


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=UTC)


# --------------------------------------------------------------------------- HTML report


COLUMNS = {
    "accuracy": "accuracy", "log_loss": "log loss", "roc_auc": "ROC AUC",
    "accuracy_ready": "accuracy, all ready", "log_loss_ready": "log loss, all ready",
    "roc_auc_ready": "ROC AUC, all ready", "train_cpu_s": "train CPU (s)", "predict_cpu_s": "predict CPU (s)",
    "wall_s": "wall (s)", "peak_rss_mb": "peak RSS (MiB)", "model_bytes_max": "largest model (KiB)",
    "history_rows_max": "rows kept (max)", "n_retrains": "retrains", "latency_p50_us": "latency p50 (µs)",
    "latency_p99_us": "latency p99 (µs)", "recovery_events_mean": "events to recover (mean)",
    "drifts_not_recovered": "drifts not recovered",
}
"""The summary table's columns and the headers a reader sees (binary; :func:`columns` for any task)."""


def columns(task: str) -> dict[str, str]:
    """The summary table's columns for ``task``: its metrics, then from the first event all were ready, then costs."""
    metrics = TASK_METRICS[task]
    cols = {m: LABELS[m] for m in metrics} | {f"{m}_ready": f"{LABELS[m]}, all ready" for m in metrics}
    return cols | {k: v for k, v in COLUMNS.items() if k.split("_ready")[0] not in TASK_METRICS["binary"]}

COUNTS = frozenset({"history_rows_max", "n_retrains", "drifts_not_recovered"})
"""Columns that count things: shown as integers, never as ``0.0000``."""


def _fmt(v: Any, column: str | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if column == "model_bytes_max":
        return f"{v / 1024:,.1f}"
    if column in COUNTS or isinstance(v, int):
        return f"{int(round(v)):,}"
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return html.escape(str(v))


def plots(stream: Stream, results: Sequence[StrategyResult], drifts: Sequence[int], *, known: bool) -> dict[str, str]:
    """The report's figures as interactive plotly charts (``<div>``s; plotly.js is embedded once by
    :func:`render_html`): each metric per window with the drifts marked, the cost of each retrain, cost bars."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    def div(fig: Any) -> str:
        fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 40},
                          legend={"font": {"size": 11}})
        return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})

    out = {}
    drift_times = [_ts(int(stream.event_time[min(d, stream.n_events - 1)])) for d in drifts]
    names = {m: LABELS[m] for m in TASK_METRICS[stream.task]}
    for metric, label in names.items():
        fig = go.Figure()
        for r in results:
            fig.add_trace(go.Scatter(x=[_ts(w["window_start"]) for w in r.windows],
                                     y=[None if w[metric] is None else w[metric] for w in r.windows],
                                     mode="lines+markers", marker={"size": 4}, name=r.name))
        for t in drift_times[:200]:
            fig.add_vline(x=t, line={"color": "red" if known else "grey", "dash": "dash" if known else "dot",
                                     "width": 1})
        what = "known drifts dashed red" if known else "drifts detected by ADWIN on the reference dotted grey"
        fig.update_layout(title=f"{label} per event-time window ({what})" if drift_times else
                          f"{label} per event-time window", yaxis_title=label, height=380)
        out[label] = div(fig)
    fitted = [r for r in results if len(r.fits) > 1]
    if fitted:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("CPU seconds of each retrain",
                                                            "training rows of each retrain"))
        for r in fitted:
            xs = [_ts(t) for t, _, _ in r.fits]
            fig.add_trace(go.Scatter(x=xs, y=[c for _, _, c in r.fits], mode="lines+markers", name=r.name,
                                     legendgroup=r.name), row=1, col=1)
            fig.add_trace(go.Scatter(x=xs, y=[n for _, n, _ in r.fits], mode="lines+markers", name=r.name,
                                     legendgroup=r.name, showlegend=False), row=1, col=2)
        fig.update_layout(height=380)
        out["retrain cost"] = div(fig)
    strategy = [r.name for r in results]
    bars = [("CPU seconds (train + predict)", None), ("peak RSS above start (MiB)", "peak_rss_mb"),
            ("largest model, pickled (KiB)", "model_bytes_max"), ("rows kept for retraining (max)",
                                                                  "history_rows_max"),
            ("latency p50 (µs)", "latency_p50_us"), ("latency p99 (µs)", "latency_p99_us")]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for t, _ in bars], horizontal_spacing=0.12)
    for k, (_, key) in enumerate(bars):
        row, col = k // 3 + 1, k % 3 + 1
        if key is None:
            fig.add_trace(go.Bar(y=strategy, x=[r.metrics["train_cpu_s"] or 0 for r in results], name="train",
                                 orientation="h"), row=row, col=col)
            fig.add_trace(go.Bar(y=strategy, x=[r.metrics["predict_cpu_s"] or 0 for r in results], name="predict",
                                 orientation="h"), row=row, col=col)
        else:
            vals = [(r.metrics[key] or 0) / (1024 if key == "model_bytes_max" else 1) for r in results]
            fig.add_trace(go.Bar(y=strategy, x=vals, orientation="h", showlegend=False,
                                 marker={"color": "#7f7f7f"}), row=row, col=col)
            if key in ("latency_p50_us", "latency_p99_us", "model_bytes_max") and max(vals, default=0) > 0:
                fig.update_xaxes(type="log", row=row, col=col)
        fig.update_yaxes(autorange="reversed", row=row, col=col)
    fig.update_layout(barmode="stack", height=620)
    out["costs"] = div(fig)
    return out


def render_html(*, benchmark_id: str, title: str, info: dict[str, Any], config: dict[str, Any],
                results: Sequence[StrategyResult], drifts: Sequence[int], known: bool, figures: dict[str, str],
                stream: Stream) -> str:
    """The report page, self-contained: interactive charts with plotly.js embedded once (works offline)."""
    from plotly.offline import get_plotlyjs

    task = stream.task
    headers = columns(task)
    cols = list(headers)
    head = "".join(f'<th title="{c}">{html.escape(headers[c])}</th>' for c in cols)
    head = "<th>strategy</th>" + head
    body = "".join("<tr><td>" + html.escape(r.name) + "</td>" + "".join(f"<td>{_fmt(r.metrics.get(c), c)}</td>"
                                                                         for c in cols)
                   + "</tr>" for r in results)
    m0 = results[0].metrics if results else {}
    baseline = {c: m0.get(f"noskill_{c}") for c in cols}
    if task == "binary":
        baseline.update(roc_auc=0.5, roc_auc_ready=0.5)
    what = {"binary": "base rate", "multiclass": "class shares", "regression": "mean"}[task]
    body += (f"<tr><td><i>no skill ({what})</i></td>" + "".join(f"<td><i>{_fmt(baseline.get(c), c)}</i></td>"
                                                                for c in cols) + "</tr>")
    ready = int(m0.get("ready_event") or 0)
    n_ready = int(m0.get("n_scored_ready") or 0)
    ready_text = (f"Columns <code>*_ready</code>: the {n_ready:,} labelled events from event "
                  f"{ready:,} on ({_ts(int(stream.event_time[min(ready, stream.n_events - 1)])).date()}), the first at "
                  "which every strategy had a model; before it a strategy without one serves the prior of the labels "
                  "arrived so far. <i>no skill</i>: " + {
                      "binary": "a constant score at the base rate of the same labels.",
                      "multiclass": "the classes' shares among the same labels, the majority class predicted.",
                      "regression": "the mean of the same labels, predicted for every event."}[task])
    notes = config.get("budget", {}).get("notes", {}) if isinstance(config.get("budget"), dict) else {}
    notes_html = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in notes.items())
    chosen = config.get("chosen", [])
    chosen_html = "".join(f"<li>{html.escape(line)}</li>" for line in chosen)
    rec_head = "".join(f"<th>{html.escape(r.name)}</th>" for r in results)
    rec_rows = []
    shown = 40
    for i, d in enumerate(drifts[:shown]):
        t = _ts(int(stream.event_time[min(d, stream.n_events - 1)])).isoformat()
        cells = []
        for r in results:
            x = r.recovery[i]
            cells.append(f"<td>{_fmt(x['recovery_events'])}<br><small>{_fmt(x['acc_before'])} → "
                         f"{_fmt(x['acc_after'])} → {_fmt(x['settled_acc'])}</small></td>")
        rec_rows.append(f"<tr><td>{d:,}<br><small>{t}</small></td>{''.join(cells)}</tr>")
    kind = "known (scenario_drifts)" if known else "detected by ADWIN on the reference strategy's errors"
    charts = "".join(f'<h3>{html.escape(k)}</h3><div class="chart">{v}</div>' for k, v in figures.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1300px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
pre{{background:#f6f6f6;padding:.5em;font-size:12px}}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>{html.escape(title)}</h1>
<p>Benchmark <code>{html.escape(benchmark_id)}</code> ({html.escape(task)} task):
{info['n_events']:,} events, {info['n_labels']:,} labels
(events v{info['events_version']}, labels v{info['labels_version']}), {info['n_features']:,} distinct features.
Every strategy scored the same {info['n_labels']:,} labelled events, each at its event time, learning only from labels
that had arrived by then.</p>
<h2>Summary</h2><table><tr>{head}</tr>{body}</table>
<p>{ready_text}</p>
{f"<h3>Settings chosen</h3><ul>{chosen_html}</ul>" if chosen_html else ""}
{f"<h3>Time budget</h3><ul>{notes_html}</ul>" if notes_html else ""}
<h2>Recovery after drifts ({html.escape(kind)}, {len(drifts)})</h2>
<p>Events to recover; below: {"minus the mean absolute error" if task == "regression" else "accuracy"} over the
labelled events just before → just after → settled level.</p>
<table><tr><th>drift at event</th>{rec_head}</tr>{''.join(rec_rows)}</table>
{f"<p>{len(drifts) - shown} more drifts in <code>benchmark_runs.recovery</code>.</p>" if len(drifts) > shown else ""}
<h2>Figures</h2><p>Zoom, pan and hover for values; click a legend entry to hide a strategy.</p>{charts}
<h2>Configuration</h2><pre>{html.escape(json.dumps({**config, **info}, indent=2, sort_keys=True, default=str))}</pre>
</body></html>"""
