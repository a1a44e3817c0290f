"""The online-learning dataflow: replay (or live) → validate → featurize → predict → learn → lake.

Run it with Bytewax::

    python -m bytewax.run dataflows.online:flow                       # settings from env
    python -m bytewax.run "dataflows.online:build_flow(lake='lakehouse', model='linear,tree')"

``flow`` reads its settings from ``RIVERLAKE_*`` environment variables. Every setting is
declared once, in :mod:`dataflows.settings`; :func:`build_flow`, :func:`replay_job`,
:func:`run_replay` and :func:`build_live_flow` take them as one
:class:`~dataflows.settings.RunSettings` (``settings=``) or as keyword arguments, and derive
the run identity and the learner's :class:`~dataflows.learner.RunConfig` from them.
``python -m dataflows.online`` is ``riverlake replay`` (:mod:`flows.cli`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink, Sink

from dataflows.control import PromotionControl
from dataflows.defaults import History, announce, choose, format_us
from dataflows.gc_tuning import freeze_survivors, tune_gc
from dataflows.items import Batch, Output
from dataflows.learner import RunConfig, ShardLearner, resume_learner, seal_learner
from dataflows.live_defaults import resolve_live
from dataflows.replay import ReplayPlan, pin_versions
from dataflows.settings import LIVE_AUTO, RunSettings, settings_of
from dataflows.sinks import URGENT_TABLES, DeltaSink
from dataflows.sources import ReplaySource
from dataflows.validate import validate_batch
from lake import integrity
from lake.durations import parse_duration_us  # noqa: F401 - re-exported: the one duration grammar
from lake.entry import run_main
from lake.runs import RunIdentity, record_run


def check_resumed(snapshot: RunConfig, config: RunConfig) -> None:
    """Refuse a recovery snapshot taken by a run with another run id or other settings.

    >>> check_resumed(RunConfig(run_id="a", seed=1), RunConfig(run_id="a", seed=2))
    Traceback (most recent call last):
    ...
    ValueError: the recovery snapshot was taken by run 'a' with other settings (snapshot -> now: seed 1 -> 2); ...
    """
    if snapshot == config:
        return
    diff = [f"{f.name} {getattr(snapshot, f.name)!r} -> {getattr(config, f.name)!r}" for f in fields(RunConfig)
            if getattr(snapshot, f.name) != getattr(config, f.name)]
    raise ValueError(f"the recovery snapshot was taken by run {snapshot.run_id!r} with other settings "
                     f"(snapshot -> now: {'; '.join(diff[:4])}); resume with the same settings, or start "
                     "another run id with its own recovery folder")


class LearnLogic(StatefulBatchLogic[Batch, Output, tuple[str, bytes]]):
    """Bytewax wrapper of :class:`ShardLearner`; its snapshot is the pickled learner, sealed with an HMAC.

    With ``freeze_at_snapshot`` (live runs) each snapshot also moves what is alive into the collector's
    permanent generation (:func:`~dataflows.gc_tuning.freeze_survivors`, no collection first), so a full
    collection walks only what was made since the last snapshot, not the whole learner state while
    messages wait (12-90 ms at 5,000 msg/s before)."""

    def __init__(self, config: RunConfig, resume: tuple[str, bytes] | None,
                 control: PromotionControl | None = None, *, freeze_at_snapshot: bool = False) -> None:
        self.config = config
        self.control = control
        self.freeze_at_snapshot = freeze_at_snapshot
        self.learner: ShardLearner | None = resume_learner(resume, config)
        if self.learner is not None:
            check_resumed(self.learner.config, config)

    def on_batch(self, values: list[Batch]) -> tuple[Iterable[Output], bool]:
        out = []
        for batch in values:
            if self.learner is None:
                self.learner = ShardLearner(self.config, shard=batch.shard)
            if self.control is not None:
                champion = self.control.poll()
                if champion is not None:
                    self.learner.set_champion(champion)
            out.append(self.learner.process(batch))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        if self.learner is None:
            return [], StatefulBatchLogic.RETAIN
        return [self.learner.finish()], StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[str, bytes]:
        sealed = seal_learner(self.learner, self.config)
        if self.freeze_at_snapshot:
            freeze_survivors(collect=False)
        return sealed


def make_flow(source: Source[Batch], sink: Sink[tuple[str, Output]], config: RunConfig,
              *, flow_id: str = "riverlake", control_lake: str | None = None,
              control_interval_s: float = 2.0, extra_sinks: Sequence[Sink[Output]] = (),
              colocate: bool = False, freeze_at_snapshot: bool = False) -> Dataflow:
    """The dataflow graph with its parts injected (production, replay and tests share it).

    With ``control_lake``, the predict/learn step follows champion promotions recorded
    for this run in that lake's ``promotions`` table. With ``colocate``, each partition of
    ``source`` (a fixed-partitioned source) runs its shard's predict/learn step itself
    (:mod:`dataflows.colocated`): give ``sink`` the source's partition names and no batch
    crosses workers. ``freeze_at_snapshot``: see :class:`LearnLogic`.
    """
    tune_gc()  # the process that builds the flow runs it: fewer full walks of the learner's state
    flow = Dataflow(flow_id)
    if colocate:
        from dataflows.colocated import ColocatedSource

        outputs = op.input("source", flow, ColocatedSource(source, config, control_lake=control_lake,
                                                            control_interval_s=control_interval_s))
        out = op.key_on("shard", outputs, lambda o: str(o.shard))
        op.output("lake", out, sink)
        for i, extra in enumerate(extra_sinks):  # partitioned ones by shard, like the lake's
            op.output(f"extra-{i}", out if isinstance(extra, FixedPartitionedSink) else outputs, extra)
        return flow
    batches = op.input("source", flow, source)
    keyed = op.key_on("shard", batches, lambda b: str(b.shard))
    valid = op.map_value("validate", keyed, partial(validate_batch, task=config.task))
    def builder(resume: bytes | None) -> LearnLogic:
        control = (PromotionControl(control_lake, config.run_id, interval_s=control_interval_s)
                   if control_lake is not None else None)
        return LearnLogic(config, resume, control, freeze_at_snapshot=freeze_at_snapshot)

    out = op.stateful_batch("learn", valid, builder)
    op.output("lake", out, sink)
    plain = op.key_rm("outputs", out) if any(not isinstance(e, FixedPartitionedSink) for e in extra_sinks) else None
    for i, extra in enumerate(extra_sinks):  # partitioned ones by shard, like the lake's
        op.output(f"extra-{i}", out if isinstance(extra, FixedPartitionedSink) else plain, extra)
    return flow


@dataclass(frozen=True)
class ReplayJob:
    """The parts of a replay dataflow, before they are wired together."""

    source: ReplaySource
    sink: DeltaSink
    config: RunConfig
    lake: str
    control_interval_s: float = 2.0
    colocate: bool = False
    settings: RunSettings | None = None  # as resolved at start ("auto" time scales chosen)

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def flow(self) -> Dataflow:
        return make_flow(self.source, self.sink, self.config, flow_id="riverlake-replay",
                         control_lake=self.lake, control_interval_s=self.control_interval_s,
                         colocate=self.colocate)


def _given(lake: str | None, model: str | Sequence[str] | None, values: dict[str, Any]) -> dict[str, Any]:
    """The keyword settings of a flow factory; ``lake``/``model`` left as ``None`` take the settings' own."""
    return {**({"lake": lake} if lake is not None else {}), **({"model": model} if model is not None else {}),
            **values}


