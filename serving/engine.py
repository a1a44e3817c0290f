"""The serving engine: decode a request, log it, predict or learn, answer, and feed the lake.

Size: one request's path (decode, log, step, answer, record) and the restart that replays it read
top to bottom; request bookkeeping and lake recording are in serving/requests.py and serving/record.py.

The engine runs the dataflow's own predict/learn step (:class:`dataflows.learner.ShardLearner`)
in the server process, one request at a time, so the model a request sees has learned
every label accepted before it (learning *in process*; see the README's "Serving" section
for why, and what it costs). For each request, in this order:

1. decode and check it with the live Kafka source's rules (:func:`dataflows.decode.decode_event`,
   :class:`dataflows.kafka.PayloadTypes`, :mod:`dataflows.validate`); what fails is
   dead-lettered and answered with a 4xx naming the field and the reason;
2. an ``event_id`` answered before gets its first answer again (nothing new is logged);
3. give every new item the next position ``seq`` and append the request to the
   server's log (:mod:`serving.log`): from here on it cannot be lost;
4. read the request's keys' feature state from the feature store (:mod:`serving.store`),
   run the step, write the keys' new state back at the batch's position;
5. hand the step's rows (``predictions``, ``learn_log``, ``metrics``, ``checkpoints``,
   ``dead_letters``, ...) and the events and labels to the lake writers, which commit
   in the background every ``flush_seconds`` or ``flush_rows`` with Delta app
   transactions ``(server_id/table/..., seq)``.

At start the log is replayed through a fresh learner: the same rows come out, the
writers drop those the lake already holds, the store skips updates at positions it
already has. So after a ``kill -9`` every answered request is in the lake exactly once,
and every stored score is what was served. So that a restart does not cost the whole
history, every ``snapshot_every`` positions the engine takes a snapshot of its state
(:mod:`serving.snapshot`) and starts a new log segment, without waiting for the lake; the
snapshot is written once the lake holds its rows, and the log segments it covers are then
deleted. A restart starts from the last snapshot written and replays the records after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataflows import rows
from dataflows.decode import decode_event, decode_label, loads
from dataflows.gc_tuning import freeze_survivors
from dataflows.items import EVENT, Batch, Output, raw_json
from dataflows.kafka import PayloadTypes
from dataflows.learner import CHAMPION, ShardLearner
from dataflows.replay import Pin, ReplayPlan, pin_versions
from dataflows.sinks import URGENT_TABLES, DeltaSinkPartition
from dataflows.validate import check_event, check_label, validate_batch
from lake.table import exists, open_table
from lake.tasks import Task, record_task
from serving.config import ServeConfig
from serving.log import ServingLog, last_position
from serving.record import Recorder, serving_offset  # noqa: F401  (serving_offset: re-exported)
from serving.requests import Answers, Job, Problem, field_of, iso_time, now_us  # noqa: F401  (re-exported)
from serving.snapshot import Snapshots
from serving.store import FeatureStore, MemoryStore, open_store

log = logging.getLogger(__name__)


class ServingError(RuntimeError):
    """The server cannot start as configured (a second server with its id, a changed configuration)."""


class Engine:
    """One server's learner, feature store, log and lake writers. Not thread-safe: call from one thread."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.server_id = config.server_id
        self.source = f"http:{config.server_id}"
        os.makedirs(config.state_path, exist_ok=True)
        self._lock_fd = self._lock(config.state_path)
        try:
            self._check_identity()
            if config.task != "binary":  # recorded before the first labels the server writes (binary: by their type)
                record_task(config.lake, Task(config.task, reason="given"))
            self.log = ServingLog(os.path.join(config.state_path, "log.jsonl"), fsync=config.fsync)
            self.snapshots = Snapshots(config.state_path, server_id=self.server_id, drop_segments=self.log.drop_below)
            snap = self.snapshots.load(limit=config.remember, journal=config.snapshot_every > 0)
            self.learner = ShardLearner(config.run_config(), shard=0) if snap is None else snap["learner"]
            self.learner.featurizer_in_checkpoints = False  # its per-key state lives in the feature store
            self.champion = self.learner.champion
            self.store: FeatureStore = open_store(config.store, namespace=config.server_id)
            if snap is not None:
                self.types = snap["types"]
            else:
                schema = (open_table(config.lake, "events").schema().to_arrow()
                          if exists(config.lake, "events") else None)
                self.types = PayloadTypes(pa.schema(schema) if schema is not None else None)
            self.sink = DeltaSinkPartition(config.lake, run_id=config.server_id, flush_rows=config.flush_rows,
                                           flush_seconds=config.flush_seconds, urgent_tables=URGENT_TABLES,
                                           task=config.task, background=True)
            self.recorder = Recorder(config, self.types)
            self.answers: Answers = (Answers(config.remember, journal=config.snapshot_every > 0) if snap is None
                                     else snap["answers"])
            self._versions: dict[str, str] = {}
            self.next_seq = 0 if snap is None else snap["next_seq"]
            self.snapshot_seq = self.next_seq  # the position the last snapshot written covers up to (exclusive)
            self._snapshot_from = self.next_seq  # ... and the last one taken
            self.failed: str | None = None
            self.steps = 0  # steps run for requests, and the requests they served
            self.requests = 0
            self._outputs: list[Output] = []
            self.started_at = time.time()
            self.events_served = 0 if snap is None else snap["events_served"]
            self.last_label_accepted_us: int | None = None  # wall clock
            self.last_learned_us: int | None = None
            self.replayed = self._replay(None if snap is None else snap["store"])
            self.log.drop_below(self.snapshot_seq)  # (segments a crash left after the snapshot that covers them)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- start --------------------------------------------------------------------
    @staticmethod
    def _lock(path: str) -> int:
        fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ServingError(f"another server holds {path} (server ids must be unique)") from None
        return fd

    def _check_identity(self) -> None:
        path = os.path.join(self.config.state_path, "config.json")
        ident = self.config.identity()
        if os.path.exists(path):
            with open(path) as f:
                before = json.load(f)
            if before != ident:
                changed = sorted(k for k in ident if before.get(k) != ident[k])
                raise ServingError(f"server {self.server_id!r} was started with other settings ({', '.join(changed)}:"
                                   f" {[before.get(k) for k in changed]} now {[ident[k] for k in changed]}); "
                                   "its log replays only under the same ones: use another --server-id")
        else:
            with open(path, "w") as f:
                json.dump(ident, f)

    def _replay(self, snapped: tuple[dict, tuple[int, int], int | None] | None) -> int:
        """Run the log (after the snapshot, if any) through the learner; returns the requests replayed."""
        scratch = MemoryStore()  # the state as of each logged request (the real store may be ahead)
        if snapped is not None and snapped[2] is not None:
            states, totals, position = snapped
            scratch.apply(states, totals, position=position)
            self.store.apply(states, totals, position=position)  # (skipped by a store already there)
        covered = self.next_seq  # records below this position are in the snapshot
        n = 0
        for record in self.log.records():
            if covered and ("warm" in record or last_position(record) < covered):
                continue  # (a crash came between writing the snapshot and deleting the segments it covers)
            if "warm" in record:
                self._warm_up(record["warm"], scratch)
                n += 1
                continue
            items = [tuple(it) for it in record["items"]]
            for it in items:
                if it[1] == EVENT:
                    self.types.normalize(it[5])  # learn the kinds of new fields; the logged payload is used as is
            dead = [tuple(d) for d in record["dead"]]
            self._step(items, dead, read=scratch, also=self.store)
            n += 1
        if n == 0 and covered == 0 and self.config.warm_start and exists(self.config.lake, "events"):
            pin = pin_versions(self.config.lake)
            warm = {"events": pin.events, "labels": pin.labels}
            self.log.append({"warm": warm})  # the first record: a restart warms up from the same versions
            self._warm_up(warm, scratch)
            n += 1
        if n:
            log.info("%s: replayed %d logged requests up to position %d", self.server_id, n, self.next_seq - 1)
        ahead = self.store.position
        if ahead is not None and ahead >= self.next_seq:
            raise ServingError(f"feature store {self.store.url!r} holds state of {self.server_id!r} up to position "
                               f"{ahead}, its log only to {self.next_seq - 1}: the log was lost or belongs to "
                               "another server; clear the store's namespace or use another --server-id")
        return n

    def _warm_up(self, pin: dict[str, int | None], scratch: FeatureStore, batch_size: int = 5_000) -> None:
        """Learn the lake's history (``events`` + ``labels`` at the pinned versions) in the dataflow's replay
        order, as a replay run would: its rows go to the lake under this server's id; its events and labels
        are not recorded again."""
        plan = ReplayPlan(self.config.lake, pin=Pin(pin["events"], pin["labels"]))
        started = time.perf_counter()
        for start in range(0, len(plan), batch_size):
            batch = validate_batch(plan.batch(start, start + batch_size), task=self.config.task)
            self._step(batch.items, batch.dead, read=scratch, also=self.store, record=False)
        log.info("%s: warmed up on %d events and %d labels in %.1f s", self.server_id, plan.n_events,
                 plan.n_labels, time.perf_counter() - started)

    # -- the step ---------------------------------------------------------------------
    def _step(self, items: list[tuple], dead: list[tuple], *, read: FeatureStore,
              also: FeatureStore | None = None, record: bool = True) -> Output:
        learner = self.learner
        featurizer = learner.featurizer
        pending = learner.pending
        keys: list[str] = []
        for it in items:
            if it[1] == EVENT:
                keys.append(it[4])
            else:
                entry = pending.get(it[2])
                if entry is not None:
                    keys.append(entry[2])
        keys = list(dict.fromkeys(keys))
        if keys:
            states, totals = read.read(keys)
            for k in keys:
                featurizer.set_key_state(k, states.get(k))
            featurizer.set_label_totals(*totals)
        out = learner.process(Batch(0, items, source=self.source, dead=dead))
        top = max(items[-1][0] if items else -1, dead[-1][0] if dead else -1)
        self.next_seq = max(self.next_seq, top + 1)
        if keys:
            changed = {k: featurizer.key_state(k) for k in keys}
            totals = featurizer.label_totals
            read.apply(changed, totals, position=top)
            if also is not None:
                also.apply(changed, totals, position=top)
            featurizer.forget_keys(keys)  # the store holds them
        self._outputs.append(out)  # handed to the lake writer on the next tick (one call for many requests)
        if len(self._outputs) >= 256:  # (a replay or a burst between ticks)
            outputs, self._outputs = self._outputs, []
            self.sink.write_batch(outputs)
        # Labels go to the lake once learned (the refused ones are dead letters, with the reason).
        learned = out.tables.get("learn_log")
        ids = set() if learned is None else set(rows.pylist(learned, "event_id"))
        if record:
            self.recorder.add([it for it in items if it[1] == EVENT or it[2] in ids])
        self._remember(out)
        return out

    def _remember(self, out: Output) -> None:
        preds = out.tables.get("predictions")
        if preds is None:
            return
        if isinstance(preds, rows.StepRows):  # (a binary step's rows, read without building Arrow)
            champ = [role == CHAMPION for role in preds.pylist("role")]
            columns = [[v for v, c in zip(preds.pylist(name), champ, strict=True) if c]
                       for name in ("event_id", "model_version", "score", "prediction")]
            columns.append([None] * len(columns[0]))
        else:
            if len(self.learner.slots) > 1:
                preds = preds.filter(pc.equal(preds.column("role"), CHAMPION))
            columns = [preds.column(c).to_pylist() for c in ("event_id", "model_version", "score", "prediction")]
            columns.append(preds.column("probabilities").to_pylist() if "probabilities" in preds.column_names
                           else [None] * preds.num_rows)  # multiclass: every class's probability
        answers, versions = self.answers, self._versions
        model = self.champion
        for eid, version, score, prediction, proba in zip(*columns, strict=True):
            answers.add(eid, (model, versions.setdefault(version, version), score, prediction,
                              None if proba is None else dict(proba)))
        self.events_served += len(columns[0])

    def _log_and_step(self, items: list[tuple], dead: list[tuple]) -> Output:
        seq = self.next_seq
        items = [(seq + i, *it[1:]) for i, it in enumerate(items)]
        dead = [(seq + len(items) + i, *d[1:]) for i, d in enumerate(dead)]
        self.log.append({"items": items, "dead": dead})
        return self._step(items, dead, read=self.store)

    def known(self, event_ids: list[str]) -> list[str]:
        """Those of ``event_ids`` this server predicted (while their answers or their features are kept)."""
        answers, pending, labelled = self.answers, self.learner.pending, self.learner.labelled
        return [e for e in event_ids if e in answers or e in pending or e in labelled]

    def _answer(self, event_id: str) -> dict[str, Any] | None:
        a = self.answers.get(event_id)
        if a is None:
            return None
        model, version, score, prediction, *proba = a  # (answers of a snapshot before tasks: four fields)
        answer = {"event_id": event_id, "score": score, "prediction": prediction, "model": model,
                  "model_version": version}
        if proba and proba[0] is not None:
            answer["probabilities"] = proba[0]
        return answer

    # -- requests ---------------------------------------------------------------------
    def predict(self, body: bytes) -> tuple[int, Any]:
        """``(HTTP status, JSON answer)`` for a ``/predict`` body: one event or a list."""
        return self.handle([("predict", body)])[0]

    def labels(self, body: bytes) -> tuple[int, Any]:
        """``(HTTP status, JSON answer)`` for a ``/labels`` body: one label or a list."""
        return self.handle([("labels", body)])[0]

    def handle(self, requests: list[tuple[str, bytes]]) -> list[tuple[int, Any]]:
        """Answers to ``("predict" | "labels", body)`` requests, in arrival order, run as one step (one log
        record, one learner batch): the requests that arrived while the previous ones were served share the
        step's fixed costs, and each sees the model as the requests before it left it."""
        refused = self._refuse()
        if refused is not None:
            return [refused] * len(requests)
        self.steps += 1
        self.requests += len(requests)
        jobs: list[Job] = []
        items: list[tuple] = []
        dead: list[tuple] = []
        fresh: set[str] = set()  # event ids predicted in this step
        received = now_us()
        for kind, body in requests:
            job = self._prepare(kind, body, fresh, received)
            job.first = len(items)
            items.extend(job.items)
            dead.extend(job.dead)
            jobs.append(job)
        if not items and not dead:
            return [self._finish(job, None, 0) for job in jobs]
        base = self.next_seq
        if any(job.kind == "labels" and job.items for job in jobs):
            self.last_label_accepted_us = received
        out = self._log_and_step(items, dead)
        if any(job.kind == "labels" and job.items for job in jobs):
            self.last_learned_us = now_us()
        return [self._finish(job, out, base) for job in jobs]

    def _prepare(self, kind: str, body: bytes, fresh: set[str], received_us: int) -> Job:
        """Parse and check one request: its items for the step, or its dead letters and final answer."""
        job = Job(kind)
        what = "event" if kind == "predict" else "label"
        try:
            obj = loads(body)  # (msgspec's parser; json's reading and messages for what it refuses)
        except (ValueError, UnicodeDecodeError) as ex:
            return job.refuse(400, f"undecodable JSON: {ex}", self.source, body.decode("utf-8", "replace"))
        job.single = isinstance(obj, dict)
        objs = [obj] if job.single else obj
        if not isinstance(objs, list) or not objs:
            return job.refuse(400, f"body must be a JSON object (one {what}) or a non-empty list of them",
                              self.source, obj)
        problems: list[Problem] = []
        for i, o in enumerate(objs):
            item, reason, event_id = self._event_item(o) if kind == "predict" else self._label_item(o, received_us)
            if reason is not None:
                problems.append(Problem(i, event_id, field_of(reason), reason))
                job.dead.append((0, "validate", reason, self.source, event_id, raw_json(o)))
                continue
            if kind == "predict":
                job.order.append(item[2])
                if item[2] in fresh or item[2] in self.answers:
                    continue  # answered before (or earlier in this step): the first answer stands
                fresh.add(item[2])
            job.items.append(item)
        if problems:
            job.items = []  # a request with a wrong input is refused whole; its wrong inputs are dead letters
            job.answer = (422, {"detail": [p.as_dict() for p in problems]})
        return job

    def _finish(self, job: Job, out: Output | None, base: int) -> tuple[int, Any]:
        if job.answer is not None:
            return job.answer
        if job.kind == "predict":
            answers = []
            for i, eid in enumerate(job.order):
                a = self._answer(eid)
                if a is None:  # the step refused it (e.g. a duplicate older than the answers kept)
                    return 409, {"detail": [{"index": i, "event_id": eid, "field": "event_id",
                                             "reason": "event_id was predicted before; its answer is no longer kept"}]}
                answers.append(a)
            return 200, (answers[0] if job.single else answers)
        learned: set[int] = set()
        refused: dict[int, str] = {}
        if out is not None and "learn_log" in out.tables:
            learned = set(rows.pylist(out.tables["learn_log"], "seq"))
        if out is not None and "dead_letters" in out.tables:
            d = out.tables["dead_letters"].select(["seq", "reason"]).to_pydict()
            refused = dict(zip(d["seq"], d["reason"], strict=True))
        results = []
        for i, it in enumerate(job.items):
            seq = base + job.first + i
            r = {"event_id": it[2], "learned": seq in learned}
            if seq in refused:
                r["reason"] = refused[seq]
            results.append(r)
        if job.single and not results[0]["learned"]:
            reason = results[0].get("reason", "not learned")
            status = 404 if "unknown event" in reason else 409
            return status, {"detail": [{"index": 0, "event_id": job.items[0][2], "field": "event_id",
                                        "reason": reason}]}
        return 200, (results[0] if job.single else results)

    def _event_item(self, obj: Any) -> tuple[tuple | None, str | None, str | None]:
        """``(item, None, event_id)`` or ``(None, reason, event_id)`` for one event object."""
        if not isinstance(obj, dict):
            return None, f"an event must be a JSON object, got {type(obj).__name__}", None
        event_id = obj.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        unknown = set(obj) - {"event_id", "event_time", "key", "payload"}
        if unknown:
            return None, f"unknown field(s) {sorted(unknown)}: payload values go under 'payload'", event_id
        payload = obj.get("payload", {})
        if not isinstance(payload, dict):
            return None, f"payload must be a JSON object, got {type(payload).__name__}", event_id
        clash = [k for k in payload if k in ("event_id", "event_time", "key")]
        if clash:
            return None, f"field {clash[0]!r} is reserved and cannot be a payload field", event_id
        flat = {**payload, "event_id": obj.get("event_id"), "key": obj.get("key"),
                "event_time": obj.get("event_time", now_us() / 1e6)}
        item, bad = decode_event(flat, seq=0)
        if item is None:
            return None, bad[2], event_id
        normalized, reason = self.types.normalize(item[5])
        if normalized is None:
            return None, reason, item[2]
        item = (*item[:5], normalized)
        reason = check_event(item)
        return (None, reason, item[2]) if reason is not None else (item, None, item[2])

    def _label_item(self, obj: Any, received_us: int) -> tuple[tuple | None, str | None, str | None]:
        if not isinstance(obj, dict):
            return None, f"a label must be a JSON object, got {type(obj).__name__}", None
        event_id = obj.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        unknown = set(obj) - {"event_id", "label", "label_time"}
        if unknown:
            return None, f"unknown field(s) {sorted(unknown)}", event_id
        if obj.get("label_time") is None:
            obj = {**obj, "label_time": received_us / 1e6}
        item, bad = decode_label(obj, seq=0)
        if item is None:
            return None, bad[2], event_id
        if isinstance(item[3], bool) and self.config.task == "binary":
            item = (*item[:3], int(item[3]), *item[4:])
        reason = check_label(item, self.config.task)
        return (None, reason, item[2]) if reason is not None else (item, None, item[2])

    # -- upkeep and status -----------------------------------------------------------------
    def tick(self) -> None:
        """Commit what is due to the lake, and take snapshots (called every few hundred ms between requests)."""
        with self._failing():
            outputs, self._outputs = self._outputs, []
            self.sink.write_batch(outputs)
            self.recorder.maybe_flush()
        if self.snapshots.pending is not None:
            with self._failing():  # (whether its rows landed: a failed commit is seen here too)
                self._written(self.snapshots.advance())
        elif self.config.snapshot_every and self.next_seq - self._snapshot_from >= self.config.snapshot_every:
            self.snapshot()

    def flush(self) -> None:
        """Commit everything buffered and wait for it (and for a snapshot taken before to be written)."""
        with self._failing():
            outputs, self._outputs = self._outputs, []
            self.sink.write_batch(outputs)
            self.sink.flush_all()
            self.recorder.wait()
            if self.snapshots.pending is not None:
                self._written(self.snapshots.advance(wait=True))

    def snapshot(self) -> int:
        """Take a snapshot at the current position: the state is pickled now and the log starts a new
        segment; nothing waits for the lake. The snapshot is written later, on another thread, once the lake
        holds every row below its position (:mod:`serving.snapshot`); :meth:`tick` sees to it. Returns the
        position it covers up to (exclusive)."""
        if self.snapshots.pending is not None:
            raise ServingError("a snapshot is being written already")
        started = time.perf_counter()
        with self._failing():
            outputs, self._outputs = self._outputs, []
            self.sink.write_batch(outputs)  # (every row below the position is handed over)
        sink, recorder = self.sink.handed(), self.recorder.handed()
        position = self._snapshot_from = self.next_seq
        self.snapshots.begin(position=position, state={
            "next_seq": position, "learner": self.learner, "types": self.types, "store": self.store.dump(),
            "events_served": self.events_served,
        }, journal=self.answers.take_journal(), generation=self.answers.generation,
            ready=lambda: self.failed is None and self.sink.landed(sink) and self.recorder.landed(recorder))
        self.log.rotate(position)
        freeze_survivors(collect=False)  # (requests wait for this: no full collection on top)
        log.info("%s: snapshot at position %d taken in %.3f s; written once the lake holds its rows",
                 self.server_id, position - 1, time.perf_counter() - started)
        return position

    def _written(self, position: int | None) -> None:
        if position is not None:
            self.snapshot_seq = position

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """A failed lake commit stops the engine: a later commit would pass the failed rows' positions, and
        the writers would then drop them for good. Stopped, it answers 503 and commits nothing more; a
        restart replays the log and writes what is missing."""
        if self.failed is not None:
            raise ServingError(self.failed)
        try:
            yield
        except Exception as ex:
            self.failed = f"lake commit failed, restart the server to resume from its log: {type(ex).__name__}: {ex}"
            raise

    def _refuse(self) -> tuple[int, Any] | None:
        if self.failed is None:
            return None
        return 503, {"detail": [{"index": None, "event_id": None, "field": None, "reason": self.failed}]}

    def models(self) -> list[dict[str, Any]]:
        out = []
        lag = None
        if self.last_label_accepted_us is not None and self.last_learned_us is not None:
            lag = max(0.0, (self.last_label_accepted_us - self.last_learned_us) / 1e6)
        for slot in self.learner.slots:
            out.append({
                "model": slot.name, "role": slot.role, "model_version": slot.version,
                "events_predicted": self.learner.n_events, "labels_learned": slot.n_learned,
                "last_label_accepted_at": iso_time(self.last_label_accepted_us),
                "last_learned_at": iso_time(self.last_learned_us),
                "seconds_behind_newest_label": lag,
                "labels_waiting": 0,
            })
        return out

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.failed is None else "failed", "reason": self.failed,
                "server_id": self.server_id, "lake": os.path.abspath(self.config.lake),
                "store": self.store.url, "position": self.next_seq - 1, "replayed_requests": self.replayed,
                "snapshot_position": self.snapshot_seq - 1,  # the last snapshot written
                "snapshot_taken_position": (None if self.snapshots.pending is None  # ... and one being written
                                            else self.snapshots.pending.position - 1),
                "requests": self.requests, "steps": self.steps,
                "uptime_s": round(time.time() - self.started_at, 3)}

    def close(self) -> None:
        """Commit what is buffered (unless a commit failed: then the log keeps it for the restart) and stop."""
        try:
            if self.failed is None:
                self.flush()
                self.sink.close()
                self.recorder.close()
            else:  # no commit of this process may land once a restart has begun reading the positions
                self.sink.abort()
                self.recorder.abort()
            self.snapshots.close()
            self.store.close()
            self.log.close()
        finally:
            os.close(self._lock_fd)
