"""A learner's recovery state: compressed and sealed, refused if altered, older snapshots still resume."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

from dataflows.items import Batch
from dataflows.learner import RunConfig, ShardLearner, resume_learner, seal_learner
from dataflows.sealed import PARTS, pack
from dataflows.validate import validate_batch
from lake import integrity
from lake.integrity import IntegrityError
from tests.test_step_rows import _stream


def _trained() -> tuple[RunConfig, ShardLearner]:
    config = RunConfig(run_id="r", models=("linear", "tree"))
    learner = ShardLearner(config, shard=0)
    learner.process(validate_batch(Batch(0, _stream(400))))
    return config, learner


def _scores(learner: ShardLearner) -> list[float]:
    out = learner.process(validate_batch(Batch(0, _stream(440)[-60:])))
    return out.tables["predictions"].arrow().column("score").to_pylist()


def test_a_learner_snapshot_is_compressed_and_resumes_the_same_models():
    config, learner = _trained()
    tag, data = seal_learner(learner, config)
    plain = pickle.dumps(learner, protocol=5)
    assert data.startswith(PARTS) and len(data) < 0.9 * len(plain), (len(data), len(plain))
    assert _scores(resume_learner((tag, data), config)) == _scores(pickle.loads(plain))


def test_a_learner_snapshot_of_the_older_uncompressed_form_still_resumes():
    config, learner = _trained()
    old = integrity.seal(pickle.dumps(learner, protocol=5), purpose=integrity.RECOVERY_PURPOSE)
    assert _scores(resume_learner(old, config)) == _scores(pickle.loads(pickle.dumps(learner, protocol=5)))


class _Boom:
    ran = False

    def __reduce__(self):
        return (setattr, (_Boom, "ran", True))


def test_an_altered_learner_snapshot_is_refused_before_anything_is_unpickled():
    config, learner = _trained()
    tag, data = seal_learner(learner, config)
    evil = pack(_Boom())
    for forged in ((tag, data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]),
                   (tag, PARTS + len(evil).to_bytes(8, "big") + evil)):
        with pytest.raises(IntegrityError, match="recovery state of run 'r': HMAC does not match"):
            resume_learner(forged, config)
    assert not _Boom.ran


def test_events_waiting_for_labels_share_their_feature_names_so_a_snapshot_writes_each_once():
    # A live learner holds the features of every event that waits for its label (thousands a shard), and every
    # snapshot pickles them: a name per event made each dict's keys fresh strings, written out in full each time
    # (the pending events' pickle took 7.2 ms for 1,713 flights events, 2.8-3.4 ms with the names shared).
    import json

    from dataflows.decode import decode_event
    from dataflows.features import KeyedFeaturizer

    featurizer = KeyedFeaturizer()
    xs = []
    for i in range(500):
        raw = json.dumps({"event_id": f"e{i}", "event_time": "2026-01-01T00:00:00Z", "key": "k",
                          "delay_minutes": float(i), "carrier": "UA" if i % 2 else "AA"}).encode()
        item, _ = decode_event(raw, seq=i)
        xs.append(featurizer.transform_one(item[5], key=item[4], event_time_us=item[3]))
    for name in ("delay_minutes", "carrier=UA"):
        owners = [next(k for k in x if k == name) for x in xs if name in x]
        assert len(owners) >= 250 and all(k is owners[0] for k in owners), name
    fresh = [{k[:1] + k[1:]: v for k, v in x.items()} for x in xs]  # the same features, a name per event
    assert len(pickle.dumps(xs, protocol=5)) < 0.8 * len(pickle.dumps(fresh, protocol=5))


def test_a_snapshot_carries_the_arrivals_of_waiting_events_only_and_expires_the_same_events():
    # Labelled events linger in the label-expiry queue until the TTL or a compaction (thousands of tuples in a
    # live shard): a snapshot keeps those of the events still waiting, as two flat values, and the resumed
    # learner gives up on exactly the events the running one gives up on.
    from collections import deque

    from dataflows.expiry import LabelExpiry
    from dataflows.items import EVENT, LABEL

    s = 1_000_000
    items, seq = [], 0
    for i in range(600):
        items.append((seq, EVENT, f"e{i}", (1_000 + i) * s, f"k{i % 4}", {"v": float(i % 17)}))
        seq += 1
        if i >= 5 and (i - 5) % 3:  # (every third event never gets its label: it expires)
            items.append((seq, LABEL, f"e{i - 5}", (i % 2 == 0), (1_000 + i) * s, f"k{(i - 5) % 4}"))
            seq += 1
    config = RunConfig(run_id="r", models=("linear",), label_ttl_us=40 * s)
    running = ShardLearner(config, shard=0)
    cut = len(items) // 2
    for at in range(0, cut, 7):
        running.process(validate_batch(Batch(0, items[at:min(at + 7, cut)])))
    waiting = [a for a in running.expiry.arrivals if a[1] in running.pending]
    assert len(running.expiry.arrivals) > 2 * len(waiting) > 0  # (labelled ones linger before the snapshot)
    state = pickle.dumps(running, protocol=5)
    resumed = pickle.loads(state)
    assert list(resumed.expiry.arrivals) == waiting == list(running.expiry.arrivals)
    assert resumed.expiry.clock_us == running.expiry.clock_us

    def rest(learner: ShardLearner) -> tuple[list, list]:
        expired, scores = [], []
        for at in range(cut, len(items), 7):
            out = learner.process(validate_batch(Batch(0, items[at:at + 7])))
            for name, into, column in (("expired", expired, "event_id"), ("predictions", scores, "score")):
                table = out.tables.get(name)
                if table is not None:
                    into += (table if isinstance(table, pa.Table) else table.arrow()).column(column).to_pylist()
        return expired, scores

    fresh = ShardLearner(config, shard=0)  # (never snapshotted: its labelled arrivals never compacted by one)
    for at in range(0, cut, 7):
        fresh.process(validate_batch(Batch(0, items[at:min(at + 7, cut)])))
    want = rest(fresh)
    assert len(want[0]) > 50
    assert rest(resumed) == want == rest(pickle.loads(state))

    old = LabelExpiry.__new__(LabelExpiry)  # a snapshot of the queue from before its flat form
    old.__setstate__({"arrivals": deque([(5, "a"), (9, "b")]), "clock_us": 12})
    assert list(old.arrivals) == [(5, "a"), (9, "b")] and old.clock_us == 12
    with pytest.raises(ValueError, match="2 times for 1 event ids"):
        LabelExpiry.__new__(LabelExpiry).__setstate__({"times": bytes(16), "ids": ["a"], "clock_us": 0})


def test_pending_events_are_packed_once_and_every_snapshot_gives_them_back_in_order():
    # Entries come and go (labels, the TTL, the columnar step moving one into its arena, an id predicted again
    # after it left); every snapshot's packed form gives back the very dict, order included, while only the
    # entries new since the snapshot before are pickled again.
    import random

    from dataflows.pending_pack import PackedPending, PendingPacker

    rng = random.Random(3)
    packer = PendingPacker()
    pending: dict = {}
    n = 0
    sizes = []
    for snapshot in range(60):
        for _ in range(rng.randrange(0, 300)):
            n += 1
            pending[f"e{n}"] = ({"x": rng.random(), f"c={n % 7}": 1.0}, n, f"k{n % 5}", [rng.random()])
        for eid in rng.sample(list(pending), k=min(len(pending), rng.randrange(0, 280))):
            del pending[eid]
        for eid in rng.sample(list(pending), k=min(len(pending), 5)):
            pending[eid] = rng.randrange(0, 10_000)  # (moved into the arena: a slot)
        if snapshot == 30 and pending:
            again = next(iter(pending))  # (an id that left and came back with another entry)
            del pending[again]
            pending[again] = ({"x": -1.0}, 0, "k", [0.1])
        packed = packer.pack(pending)
        restored = pickle.loads(pickle.dumps(packed, protocol=5))
        assert isinstance(restored, PackedPending)
        got = restored.unpack()
        assert list(got) == list(pending) and got == pending
        sizes.append(sum(len(c) for c in packed.chunks if c is not None))
    assert len(packer._where) <= 2 * len(pending) + 1_000 + 300
    with pytest.raises(ValueError, match="references for"):
        PackedPending(["a", "b"], bytes(8), []).unpack()


def test_a_learner_snapshot_packs_its_waiting_events_and_resumes_the_same():
    # Two snapshots of a learner whose events wait for their labels: the second pickles only the events
    # predicted since the first; the resumed learner scores and learns as one that never stopped.
    from dataflows.items import EVENT
    from dataflows.sealed import decompress

    config, learner = _trained()
    stream = _stream(700)  # (events e400 on start at item 795: those before were learned already)
    events = [item for item in stream[800:] if item[1] == EVENT]  # (their labels held back: the events wait)
    learner.process(validate_batch(Batch(0, events[:50])))
    first = pickle.dumps(learner, protocol=5)
    packer = learner._pending_packer
    before = len(packer._chunks)
    learner.process(validate_batch(Batch(0, events[50:60])))
    second = pickle.dumps(learner, protocol=5)
    fresh = packer._chunks[before:]
    assert len(fresh) == 1 and len(pickle.loads(decompress(fresh[0]))) == 10 < len(learner.pending)
    resumed, kept = pickle.loads(second), pickle.loads(pickle.dumps(learner, protocol=5))
    assert resumed.pending == learner.pending and list(resumed.pending) == list(learner.pending)
    assert pickle.loads(first).pending != learner.pending

    rest = events[60:] + [item for item in stream[800:] if item[1] != EVENT]

    def scores(other: ShardLearner) -> list[float]:
        out = other.process(validate_batch(Batch(0, rest))).tables["predictions"]
        return (out if isinstance(out, pa.Table) else out.arrow()).column("score").to_pylist()

    assert scores(resumed) == scores(kept) == scores(learner)
