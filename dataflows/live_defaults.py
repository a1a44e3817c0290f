"""A live run's time scales, chosen from the first messages of its topic.

A replay chooses its ``"auto"`` settings from the whole pinned history
(:mod:`dataflows.defaults`). A live run starts where its topic starts (a fresh run
reads each partition from its beginning), so the messages already on the topic
when it starts are the first of its stream: :func:`read_sample` reads up to
:data:`SAMPLE_MESSAGES` of them (a share per partition, for at most
:data:`SAMPLE_SECONDS`), without committing anything, and :func:`choose_live`
chooses from them by the replay's rules, for the windows of one shard (a live run's
shard is a partition: its windows hold that partition's events), with three
differences a stream that goes on needs:

- the windows (``window``, ``stats_window``) are never shorter than the live
  defaults (:data:`~dataflows.settings.LIVE_AUTO`: a window of one minute on a busy
  stream already holds thousands of events, and shorter ones would only write more
  rows); the data lengthens them where they would hold too few events: the median
  over the sample's windows where it spans three windows or more, else the events
  the sample's rate puts into one window;
- the metric windows want :data:`~dataflows.defaults.METRIC_ROWS` labelled events
  however short the sample (the stream goes on; a replay's short history wants fewer),
  counted as events where the sample cannot show every label (below: the labels seen
  would undercount them);
- ``label_ttl`` and ``grace`` come from the label delays only when the sample can
  show them: nearly every event of the first half of the time it covers (all but
  :data:`UNLABELLED_SHARE`) had its label seen by its end. Otherwise a longer delay
  may simply not have come yet, and the live default stays.

With fewer than :data:`MIN_EVENTS` events on the topic (a new topic), every
``"auto"`` setting takes its live default. Each choice is printed with its reason;
a resumed run keeps what its first start chose (:func:`dataflows.online.build_live_flow`
reads it back from the lake's ``runs`` table).

>>> day, hour = 86_400_000_000, 3_600_000_000
>>> h = History.of(event_times_us=[i * hour for i in range(24 * 30)],
...                label_delays_us=[(1 + i % 5) * hour for i in range(24 * 30)])
>>> for c in choose_live(Sample(h, messages=1_440, partitions=1)).values():
...     print(c.line())
window: 30d (about 721 labelled events per window at the first messages' rate (720 over 30 days); 500 wanted)
grace: 5h (the longest label delay seen among the first 1,440 messages)
label_ttl: 5h (99.9th percentile of the 720 label delays seen among the first 1,440 messages)
stats_window: 7d (median 168 events per window among the first 1,440 messages; 50 wanted)
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np

from dataflows.decode import RESERVED_EVENT_FIELDS, decode_event, decode_label, loads
from dataflows.defaults import AUTO, METRIC_ROWS, TTL_QUANTILE, Choice, History, round_up, window_counts
from dataflows.settings import LIVE_AUTO
from lake.durations import ROUND_DURATIONS, format_us, parse_duration_us
from monitoring.windows import STATS_ROWS

SAMPLE_MESSAGES = 20_000
"""At most this many messages of the topic are read at start (a share per partition)."""
SAMPLE_SECONDS = 5.0
"""The longest the reading of the sample takes (a large or slow topic gives what it gave by then)."""
MIN_EVENTS = 200
"""Fewer events among the first messages and every ``"auto"`` setting takes its live default."""
UNLABELLED_SHARE = 0.05
"""More of the events of the sample's first half without a label seen, and the label delays seen are not
taken as the stream's (a longer delay may not have come yet): ``label_ttl`` and ``grace`` keep their defaults.
(Labels that never come look the same in a sample: a stream without labels for some events keeps them too.)"""
TIME_SCALES = ("window", "grace", "label_ttl", "stats_window")


@dataclass(frozen=True)
class Sample:
    """The event times and label delays of the topic's first messages (:class:`~dataflows.defaults.History`),
    and per partition (a live run's shard) the sorted times of its events and of its labelled events."""

    history: History
    messages: int
    partitions: int
    unlabelled_share: float = 0.0  # of the events in the first half of the time the sample covers
    shard_times: tuple[np.ndarray, ...] = ()
    shard_labelled: tuple[np.ndarray, ...] = ()

    @property
    def events(self) -> int:
        return int(self.history.event_times_us.size)

    @property
    def span_us(self) -> int:
        t = self.history.event_times_us
        return int(t[-1] - t[0]) if t.size else 0

    def per_shard(self, labelled: bool) -> list[np.ndarray]:
        """Sorted times per partition (the whole stream as one when the partitions are not known)."""
        parts = self.shard_labelled if labelled else self.shard_times
        return list(parts) or [self.history.labelled_times_us if labelled else self.history.event_times_us]


def sample_of(values: list[Any], partitions: list[int] | None = None) -> Sample:
    """A :class:`Sample` of message values (dicts or JSON bytes, events and labels in any order), each from the
    partition at the same place in ``partitions`` (default: one); what is not an event or a label is left out,
    as the source would dead-letter it."""
    times: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    for seq, raw in enumerate(values):
        try:
            obj = loads(raw) if isinstance(raw, bytes | str) else raw
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind", "event")
        if kind == "event":
            item, _ = decode_event(obj, seq=seq, reserved=(*RESERVED_EVENT_FIELDS, "kind"))
            if item is not None:
                times.setdefault(item[2], (item[3], 0 if partitions is None else partitions[seq]))
        elif kind == "label":
            item, _ = decode_label(obj, seq=seq)
            if item is not None:
                labels.setdefault(item[2], item[4])
    seen = [(t, part, labels[e]) for e, (t, part) in times.items() if e in labels]
    labelled = np.fromiter((t for t, _, _ in seen), np.int64, len(seen))
    delays = np.fromiter((lt - t for t, _, lt in seen), np.int64, len(seen))
    ev = np.fromiter((t for t, _ in times.values()), np.int64, len(times))
    ev_part = np.fromiter((part for _, part in times.values()), np.int64, len(times))
    lab_part = np.fromiter((part for _, part, _ in seen), np.int64, len(seen))
    unlabelled = 0.0
    if ev.size:  # the events of the first half of the time the sample covers (its labels too): each had half of it
        end = max(int(ev.max()), max(labels.values(), default=int(ev.max())))
        half = int(ev.min()) + (end - int(ev.min())) // 2
        early = int((ev <= half).sum())
        unlabelled = 1.0 - int((labelled <= half).sum()) / early
    shards = sorted(set(ev_part.tolist()))
    return Sample(History.of(event_times_us=ev, label_delays_us=delays, labelled_times_us=labelled),
                  messages=len(values), partitions=len(set(partitions)) if partitions else 1,
                  unlabelled_share=unlabelled,
                  shard_times=tuple(np.sort(ev[ev_part == p]) for p in shards),
                  shard_labelled=tuple(np.sort(labelled[lab_part == p]) for p in shards))


def read_sample(brokers: str, topic: str, partitions: list[int], *, config: dict[str, Any] | None = None,
                limit: int = SAMPLE_MESSAGES, seconds: float = SAMPLE_SECONDS) -> Sample:
    """Up to ``limit`` messages from the beginning of ``topic``'s partitions, read by a consumer that commits
    nothing: an equal share of each, what the partitions that end early leave going to the others; whatever has
    come after ``seconds``."""
    import confluent_kafka as ck

    from dataflows.kafka import _consumer

    consumer = _consumer(brokers, {**(config or {}), "group.id": "riverlake-time-scales"})
    values: list[bytes] = []
    parts: list[int] = []
    count: dict[int, int] = dict.fromkeys(partitions, 0)
    reading, paused = set(partitions), set()

    def share() -> int:  # what each partition still reading may take
        ended = sum(count[p] for p in partitions if p not in reading and p not in paused)
        return max(1, (limit - ended) // max(1, len(reading) + len(paused)))

    try:
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + seconds
        while reading and len(values) < limit and time.monotonic() < deadline:
            for msg in consumer.consume(1_000, 0.1):
                p = msg.partition()
                if p not in reading:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == ck.KafkaError._PARTITION_EOF:
                        reading.discard(p)
                        more = [q for q in paused if count[q] < share()]  # (its share goes to the others)
                        if more:
                            consumer.resume([ck.TopicPartition(topic, q) for q in more])
                            paused.difference_update(more)
                            reading.update(more)
                    continue
                if msg.value() is not None:
                    values.append(msg.value())
                    parts.append(p)
                count[p] += 1
                if count[p] >= share():
                    reading.discard(p)
                    paused.add(p)
                    consumer.pause([ck.TopicPartition(topic, p)])
    finally:
        consumer.close()
    sample = sample_of(values, parts)
    return replace(sample, partitions=len(partitions))


def _span_text(us: int) -> str:
    for unit, size in (("days", 86_400_000_000), ("hours", 3_600_000_000), ("minutes", 60_000_000)):
        if us >= 2 * size:
            return f"{us / size:,.0f} {unit}"
    return f"{us / 1e6:,.1f} s"


def _median_per_shard_window(parts: list[np.ndarray], us: int) -> float:
    """Median count of rows over the non-empty tumbling windows of ``us`` of every shard."""
    counts = [window_counts(times, us) for times in parts if times.size]
    return float(np.median(np.concatenate(counts))) if counts else 0.0


def _window(name: str, parts: list[np.ndarray], *, span: int, floor_us: int, want: int, what: str,
            among: str) -> Choice:
    """The shortest round window from ``floor_us`` on whose windows of a shard hold ``want`` rows: by the median
    over the shards' windows while the sample spans three of them, then by the sample's rate on a shard (the
    median over the shards that have rows)."""
    candidates = [us for us in map(parse_duration_us, ROUND_DURATIONS) if us >= floor_us]
    shard = "" if len(parts) < 2 else " of a shard"
    for us in candidates:
        if 3 * us > span:
            break
        median = _median_per_shard_window(parts, us)
        if median >= want:
            return Choice(name, us, f"median {median:,.0f} {what} per window{shard} among {among}; {want:,} wanted")
    sizes = [t.size for t in parts if t.size]
    rate = float(np.median(sizes)) / max(span, 1) if sizes else 0.0
    for us in candidates:
        if rate * us >= want or us == candidates[-1]:
            return Choice(name, us, f"about {rate * us:,.0f} {what} per window{shard} at the first messages' rate "
                                    f"({sum(sizes):,} over {_span_text(span)}); {want:,} wanted")
    raise AssertionError("no candidate window")  # (the floor is one of ROUND_DURATIONS)


def choose_live(sample: Sample | None, *, label_ttl: Any = AUTO, window: Any = AUTO, grace: Any = AUTO,
                stats_window: Any = AUTO) -> dict[str, Choice]:
    """The ``"auto"`` time scales of a live run (``None`` sample: nothing could be read), each with its reason;
    the given ones are left out (a live run checks them against no history)."""
    auto = {name for name, value in (("window", window), ("grace", grace), ("label_ttl", label_ttl),
                                     ("stats_window", stats_window)) if isinstance(value, str) and value == AUTO}
    if sample is None or sample.events < MIN_EVENTS:
        n = 0 if sample is None else sample.events
        why = f"{n:,} events on the topic at start, {MIN_EVENTS:,} wanted to choose from: the live default"
        return {name: Choice(name, parse_duration_us(LIVE_AUTO[name]), why) for name in TIME_SCALES if name in auto}
    h, out = sample.history, {}
    among = f"the first {sample.messages:,} messages"
    n_labels = int(h.label_delays_us.size)
    delays = np.maximum(h.label_delays_us, 0)
    # label delays are the stream's when nearly every event that had half the sample's time got its label
    shown = n_labels >= MIN_EVENTS // 2 and sample.unlabelled_share <= UNLABELLED_SHARE
    q = float(np.quantile(delays, TTL_QUANTILE, method="higher")) if n_labels else 0.0
    unshown = (f"{sample.unlabelled_share:.0%} of the events in the first half of {among} had no label by its "
               f"end ({n_labels:,} labels seen): a longer delay may not have come yet; the live default")
    if "window" in auto:  # (labelled events where the sample shows them all; else the events they belong to)
        what = "labelled events" if shown else "events"
        out["window"] = _window("window", sample.per_shard(shown), span=sample.span_us,
                                floor_us=parse_duration_us(LIVE_AUTO["window"]), want=METRIC_ROWS, what=what,
                                among=among)
    if "grace" in auto:
        out["grace"] = (Choice("grace", round_up(float(delays.max())), f"the longest label delay seen among {among}")
                        if shown else Choice("grace", parse_duration_us(LIVE_AUTO["grace"]), unshown))
    if "label_ttl" in auto:
        out["label_ttl"] = (Choice("label_ttl", round_up(q), f"{TTL_QUANTILE * 100:g}th percentile of the "
                                   f"{n_labels:,} label delays seen among {among}")
                            if shown else Choice("label_ttl", parse_duration_us(LIVE_AUTO["label_ttl"]), unshown))
    if "stats_window" in auto:
        out["stats_window"] = _window("stats_window", sample.per_shard(False), span=sample.span_us,
                                      floor_us=parse_duration_us(LIVE_AUTO["stats_window"]), want=STATS_ROWS,
                                      what="events", among=among)
    return out


def resolved_values(chosen: dict[str, Choice]) -> dict[str, str]:
    """The chosen time scales as settings values (``"2h"``)."""
    return {name: format_us(c.us) for name, c in chosen.items() if c.us is not None}


def recorded_values(settings_json: dict[str, Any], names: set[str] | list[str]) -> dict[str, str]:
    """The time scales a run's first start chose, from its ``runs`` row's settings: durations only (a value
    that does not parse is refused in one line; nothing read from the lake is taken as more than a duration)."""
    out = {}
    for name in names:
        value = settings_json.get(name)
        if isinstance(value, str) and value != AUTO:  # (anything else stays "auto": the run id's check names it)
            out[name] = format_us(parse_duration_us(value))
    return out


def resolve_live(settings: Any, source: Any, *, file: TextIO | None = None) -> tuple[Any, str]:
    """``settings`` (:class:`~dataflows.settings.RunSettings`) with their ``"auto"`` time scales chosen, and the
    run id, recorded in the lake's ``runs`` table: on a first start from the topic's first messages
    (:func:`read_sample`, :func:`choose_live`), on a resumed one as that start chose them. The run id comes from
    the settings as given (``"auto"`` as such), so a resumed run keeps its id whatever its topic holds by then.
    Prints where each time scale came from (stderr)."""
    from lake.errors import RunIdentityError
    from lake.runs import RunIdentity, record_run, recorded_run

    out = sys.stderr if file is None else file
    lake, src, md, mon = os.fspath(settings.sinks.lake), settings.source, settings.models, settings.monitoring
    given = {"window": md.window, "grace": md.grace, "label_ttl": md.label_ttl, "stats_window": mon.stats_window}
    auto = [name for name in TIME_SCALES if isinstance(given[name], str) and given[name] == AUTO]
    base = settings.resolved(**({"action_window": LIVE_AUTO["action_window"]} if mon.action_window == AUTO else {}))

    def identity(s: Any) -> RunIdentity:
        return RunIdentity(kind="live", lake=lake, topic=src.topic, partitions=tuple(source.partitions()),
                           batch_size=src.batch_size, settings=s.identity())

    run_id = identity(base).run_id() if settings.sinks.run_id is None else settings.sinks.run_id
    for attempt in (0, 1):
        recorded = recorded_run(lake, run_id) if auto else None
        if recorded is not None:  # a resumed run (or another process of it): what its first start chose
            values = recorded_values(json.loads(recorded["settings"]), auto)
            lines = [f"live run {run_id} on {src.topic}: time scales as its first start chose them",
                     *(f"  {name}: {value}" for name, value in values.items())]
        else:
            sample = (read_sample(source.brokers, src.topic, source.partitions(), config=source.config)
                      if auto else None)
            chosen = choose_live(sample, **given)
            values = resolved_values(chosen)
            read = ("" if sample is None else f" ({sample.messages:,} messages read from the start of "
                    f"{sample.partitions} partition(s): {sample.events:,} events)")
            lines = [f"live run {run_id} on {src.topic}{read}", *(f"  {c.line()}" for c in chosen.values())]
        resolved = base.resolved(**values)
        try:
            record_run(lake, run_id, identity(resolved))  # another identity under this id is refused here
        except RunIdentityError:
            if attempt or recorded is not None or not auto:
                raise
            continue  # another process of this run recorded its own choice first: take that one
        print("\n".join(lines), file=out, flush=True)
        return resolved, run_id
    raise AssertionError("unreachable")
