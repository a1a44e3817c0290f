"""The bounded memory of recent ids (duplicate detection): what a snapshot holds is what was remembered."""

import pickle
import random
from collections import deque

import pytest

from dataflows import recent
from dataflows.recent import RecentIds


@pytest.mark.parametrize("seed", range(6))
def test_a_pickled_memory_remembers_exactly_the_last_ids_at_every_moment(monkeypatch, seed):
    monkeypatch.setattr(recent, "_CHUNK", 4)  # parts of 4 ids: every boundary is crossed many times
    rng = random.Random(seed)
    capacity = rng.choice([1, 3, 4, 7, 9, 17])
    r = RecentIds(capacity)
    ref: deque[str] = deque()

    def add(i: str) -> None:
        if i not in ref:
            ref.append(i)
            if len(ref) > capacity:
                ref.popleft()

    n = 0
    for _ in range(300):
        if rng.random() < 0.3:
            batch = [f"b{n + j}" for j in range(rng.randrange(1, 12))]
            if rng.random() < 0.3 and ref:
                batch.append(rng.choice(list(ref)))  # an id remembered already: the item-by-item path
            n += len(batch)
            r.update(batch)
            for i in batch:
                add(i)
        else:
            i = rng.choice(["", "x\x00y", "s\ud800", f"e{n}"]) if rng.random() < 0.05 else f"e{n}"
            n += 1
            r.add(i)
            add(i)
        if rng.random() < 0.4:
            r2 = pickle.loads(pickle.dumps(r))
            assert list(r2._order) == list(ref) and len(r2) == len(ref)
            assert all(i in r2 for i in ref)
            if rng.random() < 0.5:
                r = r2  # go on from the restored memory, as a restart does
        assert list(r._order) == list(ref)


def test_a_snapshot_written_before_the_parts_still_loads():
    old = (3, "a\x00b\x00c", None)  # the single-string form
    r = RecentIds.__new__(RecentIds)
    r.__setstate__(old)
    assert list(r._order) == ["a", "b", "c"] and "b" in r
    r.add("d")
    assert "a" not in r and list(pickle.loads(pickle.dumps(r))._order) == ["b", "c", "d"]


def test_a_snapshot_of_many_similar_ids_is_a_fraction_of_their_bytes():
    # Ids of one stream share most of their characters (date, carrier, airport, time): the full parts of a
    # snapshot go compressed, so a learner's recovery snapshot does not grow by the ids' whole size.
    ids = [f"2013-{1 + i % 12:02d}-{1 + i % 28:02d}_MQ{1000 + i % 4000}_LGA_{i % 2400:04d}" for i in range(60_000)]
    r = RecentIds(1_000_000)
    r.update(ids[:30_000])
    first = pickle.dumps(r)  # (parts joined and compressed here are kept for the next snapshot)
    r.update(ids[30_000:])
    data = pickle.dumps(r)
    raw = sum(len(i) + 1 for i in ids)
    assert len(data) < 0.4 * raw, (len(data), raw)
    assert len(first) < 0.4 * raw / 2
    assert list(pickle.loads(data)._order) == ids and list(pickle.loads(first)._order) == ids[:30_000]


def test_a_snapshot_of_uncompressed_parts_still_loads():
    old = (5, ["a\x00b\x00c", "d\x00e"], 1, None)  # the parts form before compression: skip 1
    r = pickle.loads(pickle.dumps(RecentIds(1)))
    r.__setstate__(old)
    assert list(r._order) == ["b", "c", "d", "e"] and "a" not in r