def replay_job(lake: str | None = None, model: str | Sequence[str] | None = None, *,
               settings: RunSettings | None = None, **values: Any) -> ReplayJob:
    """Resolve the settings of a replay (:class:`~dataflows.settings.RunSettings`, or keyword
    arguments turned into them; keywords given with ``settings`` override it); see :func:`build_flow`."""
    settings = settings_of("replay", settings, _given(lake, model, values)).with_lake_task()
    use_system_allocator()  # mimalloc's page purging cost the learner's thread ~1 s of system CPU per 1M events
    lake = settings.sinks.lake
    integrity.key(create=True, lake=lake)  # before any work: made now if new, refused inside the lake
    src, md, mon = settings.source, settings.models, settings.monitoring
    pin = pin_versions(lake, events_version=src.events_version, labels_version=src.labels_version)
    # Time-scale settings not given: from the pinned history (dataflows.defaults), printed below.
    acting = mon.drift_action != "none"
    # One shard: the plan holds the whole history, read once for the defaults and the replay.
    plan = ReplayPlan(lake, pin=pin) if src.shards == 1 else None
    history = (plan.history() if plan is not None
               else History.read(lake, events_version=pin.events, labels_version=pin.labels))
    chosen = choose(history, label_ttl=md.label_ttl, window=md.window, grace=md.grace, stats_window=mon.stats_window,
                    action_window=mon.action_window if acting else None)
    del history
    source = ReplaySource(lake, pin=pin, shards=src.shards, batch_size=src.batch_size, rate=src.rate,
                          balance=src.balance, plan=plan)
    settings = settings.resolved(
        **{k: None if chosen[k].us is None else format_us(chosen[k].us)
           for k in ("window", "grace", "label_ttl", "stats_window")},
        action_window=chosen["action_window"].us if "action_window" in chosen else LIVE_AUTO["action_window"],
        events_version=pin.events, labels_version=pin.labels, batch_size=source.batch_size)
    # Label expiry runs per batch, so the batch size is part of what the run computes.
    identity = RunIdentity(kind="replay", lake=os.fspath(lake), events_version=pin.events,
                           labels_version=pin.labels, batch_size=source.batch_size, settings=settings.identity())
    run_id = identity.run_id() if settings.sinks.run_id is None else settings.sinks.run_id
    config = settings.run_config(run_id)
    record_run(lake, run_id, identity)  # another identity under this id is refused here, before any work
    source.run_id = run_id  # named in the progress lines on stderr
    announce(run_id, pin, chosen.values())
    sinks = settings.sinks
    sink = DeltaSink(lake, run_id=run_id, partitions=src.shards, flush_rows=sinks.flush_rows,
                     flush_seconds=sinks.flush_seconds, part_names=source.list_parts() if sinks.colocate else None,
                     task=config.task)
    return ReplayJob(source, sink, config, os.fspath(lake), sinks.control_interval_s, sinks.colocate, settings)


