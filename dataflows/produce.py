"""Feed a Kafka topic from a scenario at a given rate (demos and load tests).

    python -m dataflows.produce --brokers HOST:PORT --topic events --scenario flights [--limit N] [--rate 1000]

Events and their labels go to the one topic in time order (events by
``event_time``, a label at its ``label_time``, events first at equal times), as
JSON with ``"kind"``, keyed by the entity key. The partition is set explicitly to
:func:`dataflows.replay.shard_of` of the key (CRC-32, also librdkafka's default for
keyed messages), so an event and its label share a partition and a replay of the
recorded lake with ``shards`` = the topic's partitions groups keys as the live run
did. ``--rate`` paces the messages per second (0: as fast as possible).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl

from dataflows.replay import shard_of
from lake.entry import ArgumentParser, run_main


def frame_messages(events: pl.DataFrame, labels: pl.DataFrame) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, message)`` pairs of ``events``/``labels`` frames (lake layout) in arrival order.

    ``offset`` (a lake column, not a field) is left out of the messages.
    """
    events = events.drop("offset", strict=False).sort("event_time", maintain_order=True).with_row_index("_i")
    labels = labels.join(events.select("event_id", "key", "_i"), on="event_id")
    plan = pl.concat([
        events.select(pl.col("event_time").alias("t"), pl.lit(0).alias("kind"), "_i"),
        labels.select(pl.col("label_time").alias("t"), pl.lit(1).alias("kind"), "_i"),
    ]).sort(["t", "kind", "_i"])
    ev_rows = events.drop("_i").to_dicts()
    lb_by_event = {r["_i"]: r for r in labels.select("_i", "event_id", "label", "label_time", "key").to_dicts()}
    for kind, i in plan.select("kind", "_i").iter_rows():
        if kind == 0:
            row = dict(ev_rows[i])
            row["event_time"] = _iso(row["event_time"])
            yield row["key"], {"kind": "event", **row}
        else:
            lb = lb_by_event[i]
            yield lb["key"], {"kind": "label", "event_id": lb["event_id"], "label": lb["label"],
                              "label_time": _iso(lb["label_time"])}


def messages(scenario: str, **params: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, message)`` pairs of a scenario in arrival order."""
    from lake.scenarios import SCENARIOS

    frames = SCENARIOS[scenario](**params)
    return frame_messages(frames.events, frames.labels)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def send(brokers: str, topic: str, pairs: Iterable[tuple[str, dict[str, Any]]], *, rate: float = 0.0,
         config: dict[str, Any] | None = None) -> int:
    """Send ``(key, message)`` pairs to ``topic`` in order, paced at ``rate`` per second; returns messages sent."""
    import confluent_kafka as ck

    if rate < 0:
        raise ValueError(f"rate must be >= 0 messages per second, got {rate!r}")
    producer = ck.Producer({"bootstrap.servers": brokers, "linger.ms": 20, **(config or {})})
    meta = producer.list_topics(topic, timeout=10).topics.get(topic)
    n_partitions = len(meta.partitions) if meta is not None and meta.error is None else 0
    started = time.monotonic()
    n = 0
    for key, msg in pairs:
        key = str(key)
        extra = {"partition": shard_of(key, n_partitions)} if n_partitions else {}
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=json.dumps(msg).encode(), **extra)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        n += 1
        if n % 1_000 == 0:
            producer.poll(0)
        if rate > 0:
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} message(s) to {topic!r} not delivered within 60 s")
    return n


def produce(brokers: str, topic: str, scenario: str, *, rate: float = 0.0, config: dict[str, Any] | None = None,
            **params: Any) -> int:
    """Send the scenario's events and labels to ``topic``; returns messages sent."""
    return send(brokers, topic, messages(scenario, **params), rate=rate, config=config)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m dataflows.produce", description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="events")
    parser.add_argument("--scenario", default="flights", choices=["flights", "agrawal-drift", "urls"])
    parser.add_argument("--limit", type=int, default=None, help="flights: first N events")
    parser.add_argument("--n", type=int, default=None, help="agrawal-drift, urls: number of events")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)")
    args = parser.parse_args(argv)
    params = {k: v for k, v in (("limit", args.limit), ("n", args.n)) if v is not None}
    n = produce(args.brokers, args.topic, args.scenario, rate=args.rate, **params)
    print(f"sent {n:,} messages to {args.topic}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
