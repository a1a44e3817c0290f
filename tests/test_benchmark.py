"""Issue 5: online learning against batch retraining on one pinned history, compared fairly."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from dataflows.replay import Pin, pin_versions
from flows.bench.report import recovery, windows
from flows.bench.strategies import BenchConfig, StrategySpec, run_isolated, run_strategy
from flows.bench.stream import LeakError, Stream, build_stream, training_rows
from flows.benchmark import benchmark, is_io_error, strategy_names
from lake.table import append, read_table, table_version
from tests.synthetic import T0, synthetic_frames

STRATEGIES = ["online/linear", "adwin-reset/linear", "periodic-sliding/sk-logreg", "periodic-expanding/hgb",
              "periodic-sliding/river-linear", "static/sk-logreg"]
CONFIG = BenchConfig(retrain_every_events=300, sliding_events=900, latency_samples=200)


def _truth(lake: str, pin: Pin) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events in replay order and labels, read straight from the lake (not through the benchmark)."""
    events = read_table(lake, "events", version=pin.events).sort(["event_time", "offset"], maintain_order=True)
    labels = read_table(lake, "labels", version=pin.labels)
    return events, labels


def _grow(lake: str, start: int, n: int, position: int) -> None:
    """Append ``n`` more events and their labels after the synthetic lake's 3,000."""
    events, labels = synthetic_frames(start + n, seed=99)
    shift = [pl.col("event_id").str.replace("e", "g")]
    append(lake, "events", events.tail(n).with_columns(*shift, pl.col("offset") + 10_000),
           writer_id="grow", position=position)
    append(lake, "labels", labels.tail(n).with_columns(*shift), writer_id="grow", position=position)


def test_no_strategy_learns_a_label_before_its_label_time(synthetic_lake):
    pin = pin_versions(synthetic_lake)
    stream = build_stream(synthetic_lake, pin)
    events, labels = _truth(synthetic_lake, pin)
    event_time = dict(zip(events["event_id"], events["event_time"], strict=True))
    label_time = dict(zip(labels["event_id"], labels["label_time"], strict=True))
    ids = events["event_id"].to_list()
    assert stream.event_ids == ids
    # The label clock of every event, recomputed from the lake: labels strictly before it
    # (at equal times the replay serves events first).
    lt_sorted = np.sort(labels["label_time"].dt.epoch("us").to_numpy())
    expected = np.searchsorted(lt_sorted, events["event_time"].dt.epoch("us").to_numpy(), side="left")
    assert np.array_equal(stream.labels_before, expected)

    for name in STRATEGIES:
        run = run_strategy(stream, name, CONFIG, keep_rows=True)
        assert run.audit.n_served > 0, name
        if name.startswith(("periodic", "static")):
            assert run.audit.trainings, name
        for t in run.audit.trainings:
            now = event_time[ids[t.at_event]]
            used = [ids[e] for e in t.rows.tolist()]
            assert len(used) == t.n_rows > 0
            assert max(label_time[i] for i in used) <= now, (name, t.at_event)
            # ... and everything that had arrived strictly before was available (expanding windows)
            if name.startswith("periodic-expanding"):
                assert len(used) == sum(1 for v in label_time.values() if v < now)


@pytest.mark.parametrize("name", ["online/linear", "adwin-reset/linear", "periodic-expanding/sk-logreg",
                                  "periodic-sliding/river-linear"])
def test_a_label_clock_running_ahead_is_caught(synthetic_lake, name):
    stream = build_stream(synthetic_lake, pin_versions(synthetic_lake))
    # Pretend labels arrive 40 events earlier than they do: some come before their label_time.
    stream.labels_before = np.minimum(stream.labels_before + 40, len(stream.arrival))
    with pytest.raises(LeakError):
        run_strategy(stream, name, CONFIG)


def test_training_rows_windows_and_cap(synthetic_lake):
    stream = build_stream(synthetic_lake, pin_versions(synthetic_lake))
    at = 2_000
    everything = training_rows(stream, at)
    assert len(everything) == stream.labels_before[at]
    assert np.all(np.diff(everything) > 0)
    last = training_rows(stream, at, window=("events", 500))
    assert last.min() >= at - 500 and set(last) <= set(everything)
    recent = training_rows(stream, at, window=("us", 300_000_000))
    assert np.all(stream.event_time[recent] >= stream.event_time[at] - 300_000_000)
    assert len(training_rows(stream, at, max_rows=100)) == 100