def build_flow(lake: str | None = None, model: str | Sequence[str] | None = None, *,
               settings: RunSettings | None = None, **values: Any) -> Dataflow:
    """Replay the lake's ``events`` + ``labels`` through the models named in ``model``.

    The settings come as one :class:`~dataflows.settings.RunSettings` (``settings=``), as
    keyword arguments, or both (keywords win); each is documented once, in
    :mod:`dataflows.settings`, and summarised here.

    ``model`` is one spec name or several separated by commas; the first is the
    champion, the others are challengers that predict and learn in shadow. The
    replay reads ``events_version``/``labels_version`` (latest when omitted). With
    no ``run_id``, one is derived from the versions and settings, so running the
    same replay twice writes nothing the second time.

    Other settings: ``shards`` (independent model copies, keyed by a stable hash
    of the entity key; spread over workers), ``batch_size`` (items per source
    batch), ``seed``, ``checkpoint_every`` (learns between model checkpoints),
    ``window``/``grace`` (prequential metric windows and how long after a
    window's end late labels still count, e.g. ``"1d"``), ``threshold``
    (decision threshold on the score), ``exclude``/``categorical`` (payload
    fields to drop / to one-hot even when numeric), ``flush_rows``/``flush_seconds``
    (Delta commit sizing), ``rate`` (pace the replay at this many items per second,
    for demos and live-like runs), ``control_interval_s`` (how often the running
    flow looks for a new champion in the lake's ``promotions`` table), ``label_ttl``
    (give up waiting for a label this long after its event, e.g. ``"7d"``; the event
    is recorded in ``expired``; ``None`` waits forever), ``hash_fields``/``n_buckets``
    (text fields such as a URL split into tokens hashed into ``n_buckets``
    indicators: bounded memory on feature-evolving streams), ``drift`` (detectors run
    on every model's error stream, alarms in ``drift_events``; ``""`` for none).

    ``window``, ``grace``, ``label_ttl`` and ``stats_window`` default to ``"auto"``: chosen
    from the pinned history (:mod:`dataflows.defaults`) and printed on stderr with their
    reasons when the replay is built, with the run id; every shard prints progress lines
    (events and items done, rate, ETA) and, at the end, what did not reach learning
    (:mod:`dataflows.discards`, also a ``run_summaries`` row; a warning past the thresholds).

    Monitoring (:mod:`monitoring.stream`): ``stats_window`` (event-time tumbling windows
    of feature statistics in ``window_stats``, e.g. ``"15s"``; ``None`` for none) closed
    by a watermark ``lateness`` behind the latest event time (later events go to
    ``late_events``), ``anomaly`` (scorer spec, e.g. ``"zscore"`` or ``"hst"``: a score
    per prediction, events above its threshold in ``anomalies``; ``None`` for none),
    ``watch`` (detectors on the champion's label-free signals, e.g.
    ``"new_features=page-hinkley; feature:dep_delay=adwin"``), ``drift_action``
    (``"reset"`` or ``"retrain"`` a model when its error detector alarms, recorded in
    ``drift_actions``; at most once per ``action_window`` learns, retraining from the
    last ``action_window`` labelled events).

    ``colocate``: run each shard's predict/learn step inside its source partition, so a
    shard is read, learned and written on one worker (multi-worker and multi-process runs;
    same rows, see :mod:`dataflows.colocated`).

    ``per_key``: one model per entity key (per route, carrier, host; :mod:`dataflows.perkey`)
    instead of one per shard, at most ``max_key_models`` keys per shard and model (the keys
    that learned least recently are forgotten). A key's model and features then depend on
    its own events only, so any number of shards, workers or processes writes the same
    predictions and learn log (as long as no key is forgotten and no label expires: both
    are decided per shard). ``balance``: place keys on shards by their event counts in the
    replayed version (:func:`dataflows.replay.balanced_shards`) instead of by CRC-32, so the
    shards, and the processes holding them, get about the same work; with ``per_key`` it
    changes no prediction.
    """
    return replay_job(lake, model, settings=settings, **values).flow()


