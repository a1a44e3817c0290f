"""Feed a Kafka topic from a scenario at a given rate (demos and load tests).

    python -m dataflows.produce --brokers HOST:PORT --topic events --scenario flights [--limit N] [--rate 1000]

Events and their labels go to the one topic in time order (a label at its
``label_time``), as JSON with ``"kind"``, keyed by the entity key so both land in
the partition of their shard. ``--rate`` paces the messages per second (0: as fast
as possible).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl


def messages(scenario: str, **params: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, message)`` pairs of a scenario in arrival order."""
    from lake.scenarios import SCENARIOS

    frames = SCENARIOS[scenario](**params)
    events = frames.events.with_row_index("_i")
    labels = frames.labels.join(events.select("event_id", "key", "event_time", "_i"), on="event_id")
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


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def produce(brokers: str, topic: str, scenario: str, *, rate: float = 0.0, config: dict[str, Any] | None = None,
            **params: Any) -> int:
    """Send the scenario's events and labels to ``topic``; returns messages sent."""
    import confluent_kafka as ck

    producer = ck.Producer({"bootstrap.servers": brokers, "linger.ms": 20, **(config or {})})
    started = time.monotonic()
    n = 0
    for key, msg in messages(scenario, **params):
        producer.produce(topic, key=str(key).encode(), value=json.dumps(msg).encode())
        n += 1
        if n % 1_000 == 0:
            producer.poll(0)
        if rate > 0:
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.produce", description=__doc__.split("\n")[0])
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
    raise SystemExit(main())
