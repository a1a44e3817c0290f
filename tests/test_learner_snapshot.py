"""A learner's recovery state: compressed and sealed, refused if altered, older snapshots still resume."""

from __future__ import annotations

import pickle

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