def recovery_dir(lake: str | os.PathLike[str], run_id: str) -> Path:
    """Where a run keeps its Bytewax recovery state, one folder per run: ``LAKE/_recovery/RUN_ID``.

    Bytewax needs a local folder, so for an object-store lake (``s3://...``) it is under
    ``$RIVERLAKE_STATE_DIR`` instead (see :func:`lake.storage.state_dir`).
    """
    from lake.storage import state_dir

    return state_dir(lake, "_recovery", run_id)


@contextmanager
def run_lock(db_dir: Path, run_id: str) -> Iterator[None]:
    """Hold ``DB_DIR.lock`` (beside the recovery folder, not in it) for the run; the OS drops it when the process
    ends, also by kill -9. A second process of the same run on this machine is refused before any work
    (:class:`~lake.errors.RunLockedError`); across machines, the writers' fencing stops it at commit time."""
    import fcntl

    from lake.errors import RunLockedError

    path = db_dir.parent / f"{db_dir.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(run_id, str(path)) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def run_replay(lake: str | None = None, model: str | Sequence[str] | None = None, *, recovery: bool = True,
               snapshot_s: float = 10.0, settings: RunSettings | None = None, **values: Any) -> str:
    """Run a replay to the end in this process (one worker, on Bytewax's production runner ``cli_main``, as
    ``python -m bytewax.run`` runs it); returns its run id.

    With ``recovery`` (the default), Bytewax snapshots the source position, the
    models and the pending state every ``snapshot_s`` seconds into
    ``LAKE/_recovery/RUN_ID`` (created on first use). After a crash, the same call
    resumes where the last snapshot was taken; rows the crashed run had already
    committed are recognised by their ``seq`` and not written again. Before it
    resumes, every snapshot there is checked to be plain data (Bytewax unpickles
    them; :func:`lake.integrity.check_recovery`), and the learner state in them
    carries an HMAC with the riverlake key: state written by anyone without the
    key is refused, never unpickled.
    """
    from datetime import timedelta

    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main  # Bytewax's production runner, as under python -m bytewax.run

    if snapshot_s <= 0:
        raise ValueError(f"snapshot_s must be > 0, got {snapshot_s!r}")
    job = replay_job(lake, model, settings=settings, **values)
    config = None
    with ExitStack() as held:
        if recovery:
            db_dir = recovery_dir(job.lake, job.run_id)
            # one process per run and recovery folder: a second one would corrupt the snapshots both resume from
            held.enter_context(run_lock(db_dir, job.run_id))
            if not db_dir.exists():
                db_dir.mkdir(parents=True)
                init_db_dir(db_dir, 1)
            integrity.check_recovery(db_dir)
            config = RecoveryConfig(str(db_dir))
        cli_main(job.flow(), workers_per_process=1, epoch_interval=timedelta(seconds=snapshot_s),
                 recovery_config=config)
    return job.run_id


