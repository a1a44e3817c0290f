"""The transport alone: a relay in place of the live flow, for ``bench.live --relay`` (a script, not a test).

    python -m dataflows.bench.relay BROKERS [--topic events] [--predictions-topic predictions]

It consumes every partition of the events topic with the live source's consumer settings (one consumer per
partition, as the source has, polled in turn without waiting, with a 1 ms pause when none had anything, as
Bytewax polls a source) and writes each event's id to the predictions topic with the predictions producer's
settings (``linger.ms`` :data:`dataflows.kafka.LINGER_MS`), and does nothing else: no decoding beyond the
event id, no model, no lake. ``python -m dataflows.bench.live --relay`` measures produce → arrival through it:
the floor that the Kafka cluster's two hops (producer linger, fetch waits) put under the flow's latency.
"""

from __future__ import annotations

import argparse
import json
import time


def relay(brokers: str, *, topic: str = "events", predictions_topic: str = "predictions") -> None:
    """Run until interrupted (SIGINT)."""
    import confluent_kafka as ck

    from dataflows.kafka import LINGER_MS, _consumer

    meta = ck.Producer({"bootstrap.servers": brokers}).list_topics(topic, timeout=10).topics[topic]
    consumers = []
    for p in sorted(meta.partitions):
        c = _consumer(brokers, None)
        c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)])
        consumers.append(c)
    producer = ck.Producer({"bootstrap.servers": brokers, "linger.ms": LINGER_MS})
    try:
        while True:
            got = 0
            for c in consumers:
                for msg in c.consume(1_000, 0):
                    if msg.error() is not None:
                        continue
                    got += 1
                    try:
                        obj = json.loads(msg.value())
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and obj.get("kind", "event") == "event" and "event_id" in obj:
                        producer.produce(predictions_topic, key=msg.key(),
                                         value=json.dumps({"event_id": obj["event_id"]}).encode())
                producer.poll(0)
            if not got:
                time.sleep(0.001)
    except KeyboardInterrupt:
        pass
    finally:
        producer.flush(10)
        for c in consumers:
            c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataflows.bench.relay", description=__doc__.split("\n")[0])
    parser.add_argument("brokers")
    parser.add_argument("--topic", default="events")
    parser.add_argument("--predictions-topic", default="predictions")
    args = parser.parse_args(argv)
    relay(args.brokers, topic=args.topic, predictions_topic=args.predictions_topic)
    return 0


if __name__ == "__main__":
    from lake.entry import run_main

    run_main(main)
