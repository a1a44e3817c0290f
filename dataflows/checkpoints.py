"""Model checkpoints of the predict/learn step, and the learner as sealed recovery state.

A checkpoint is a ``checkpoints`` row: the model's pickle, its sha256, the featurizer state it
predicts with (trained models only) and an HMAC of both under a key the lake does not hold
(:mod:`lake.integrity`), with the versions that made it.
"""

from __future__ import annotations

import hashlib
import pickle
import platform
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import river

from dataflows import sealed as sealed_parts
from dataflows.rows import row
from lake import integrity

RIVERLAKE_VERSION = "0.1.0"


def model_digest(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


def take_checkpoint(slot: Any, *, run_id: str, shard: int, seq: int, last_event_id: str | None, spec: str,
                    rows: list, suffix: str = "", featurizer_bytes: bytes | None = None) -> bytes:
    """Snapshot ``slot``'s model into a ``checkpoints`` row appended to ``rows``; the slot's model
    version becomes the checkpoint's id. ``featurizer_bytes`` (:func:`featurizer_state`) is the featurizer
    the model predicts with from here on, kept beside it under the same HMAC. Returns the pickled model."""
    data = pickle.dumps(slot.estimator, protocol=5)
    cid = f"{slot.name}:s{shard}:{slot.n_learned}{suffix}"
    slot.version = cid
    slot.checkpointed_at = slot.n_learned
    rows.append(row(
        "checkpoints", run_id=run_id, shard=shard, seq=seq, checkpoint_id=cid, model=slot.name, spec=spec,
        n_learned=slot.n_learned, last_event_id=last_event_id, sha256=model_digest(data),
        river_version=river.__version__, python_version=platform.python_version(),
        riverlake_version=RIVERLAKE_VERSION, model_bytes=data, created_at=datetime.now(UTC),
        hmac=integrity.sign_checkpoint(data, featurizer_bytes, run_id=run_id, checkpoint_id=cid),
        featurizer_bytes=featurizer_bytes,
    ))
    return data


def featurizer_state(featurizer: Any) -> bytes:
    """The featurizer's pickle, as a checkpoint keeps it (per-key state is columns: ~5 MB, ~30 ms for 100k
    keys, ~1 MB in the lake's Parquet)."""
    return pickle.dumps(featurizer, protocol=5)


def _advance(featurizer: Any, steps: Iterable[tuple[bool, str, Any]]) -> None:
    for is_event, key, value in steps:
        if is_event:
            featurizer.learn_one({}, key=key, event_time_us=int(value))
        else:
            featurizer.learn_label(key=key, y=bool(value))


def item_steps(kinds: Any, ev_pos: Any, ev_keys: list[str], ev_t: Any, lb_pos: Any, lb_keys: list[str],
               lb_y: Any) -> Iterator[tuple[bool, str, Any]]:
    """A columnar batch's items (``kinds``: 0 event, 1 label learned, others left out) as
    :class:`FeaturizerRewind` replays them; ``ev_pos``/``lb_pos``: item -> index among events / labels learned."""
    for i, kind in enumerate(kinds.tolist()):
        if kind == 0:
            e = int(ev_pos[i])
            yield True, ev_keys[e], int(ev_t[e])
        elif kind == 1:
            j = int(lb_pos[i])
            yield False, lb_keys[j], int(lb_y[j])


class FeaturizerRewind:
    """:func:`featurizer_state` at checkpoints inside a batch that a columnar step featurized in one go.

    Made before the batch from the ``keys`` it touches: their histories and the label totals, or, where
    the batch could make the featurizer forget keys, a pickle of all of it. :meth:`at` gives the state
    the item path has after the batch's items ``upto`` (``(True, key, event_time_us)`` for an event,
    ``(False, key, label)`` for a label learned): it sets the featurizer back to before the batch,
    advances it by ``upto``, pickles it and puts the end of the batch back (``items``: all the batch's
    items, whose order of first appearance is the order of the keys new in it).
    """

    def __init__(self, featurizer: Any, keys: Iterable[str]) -> None:
        self.featurizer = featurizer
        self.keys = list(dict.fromkeys(keys))
        self.before = [None if st is None else tuple(st) for st in featurizer.key_states(self.keys)]
        self.totals = featurizer.label_totals
        forgets = featurizer.key_features and featurizer.n_keys + len(self.keys) > featurizer.max_keys
        self.full = featurizer_state(featurizer) if forgets else None  # ~3x the cost, where keys may go

    def at(self, upto: Iterable[tuple[bool, str, Any]], items: Iterable[tuple[bool, str, Any]]) -> bytes:
        if self.full is not None:
            featurizer = pickle.loads(self.full)  # taken by this process from its own featurizer, never read back
            _advance(featurizer, upto)
            return featurizer_state(featurizer)
        f = self.featurizer
        old = [k for k, st in zip(self.keys, self.before, strict=True) if st is not None]
        new = [k for k, st in zip(self.keys, self.before, strict=True) if st is None]
        end_old, end_new, end_totals = f.key_states(old), dict(zip(new, f.key_states(new), strict=True)), f.label_totals
        f.forget_keys(new)
        f.set_key_states(old, [st for st in self.before if st is not None])
        f.set_label_totals(*self.totals)
        _advance(f, upto)
        data = featurizer_state(f)
        f.forget_keys(new)
        f.set_key_states(old, end_old)
        fresh = set(new)
        order = [k for k in dict.fromkeys(k for _, k, _ in items if k in fresh) if end_new[k] is not None]
        f.set_key_states(order, [end_new[k] for k in order])
        f.set_label_totals(*end_totals)
        return data


def seal_learner(learner: Any, config: Any) -> tuple[str, bytes]:
    """A learner as recovery state: its pickle zstd-compressed and sealed with an HMAC
    (:func:`dataflows.sealed.seal_parts`): ~1/3 of the bytes Bytewax writes into its store at each snapshot."""
    return sealed_parts.seal_parts([sealed_parts.pack(learner)], purpose=integrity.RECOVERY_PURPOSE)


def resume_learner(sealed: Any, config: Any) -> Any:
    """The learner of a :func:`seal_learner` snapshot, decompressed and unpickled only once its HMAC checked out
    (a snapshot of an older riverlake holds the pickle itself, sealed)."""
    if sealed is None:
        return None
    what = f"recovery state of run {config.run_id!r}"
    if sealed_parts.is_sealed_parts(sealed):
        return sealed_parts.unseal_parts(sealed, purpose=integrity.RECOVERY_PURPOSE, what=what)[0]
    return integrity.unseal(sealed, purpose=integrity.RECOVERY_PURPOSE, what=what)