LIVE_SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval in a live run (Python's default is 5 ms)."""


def use_system_allocator() -> None:
    """Build Arrow in this process with the C library's allocator instead of pyarrow's default (mimalloc).

    In a replay the learner's thread (the critical path) spent ~1 s more of system CPU per 1M events with
    mimalloc (1.4-1.7 s against 0.4-0.8 s: page faults on the pages it purges), and the whole run as much
    more wall time. In a live run the step builds small Arrow tables many times a second while delta-rs encodes on
    other threads; mimalloc hands freed pages back to the kernel and touches fresh ones for the next
    build, and the kernel's page clearing showed in the step's own CPU: builds of ~1,000 rows that take
    2 ms took 40-80 ms of (mostly system) CPU at 5,000 msg/s, several times in 10 s. With the system
    allocator none did (and the step's Arrow building took about half the CPU)."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def build_live_flow(lake: str | None = None, model: str | Sequence[str] | None = None, *,
                    settings: RunSettings | None = None, **values: Any) -> Dataflow:
    """The same dataflow fed live from Kafka (see :mod:`dataflows.kafka`), with the same
    :class:`~dataflows.settings.RunSettings` as a replay (``RunSettings.live(...)``, or keyword
    arguments: ``brokers``, ``topic`` and the other :class:`~dataflows.settings.LiveSettings`
    besides the shared ones). Time scales left at ``"auto"`` are chosen from the first messages
    already on the topic (:mod:`dataflows.live_defaults`: never shorter windows than
    :data:`~dataflows.settings.LIVE_AUTO`, which a new topic takes) and printed; a resumed run
    keeps what its first start chose.

    Events and labels come from ``topic`` (one shard per partition); everything the
    dataflow decides goes to the lake, and served predictions also to
    ``predictions_topic`` when given. With ``record`` (the default) the events and
    labels received are appended to the lake's ``events``/``labels``, exactly once per
    Kafka offset, so the live stream can be replayed later. ``kafka_config`` holds extra
    confluent-kafka settings (SASL, TLS, ...) for the consumer and the producer. With
    ``colocate``, each Kafka partition's predict/learn step runs beside its consumer (and
    its lake writer), so on a cluster no batch crosses workers (:mod:`dataflows.colocated`).
    With no ``run_id``, one is derived from the lake, the topic and its partitions and the
    settings (``live-...``), so two topics written into one lake never share positions; an
    explicit ``run_id`` first used with another topic or settings is refused (:mod:`lake.runs`).
    ``trace`` (a file prefix) records when each batch was consumed, recorded, scored and
    sent (:mod:`dataflows.trace`, read by ``python -m dataflows.bench.live``).
    Run it with recovery so a restart resumes at the stored offsets::

        python -m bytewax.run "dataflows.online:build_live_flow(lake='lakehouse', \\
            brokers='localhost:9092', topic='events', predictions_topic='predictions')" \\
            -r lakehouse/_recovery/live -s 10 -b 0
    """
    from dataflows.kafka import KafkaPredictionsSink, KafkaSource

    settings = settings_of("live", settings, _given(lake, model, values)).with_lake_task()
    src, sinks = settings.source, settings.sinks
    lake = sinks.lake
    integrity.key(create=True, lake=lake)  # before any work: made now if new, refused inside the lake
    # The lake's commit threads hold the GIL in turns of the switch interval; each time the
    # prediction path releases it (a poll, a produce) it may wait a whole turn: 5 ms by default.
    sys.setswitchinterval(min(sys.getswitchinterval(), LIVE_SWITCH_INTERVAL_S))
    use_system_allocator()
    source = KafkaSource(src.brokers, src.topic, batch_size=src.batch_size, stop_at_end=src.stop_at_end,
                         lake=os.fspath(lake) if src.record else None, flush_rows=sinks.flush_rows,
                         flush_seconds=sinks.flush_seconds, config=src.kafka_config, trace=src.trace,
                         task=settings.models.task)
    shards = len(source.partitions())
    if src.record and settings.models.task != "binary":  # the labels it records are of this task
        from lake.tasks import Task, record_task

        record_task(lake, Task(settings.models.task, reason="given"))
    # "auto" time scales: from the topic's first messages, or as the run's first start chose them (printed)
    settings, run_id = resolve_live(settings, source)
    config = settings.run_config(run_id)
    sink = DeltaSink(lake, run_id=run_id, partitions=shards, flush_rows=sinks.flush_rows,
                     flush_seconds=sinks.flush_seconds, urgent_tables=URGENT_TABLES,
                     part_names=source.list_parts() if sinks.colocate else None, snapshot_rows=True,
                     task=config.task)
    # one partition per shard, on the worker of the shard's lake sink partition (a snapshot waits for their acks)
    extra = ([KafkaPredictionsSink(src.brokers, src.predictions_topic, config=src.kafka_config, trace=src.trace,
                                   partitions=shards, part_names=[f"predictions-{name}" for name in sink.list_parts()])]
             if src.predictions_topic else [])
    return make_flow(source, sink, config, flow_id="riverlake-live", control_lake=os.fspath(lake),
                     extra_sinks=extra, colocate=sinks.colocate, control_interval_s=sinks.control_interval_s,
                     freeze_at_snapshot=True)


def defaults_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``build_flow`` keyword arguments from ``RIVERLAKE_*`` variables, one per setting
    (:meth:`dataflows.settings.RunSettings.from_env`; a bad value is one line naming the variable)."""
    return RunSettings.from_env(environ).values()


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run dataflows.online:flow` builds the flow on first access, not at import.
    if name == "flow":
        return build_flow(settings=RunSettings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # `python -m dataflows.online` is `riverlake replay`; the command line lives on top
    from flows.cli import replay_main

    run_main(lambda argv: replay_main(argv, prog="python -m dataflows.online"))