def test_features_are_those_the_dataflow_computes(synthetic_lake):
    from dataflows.learner import RunConfig, ShardLearner
    from dataflows.replay import ReplayPlan

    pin = pin_versions(synthetic_lake)
    stream = build_stream(synthetic_lake, pin)
    plan = ReplayPlan(synthetic_lake, pin=pin)
    learner = ShardLearner(RunConfig(run_id="t", label_ttl_us=None, drift_detectors=()), shard=0)
    out = learner.process(plan.batch(0, len(plan)))
    preds = pl.from_arrow(out.tables["predictions"].arrow())
    assert preds["event_id"].to_list() == stream.event_ids
    for e in (0, 1, 777, 2_999):
        assert dict(preds["features"][e]) == stream.row(e)
    # and the online strategy's scores are the dataflow's, bit for bit, from its first learned label on
    # (before it the strategy serves the prior of the labels arrived so far: none yet, so a negative)
    run = run_strategy(stream, "online/linear", CONFIG)
    first = int(run.costs["first_model_event"])
    assert 0 < first < 100 and np.array_equal(run.scores[first:], preds["score"].to_numpy()[first:])
    assert (run.scores[:first] < 0.5).all()


def test_results_reproduce_under_a_seed_in_process_and_isolated(synthetic_lake, tmp_path):
    stream = build_stream(synthetic_lake, pin_versions(synthetic_lake))
    folder = stream.save(tmp_path / "stream")
    for name in ("periodic-sliding/hgb", "online/tree"):
        a = run_strategy(stream, name, CONFIG)
        b = run_strategy(stream, name, CONFIG)
        c = run_isolated(folder, name, CONFIG, out_dir=tmp_path / name.replace("/", "_"))
        assert np.array_equal(a.scores, b.scores), name
        assert np.array_equal(a.scores, c.scores), name
        assert c.costs["train_cpu_s"] > 0 and c.costs["model_bytes"] > 0


def test_recovery_counts_events_until_the_settled_level():
    n = 6_000
    stream = Stream(event_time=np.arange(n, dtype=np.int64) * 1_000_000, y=np.ones(n, dtype=np.int8),
                    label_time=np.arange(n, dtype=np.int64), arrival=np.arange(n), labels_before=np.zeros(n, int),
                    indptr=np.zeros(n + 1, int), indices=np.zeros(0, np.int32), values=np.zeros(0), names=[])
    scores = np.ones(n)
    scores[3_000:3_400] = 0.0  # wrong for 400 events after the drift at 3,000
    (r,) = recovery(stream, scores, [3_000], w=200, tol=0.02)
    assert r["acc_before"] == 1.0 and r["acc_after"] == 0.0 and r["settled_acc"] == 1.0
    assert r["recovery_events"] == 400 + 200 - 4  # the first window of 200 with at most 4 errors
    (never,) = recovery(stream, np.where(np.arange(n) >= 3_000, 0.0, 1.0), [5_700], w=200)
    assert never["recovery_events"] is None  # segment shorter than 2 w
    rows = windows(stream, scores, 1_000_000_000)
    assert sum(w["n"] for w in rows) == n and rows[3]["accuracy"] == 0.6


def test_strategy_names_and_errors():
    assert strategy_names("linear,tree", "", "hgb", "sliding", "", "") == [
        "online/linear", "online/tree", "periodic-sliding/hgb"]
    with pytest.raises(ValueError, match="unknown batch learner"):
        StrategySpec.parse("static/xgboost")
    with pytest.raises(ValueError, match="unknown strategy mode"):
        StrategySpec.parse("weekly/hgb")
    with pytest.raises(ValueError, match="duration"):
        BenchConfig(retrain_every="weekly")


