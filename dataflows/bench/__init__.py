"""Benchmarks and measurements of the dataflow: run as commands, imported by nothing in the library.

| command | measures |
|---|---|
| ``python -m dataflows.bench`` (:mod:`.throughput`) | end to end against the bare River loop (``make bench``) |
| ``python -m dataflows.bench.soak`` | memory and throughput over millions of events, recovery on |
| ``python -m dataflows.bench.scaling`` | the same replay on 1, 2, 4, 8 processes or workers |
| ``python -m dataflows.bench.live`` | produce-to-prediction latency of the live Kafka path |
| ``python -m dataflows.bench.monitoring_latency`` | window close to its statistics readable in the lake |
| ``python -m dataflows.bench.monitoring_cost`` | per-item cost of the monitoring parts |
| ``python -m dataflows.bench.drift_quality`` | detection delay and false alarms of drift detectors on a replay |

They sit above the dataflow (they import it and everything below); figures go to BENCHMARKS.md.
"""
