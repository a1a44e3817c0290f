"""Rebuild the exact score of a past prediction from its checkpoint plus the learn log.

    python -m lake reproduce --lake PATH --event-id ID [--run-id R] [--model M]

A prediction row P was made by the model of checkpoint ``P.model_version``
after it learned, in ``learn_order``, every label of the same run, model and
shard with ``checkpoint.n_learned < learn_order`` and ``seq < P.seq``; each of
those learned the features stored with its own event's prediction. So the
model that made P is::

    load(checkpoint) → learn_one(features(e), bool(label)) for each such learn → predict_proba_one(P.features)

(the label as the lake's task learns it: ``bool`` for binary, the float or the class otherwise;
the score as :func:`lake.scoring.task_answer` reads it: P(positive), the value, or the predicted
class's probability), except, in a binary lake, where that model had learned nothing (the
run's first checkpoint or a ``-reset`` one, no learn since): the dataflow then served the
prior of the labels learned so far on the shard (positives / labels in the learn log
before P, 0.0 when none), and a per-key model with no model for P's key served 0.0.

River's ``predict_proba_one`` does not update the model (no learning during
prediction), so the rebuilt score is bit-equal to the stored one. The
checkpoint's bytes are checked against its sha256 (a mismatch raises
:class:`ChecksumError`) and against its HMAC with the riverlake key, which the
lake does not hold (:mod:`lake.integrity`; a mismatch, or a row without one,
raises :class:`~lake.integrity.IntegrityError`) before they are unpickled; the
command then exits with code 2.

>>> verify_checkpoint(b"abc", hashlib.sha256(b"abc").hexdigest(), checkpoint="linear:s0:0")
>>> verify_checkpoint(b"abd", hashlib.sha256(b"abc").hexdigest(), checkpoint="c")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
lake.reproduce.ChecksumError: checkpoint 'c': model bytes have sha256 a52d...49c9, the lake records ba78...15ad; ...
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lake import integrity
from lake.errors import LakeError
from lake.integrity import IntegrityError
from lake.schemas import schema_of
from lake.scoring import task_answer  # the dataflow's own scoring rule
from lake.table import exists, scan_table


class ChecksumError(IntegrityError):
    """Model bytes do not match the sha256 recorded with them: they were changed after the checkpoint."""


class ReproduceError(LakeError):
    """The lake does not hold what a reproduction needs (prediction, checkpoint or learn steps)."""


def _short(digest: str) -> str:
    return f"{digest[:4]}...{digest[-4:]}"


def verify_checkpoint(model_bytes: bytes, sha256: str, *, checkpoint: str) -> None:
    """Raise :class:`ChecksumError` unless ``model_bytes`` hash to ``sha256``."""
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != sha256:
        raise ChecksumError(f"checkpoint {checkpoint!r}: model bytes have sha256 {_short(actual)}, "
                            f"the lake records {_short(sha256)}; refusing to unpickle them")


def verify_signed(row: dict[str, Any]) -> None:
    """Check a ``checkpoints`` row's bytes against its sha256, then its HMAC (:mod:`lake.integrity`; it
    covers the featurizer state too where the row keeps it).

    The sha256 catches bytes damaged by accident; only the HMAC, made with a key the
    lake does not hold, proves that whoever wrote them had the key.
    """
    run_id, checkpoint = row["run_id"], row["checkpoint_id"]
    verify_checkpoint(row["model_bytes"], row["sha256"], checkpoint=checkpoint)
    integrity.verify_checkpoint(row["model_bytes"], row.get("featurizer_bytes"), row.get("hmac"), run_id=run_id,
                                checkpoint_id=checkpoint,
                                what=f"checkpoint {checkpoint!r} of run {run_id!r} (table 'checkpoints')")


def load_checkpoint(row: dict[str, Any]) -> Any:
    """The River estimator of a ``checkpoints`` row, unpickled only once :func:`verify_signed` passed."""
    verify_signed(row)
    return pickle.loads(row["model_bytes"])  # verified above


@dataclass
class Reproduction:
    """One prediction rebuilt: what the lake stored and what replaying its history gives."""

    run_id: str
    shard: int
    seq: int
    event_id: str
    model: str
    role: str
    model_version: str
    checkpoint_n_learned: int
    sha256: str
    learned: int  # learn steps replayed on top of the checkpoint
    features: dict[str, float] = field(repr=False)
    stored_score: float
    reproduced_score: float

    @property
    def bit_equal(self) -> bool:
        return self.stored_score == self.reproduced_score

    def describe(self) -> str:
        """What ``python -m lake reproduce`` prints for this prediction."""
        feats = ", ".join(f"{k!r}: {v!r}" for k, v in self.features.items())
        if self.learned:
            steps = (f"{self.learned} learn steps replayed (learn_order {self.checkpoint_n_learned + 1}"
                     f"..{self.checkpoint_n_learned + self.learned})")
        else:
            steps = "no learn steps between checkpoint and prediction"
        return "\n".join([
            f"event          {self.event_id}  (run {self.run_id}, shard {self.shard}, seq {self.seq})",
            f"model          {self.model} ({self.role})",
            f"model version  {self.model_version}  (n_learned {self.checkpoint_n_learned}, "
            f"sha256 {self.sha256} and HMAC verified)",
            f"history        {steps}",
            f"features       {{{feats}}}",
            f"stored score     {self.stored_score!r}  ({float(self.stored_score).hex()})",
            f"reproduced score {self.reproduced_score!r}  ({float(self.reproduced_score).hex()})",
            f"bit-equal      {'yes' if self.bit_equal else 'NO'}",
        ])


def _scan(lake: str | os.PathLike[str], table: str) -> pl.LazyFrame:
    return scan_table(lake, table)


def _learn_log(lake: str | os.PathLike[str]) -> pl.LazyFrame:
    """``learn_log``; empty when nothing was learned yet (no label came): the table is written on the first."""
    if exists(lake, "learn_log"):
        return _scan(lake, "learn_log")
    return pl.LazyFrame(pl.from_arrow(schema_of("learn_log").empty_table()))


def _lake_task(lake: str | os.PathLike[str]) -> str:
    from lake.tasks import read_task

    found = read_task(lake)
    return "binary" if found is None else found.name


def _as_dict(features: Any) -> dict[str, float]:
    """A ``features`` map cell as the dict the model saw, in the same key order."""
    if features is None:
        return {}
    if isinstance(features, dict):
        return dict(features)
    # older readers give a list of {key, value} structs or (key, value) pairs
    return dict((kv["key"], kv["value"]) if isinstance(kv, dict) else kv for kv in features)


def reproduce(lake: str | os.PathLike[str], event_id: str, *, run_id: str | None = None,
              model: str | None = None) -> list[Reproduction]:
    """Rebuild the score of every prediction made for ``event_id`` (narrowed by run and model).

    When the event was predicted in several runs, ``run_id`` must say which.
    Raises :class:`ChecksumError` or :class:`~lake.integrity.IntegrityError` on tampered
    (or unsigned) model bytes, :class:`ReproduceError`
    when the prediction or its history is not in the lake.
    """
    preds = _scan(lake, "predictions").filter(pl.col("event_id") == event_id)
    if run_id is not None:
        preds = preds.filter(pl.col("run_id") == run_id)
    if model is not None:
        preds = preds.filter(pl.col("model") == model)
    rows = preds.collect()
    if rows.height == 0:
        narrowed = "".join(f", {k} {v!r}" for k, v in (("run", run_id), ("model", model)) if v is not None)
        raise ReproduceError(f"no prediction for event {event_id!r}{narrowed} in {os.fspath(lake)!r}")
    runs = sorted(rows["run_id"].unique().to_list())
    if len(runs) > 1:
        raise ReproduceError(f"event {event_id!r} was predicted in {len(runs)} runs ({', '.join(runs)}); "
                             "pick one with --run-id")
    ordered = rows.sort([pl.col("role") != "champion", "model"])  # the served prediction first
    return [_reproduce_one(lake, row) for row in ordered.iter_rows(named=True)]


def _reproduce_one(lake: str | os.PathLike[str], p: dict[str, Any]) -> Reproduction:
    run_id, model, shard, version = p["run_id"], p["model"], p["shard"], p["model_version"]
    ck = (_scan(lake, "checkpoints")
          .filter((pl.col("run_id") == run_id) & (pl.col("checkpoint_id") == version))
          .collect())
    if ck.height == 0:
        raise ReproduceError(f"checkpoint {version!r} of run {run_id!r} is not in the lake")
    c = ck.row(0, named=True)
    if (c["model"], c["shard"]) != (model, shard):
        raise ReproduceError(f"checkpoint {version!r} is of model {c['model']!r} shard {c['shard']}, "
                             f"the prediction of model {model!r} shard {shard}")
    n0 = c["n_learned"]
    learns = (_learn_log(lake)
              .filter((pl.col("run_id") == run_id) & (pl.col("model") == model) & (pl.col("shard") == shard)
                      & (pl.col("learn_order") > n0) & (pl.col("seq") < p["seq"]))
              .select("event_id", "label", "learn_order")
              .collect()
              .sort("learn_order"))
    orders = learns["learn_order"].to_list()
    if orders != list(range(n0 + 1, n0 + 1 + len(orders))):
        raise ReproduceError(f"learn_log of run {run_id!r}, model {model!r}, shard {shard} has gaps after "
                             f"checkpoint {version!r}: cannot rebuild the model")
    if learns.height:
        learned_ids = learns["event_id"].to_list()
        feats = (_scan(lake, "predictions")
                 .filter((pl.col("run_id") == run_id) & (pl.col("model") == model)
                         & pl.col("event_id").is_in(learned_ids))
                 .select("event_id", "features", "key")
                 .collect())
        history = learns.join(feats, on="event_id", how="left", maintain_order="left")
        missing = history.filter(pl.col("features").is_null())["event_id"].to_list()
        if missing:
            raise ReproduceError(f"no stored features for learned event(s) {missing[:5]} of run {run_id!r}")
    else:
        history = learns.with_columns(features=pl.lit(None), key=pl.lit(None, pl.String))
    estimator = load_checkpoint(c)
    keyed = getattr(estimator, "keyed", False)  # one model per key (dataflows.perkey): learn and score by key
    task = _lake_task(lake)
    for row in history.iter_rows(named=True):
        y = bool(row["label"]) if task == "binary" else row["label"]  # (a float, or the class as text)
        if keyed:
            estimator.learn_one(_as_dict(row["features"]), y, row["key"])
        else:
            estimator.learn_one(_as_dict(row["features"]), y)
    x = _as_dict(p["features"])
    if task != "binary":
        score = task_answer(task, estimator, x, p.get("key"))[1]  # another task serves its model's own answer
    elif keyed and not estimator.has_model(p.get("key")):
        score = 0.0  # a key without a model of its own: the dataflow serves the prior of its labels (none)
    elif not keyed and not orders and (n0 == 0 or version.endswith("-reset")):
        # A model that had learned nothing: the dataflow served the prior of the labels learned so far.
        before = (_learn_log(lake)
                  .filter((pl.col("run_id") == run_id) & (pl.col("model") == model) & (pl.col("shard") == shard)
                          & (pl.col("seq") < p["seq"]))
                  .select(pl.len().alias("n"), pl.col("label").sum().alias("pos"))
                  .collect())
        n, pos = before["n"][0], before["pos"][0] or 0
        score = pos / n if n else 0.0
    else:
        score = task_answer("binary", estimator, x, p.get("key"))[1]
    return Reproduction(
        run_id=run_id, shard=shard, seq=p["seq"], event_id=p["event_id"], model=model, role=p["role"],
        model_version=version, checkpoint_n_learned=n0, sha256=c["sha256"], learned=len(orders), features=x,
        stored_score=p["score"], reproduced_score=score,
    )