def test_only_io_errors_are_retried():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
    from sqlalchemy.exc import OperationalError

    assert is_io_error(OSError("disk"))
    assert is_io_error(ConnectionError("refused"))
    try:
        try:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        except OperationalError as ex:
            raise MlflowException("store failed") from ex
    except MlflowException as wrapped:
        assert is_io_error(wrapped)
    assert is_io_error(MlflowException("try later", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_io_error(MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE))
    assert not is_io_error(MlflowException("a bug in the caller"))
    assert not is_io_error(ValueError("bug"))


def test_flow_writes_mlflow_runs_report_and_lake_tables(prefect_harness, synthetic_lake, mlflow_uri):
    from mlflow.tracking import MlflowClient

    out = benchmark(lake=synthetic_lake, strategies=STRATEGIES, retrain_every_events=300, sliding_events=900,
                    isolate=False, tracking_uri=mlflow_uri)
    bid = out["benchmark_id"]
    # every strategy scored exactly the labelled events of the pinned version
    labelled = read_table(synthetic_lake, "labels").height
    for run in out["runs"]:
        assert np.isfinite(run.scores).all()
    counts = {name: sum(w["n"] for w in rec) for name, rec in _windows_by_strategy(synthetic_lake, bid).items()}
    assert counts == dict.fromkeys(STRATEGIES, labelled)

    client = MlflowClient(tracking_uri=mlflow_uri)
    parent = client.get_run(out["mlflow_run_id"])
    assert parent.data.params["events_version"] == str(out["pin"]["events"])
    exp = parent.info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["riverlake.strategy"] for c in children) == sorted(STRATEGIES)
    keys = {frozenset(c.data.metrics) for c in children}
    assert len(keys) == 1 and {"accuracy", "log_loss", "roc_auc", "train_cpu_s", "latency_p99_us",
                               "peak_rss_mb", "history_rows_max", "model_bytes"} <= set(next(iter(keys)))
    history = client.get_metric_history(children[0].info.run_id, "window_accuracy")
    assert sorted(m.step for m in history) == list(range(len(history))) and len(history) > 10
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == [f"benchmark-{bid}.html"]

    with open(out["report"], encoding="utf-8") as f:
        page = f.read()
    assert out["report"].endswith(f"reports/benchmark-{bid}.html")
    # interactive charts, plotly.js embedded once (the page works offline); headers a person reads
    assert page.count('class="chart"') == 5 and page.count('class="plotly-graph-div"') == 5
    assert "static/sk-logreg" in page
    assert "<script src=" not in page and "largest model (KiB)</th>" in page and ">model_bytes_max<" not in page
    runs = read_table(synthetic_lake, "benchmark_runs").filter(pl.col("benchmark_id") == bid)
    assert sorted(runs["strategy"]) == sorted(STRATEGIES)
    online = runs.filter(pl.col("strategy") == "online/linear").row(0, named=True)
    assert online["history_rows_max"] == 0 and online["accuracy"] > 0.7
    static = runs.filter(pl.col("strategy") == "static/sk-logreg").row(0, named=True)
    assert static["n_retrains"] == 1
    expanding = runs.filter(pl.col("strategy") == "periodic-expanding/hgb").row(0, named=True)
    assert expanding["history_rows_max"] > 2_000 and expanding["latency_p50_us"] > online["latency_p50_us"]


def _windows_by_strategy(lake: str, bid: str) -> dict[str, list[dict]]:
    frame = read_table(lake, "benchmark_windows").filter(pl.col("benchmark_id") == bid)
    return {name: group.to_dicts() for (name,), group in frame.group_by("strategy")}


def test_the_pinned_version_is_honoured_while_the_tables_grow(prefect_harness, synthetic_lake, tmp_path):
    pinned = table_version(synthetic_lake, "events")
    labels_pinned = table_version(synthetic_lake, "labels")
    _grow(synthetic_lake, 3_000, 500, position=1)  # after pinning: must not be seen
    assert read_table(synthetic_lake, "events").height == 3_500

    stop = threading.Event()

    def keep_growing() -> None:
        position = 2
        while not stop.is_set():
            _grow(synthetic_lake, 3_500 + 100 * (position - 2), 100, position=position)
            position += 1

    grower = threading.Thread(target=keep_growing)
    grower.start()
    try:
        out = benchmark(lake=synthetic_lake, as_of=pinned, labels_as_of=labels_pinned,
                        strategies=["online/linear", "periodic-sliding/sk-logreg"], retrain_every_events=300,
                        sliding_events=900, isolate=False, tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}")
    finally:
        stop.set()
        grower.join()
    assert table_version(synthetic_lake, "events") > pinned + 1  # it did grow during the run
    assert out["pin"] == {"events": pinned, "labels": labels_pinned}
    assert out["info"]["n_events"] == 3_000 and out["info"]["n_labels"] == 3_000
    rows = _windows_by_strategy(synthetic_lake, out["benchmark_id"])
    assert {k: sum(w["n"] for w in v) for k, v in rows.items()} == {"online/linear": 3_000,
                                                                   "periodic-sliding/sk-logreg": 3_000}
    assert max(w["window_end"] for v in rows.values() for w in v) <= T0 + timedelta(seconds=3_060)

    # latest, without as_of: everything there is when the flow pins
    out2 = benchmark(lake=synthetic_lake, strategies=["online/linear"], retrain_every_events=300, sliding_events=900,
                     isolate=False, tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}")
    assert out2["info"]["n_events"] == read_table(synthetic_lake, "events", version=out2["pin"]["events"]).height


