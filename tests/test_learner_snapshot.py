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