def test_known_drifts_are_used_for_recovery(prefect_harness, tmp_path):
    from lake.ingest import ingest_scenario

    lake = str(tmp_path / "agrawal")
    ingest_scenario(lake, "agrawal-drift", n=8_000)
    out = benchmark(lake=lake, strategies=["online/tree", "static/sk-logreg"], isolate=False,
                    tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}", recovery_window=300)
    assert out["drifts"] == [2_000, 4_000, 6_000]
    assert out["settings"]["drifts"] == "known"
    tree = out["recovery"]["online/tree"]
    assert len(tree) == 3 and all(r["settled_acc"] is not None for r in tree)
    assert out["results"]["online/tree"]["accuracy"] > out["results"]["static/sk-logreg"]["accuracy"]


# --------------------------------------------------------------------------- defaults from the data (issue 22)


@pytest.fixture(scope="module")
def daily_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3 weather stations, a row a day each while they report, over 48 years; labels a day later."""
    from flows.bench.daily import write_daily_history

    root = str(tmp_path_factory.mktemp("daily") / "lake")
    write_daily_history(root)
    return root


def test_auto_schedule_is_bounded_on_a_daily_multi_decade_history(daily_lake):
    from flows.bench.plan import label_clock, resolve_schedule
    from lake.errors import UsageError

    stream = build_stream(daily_lake, pin_versions(daily_lake))
    chosen = resolve_schedule(stream)
    # weekly would be 2,504 retrains; 20 retrain periods of 949 events instead, said with the reason
    assert chosen.retrain_every is None and chosen.retrain_every_events == 949
    assert chosen.lines[0] == ("retrain every 949 events (~2.4 years of event time; 20 retrains; auto: weekly would "
                               "mean 2,504 over 48.0 years)")
    # in rows: 28 days hold ~30 of them
    assert chosen.sliding is None and chosen.sliding_events == 3796 and chosen.static_rows == 1_000
    assert resolve_schedule(label_clock(daily_lake)) == chosen  # the CLI's pre-check sees the same
    with pytest.raises(UsageError, match="sliding window 28d keeps ~30 labelled rows per fit"):
        resolve_schedule(stream, sliding="28d")
    with pytest.raises(UsageError, match="retrain every 20,000 events: no retrain would happen in 18,992 events"):
        resolve_schedule(stream, retrain_every_events=20_000)
    # explicit values win
    asked = resolve_schedule(stream, retrain_every="365d", sliding_events=5000, static_rows=300)
    assert (asked.retrain_every, asked.sliding_events, asked.static_rows) == ("365d", 5000, 300)
    assert asked.lines[0] == "retrain every 365d (48 retrains; as asked)"


def test_strategies_without_a_model_serve_the_prior_not_a_positive_tie(daily_lake):
    stream = build_stream(daily_lake, pin_versions(daily_lake))
    config = BenchConfig(retrain_every_events=949, sliding_events=3796, latency_samples=50)
    negatives = stream.y == 0  # 74% of the labels: "no rain"
    for name in ("periodic-sliding/sk-logreg", "online/linear", "adwin-reset/linear"):
        run = run_strategy(stream, name, config)
        first = int(run.costs["first_model_event"])
        assert 0 < first < stream.n_events, name
        before = run.scores[:first]
        assert before[0] < 0.5 and not (before == 0.5).any(), name  # no label yet: a negative, never a tie
    # before its first fit (949 events, 2.4 years) the batch strategy served the prior: it said "rain"
    # for almost no event, so it was right about as often as "no rain" is; 0.5 made every event "rain"
    batch = run_strategy(stream, "periodic-sliding/sk-logreg", config)
    first = int(batch.costs["first_model_event"])
    said_rain = batch.scores[:first] >= 0.5
    assert first == 949 and said_rain.mean() < 0.05
    assert (said_rain != negatives[:first]).mean() == pytest.approx(negatives[:first].mean(), abs=0.05)


def test_budget_subsamples_then_skips_and_says_why(synthetic_lake):
    from flows.bench.plan import estimate_seconds, plan_budget

    stream = build_stream(synthetic_lake, pin_versions(synthetic_lake))
    config = BenchConfig(retrain_every_events=30, sliding_events=900)  # 99 retrains
    names = ["online/linear", "periodic-expanding/hgb", "static/sk-logreg"]
    full = {n: estimate_seconds(stream, n, config) for n in names}
    assert full["periodic-expanding/hgb"] > 10 * full["online/linear"]
    roomy = plan_budget(stream, names, config, budget_s=None)
    assert roomy.configs == dict.fromkeys(names, config) and not roomy.notes
    tight = plan_budget(stream, names, config, budget_s=sum(full.values()) / 3)
    hgb = tight.configs["periodic-expanding/hgb"]
    assert hgb.retrain_stride > 1 and tight.total <= sum(full.values()) / 3
    assert tight.notes["periodic-expanding/hgb"].startswith("subsampled: retrained at every ")
    assert tight.configs["online/linear"] == config and "online/linear" not in tight.notes
    tiny = plan_budget(stream, names, config, budget_s=full["online/linear"] + full["static/sk-logreg"])
    assert tiny.configs["periodic-expanding/hgb"] is None
    assert tiny.notes["periodic-expanding/hgb"].startswith("skipped: estimated ")


def test_default_benchmark_on_a_daily_history_reports_choices_budget_and_no_skill(prefect_harness, daily_lake,
                                                                                   tmp_path):
    from flows.benchmark import markdown_table

    names = ["online/linear", "static/sk-logreg", "periodic-expanding/hgb"]  # ~14 s estimated at full schedule
    out = benchmark(lake=daily_lake, strategies=names, isolate=False, tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}",
                    budget="6s")
    assert out["chosen"][0].startswith("retrain every 949 events (~2.4 years of event time; 20 retrains")
    assert out["settings"]["retrain_every_events"] == 949 and out["settings"]["retrain_every"] is None
    # the budget subsampled (or skipped) the costly strategy, and the lake row and the report say so
    note = out["notes"]["periodic-expanding/hgb"]
    assert note.startswith(("subsampled", "skipped"))
    with open(out["report"], encoding="utf-8") as f:
        page = f.read()
    assert "Time budget" in page and html_escape(note.split(" (")[0]) in page and "no skill (base rate)" in page
    runs = read_table(daily_lake, "benchmark_runs").filter(pl.col("benchmark_id") == out["benchmark_id"])
    if note.startswith("subsampled"):
        row = runs.filter(pl.col("strategy") == "periodic-expanding/hgb").row(0, named=True)
        assert row["note"] == note and row["n_retrains"] < 20
    # the no-skill baseline beside each metric, and figures from the first event every strategy had a model
    y = read_table(daily_lake, "labels")["label"].to_numpy()
    online = runs.filter(pl.col("strategy") == "online/linear").row(0, named=True)
    assert online["noskill_accuracy"] == pytest.approx(max(y.mean(), 1 - y.mean()))
    assert online["ready_event"] == out["ready_event"] >= 1_000 - 3  # static waits for 1,000 labels
    assert online["accuracy_ready"] is not None and online["n_scored_ready"] < len(y)
    table = markdown_table(out["results"])
    assert "| *no skill (base rate)* | " + f"{max(y.mean(), 1 - y.mean()):.4f}" in table
    assert "acc (all had a model)" in table
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'ml.db'}")
    parent = client.get_run(out["mlflow_run_id"])
    child = client.search_runs([parent.info.experiment_id], filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`riverlake.strategy` = 'online/linear'"))[0]
    assert child.data.metrics["noskill_accuracy"] == pytest.approx(online["noskill_accuracy"])
    assert child.data.metrics["noskill_roc_auc"] == 0.5 and "accuracy_ready" in child.data.metrics


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_progress_is_a_bar_with_an_eta_on_a_terminal_and_log_lines_otherwise():
    import io

    from flows.bench.progress import StrategyProgress

    out = io.StringIO()
    bar = StrategyProgress("periodic-sliding/hgb", index=5, count=9, estimate_s=20.0, out=out, tty=True)
    bar.update(0, 1_000)
    bar.update(500, 1_000)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].startswith("[5/9] periodic-sliding/hgb [........................]   0%")
    assert "ETA   20 s" in frames[0] or "ETA   19 s" in frames[0]  # from the estimate before any progress
    assert frames[1].startswith("[5/9] periodic-sliding/hgb [############............]  50%")
    assert out.getvalue().endswith("\n")
    lines: list[str] = []
    quiet = StrategyProgress("online/linear", index=1, count=9, estimate_s=5.0, log=lines.append, tty=False,
                             every_s=0.0)
    quiet.update(250, 1_000)
    assert lines and lines[0].startswith("[1/9] online/linear: 25% of 1,000 events, ") and "ETA" in lines[0]
