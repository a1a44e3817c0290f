"""What a shard did not learn from, counted as the run goes and said out loud at its end.

:class:`Discards` reads the rows a learner step produces (``predictions``, ``learn_log``,
``dead_letters``, ``expired``, ``late_events``) and keeps counts: labels learned and lost
per class, events whose label was given up on (and the labels that came afterwards, by
class), dead letters by reason, late events. At the end of the input it gives the line
printed on stderr, a ``run_summaries`` row, and a warning when more than
:data:`WARN_LABEL_SHARE` of the labels that arrived, or more than
:data:`WARN_CLASS_SHARE` of one class's labels, did not reach learning.

>>> d = Discards()
>>> d.labels_learned = [900, 60]
>>> d.labels_lost, d.expired_labels = [10, 30], [10, 30]
>>> w = d.warning(run_id="r", shard=0, label_ttl_us=7 * 86_400_000_000)
>>> w.split(", ")[:2]
['run r shard 0: 40 of 1,000 labels (4.0%) did not reach learning', '30 of 90 positives (33.3%)']
>>> w.split("; ")[1]
'40 came after their event expired (label_ttl 7d): see run_summaries and dead_letters'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from dataflows.rows import StepRows

EXPIRED_REASON = "label arrived after its event expired"
"""The dead-letter reason of a label whose event was no longer waited for (``label_ttl``)."""
WARN_LABEL_SHARE = 0.01
"""Warn when more than this share of the labels that arrived were not learned."""
WARN_CLASS_SHARE = 0.05
"""Warn when one class lost more than this share of its labels."""


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


@dataclass
class Discards:
    """Counts of one shard's run; pickled with the learner, so a resumed run keeps them."""

    events: int = 0
    labels_learned: list[int] = field(default_factory=lambda: [0, 0])  # [negatives, positives]
    labels_lost: list[int] = field(default_factory=lambda: [0, 0])  # dead-lettered labels of known class
    labels_lost_unknown: int = 0  # dead-lettered labels whose value is not 0/1
    expired: int = 0
    expired_labels: list[int] = field(default_factory=lambda: [0, 0])
    dead_letters: dict[str, int] = field(default_factory=dict)
    late_events: int = 0

    def tally(self, tables: dict[str, pa.Table | StepRows], *, n_models: int) -> None:
        """Count the rows of one learner step (each model writes its own predictions and learn steps)."""
        preds = tables.get("predictions")
        if preds is not None:
            self.events += preds.num_rows // n_models
        learns = tables.get("learn_log")
        if learns is not None:
            n = learns.num_rows // n_models
            if isinstance(learns, StepRows):  # (a binary step's rows, not yet Arrow: labels 0/1)
                pos = sum(learns.pylist("label")) // n_models
            else:  # positives are counted in binary runs (other tasks' labels: none)
                label = learns.column("label")
                pos = (pc.sum(label).as_py() or 0) // n_models if pa.types.is_integer(label.type) else 0
            self.labels_learned[0] += n - pos
            self.labels_learned[1] += pos
        dead = tables.get("dead_letters")
        if dead is not None:
            for reason, raw in zip(dead.column("reason").to_pylist(), dead.column("raw").to_pylist(), strict=True):
                self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
                label = _label_of(raw)
                if label is _NOT_A_LABEL:
                    continue
                if label in (0, 1):
                    self.labels_lost[label] += 1
                    if reason == EXPIRED_REASON:
                        self.expired_labels[label] += 1
                else:
                    self.labels_lost_unknown += 1
        expired = tables.get("expired")
        if expired is not None:
            self.expired += expired.num_rows
        late = tables.get("late_events")
        if late is not None:
            self.late_events += late.num_rows

    @property
    def n_lost(self) -> int:
        return sum(self.labels_lost) + self.labels_lost_unknown

    @property
    def n_labels(self) -> int:
        """Labels that arrived: learned or lost."""
        return sum(self.labels_learned) + self.n_lost

    def warning(self, *, run_id: str, shard: int, label_ttl_us: int | None) -> str | None:
        """One line when too many labels did not reach learning (see the module doc), else ``None``."""
        lost, total = self.n_lost, self.n_labels
        classes = [(name, self.labels_lost[c], self.labels_learned[c] + self.labels_lost[c])
                   for c, name in ((1, "positives"), (0, "negatives"))]
        if not total or (lost <= WARN_LABEL_SHARE * total
                         and all(n <= WARN_CLASS_SHARE * of for _, n, of in classes)):
            return None
        from lake.durations import format_us

        parts = [f"{lost:,} of {total:,} labels ({_share(lost, total)}) did not reach learning"]
        parts += [f"{n:,} of {of:,} {name} ({_share(n, of)})" for name, n, of in classes if of]
        text = f"run {run_id} shard {shard}: " + ", ".join(parts)
        n_exp = sum(self.expired_labels)
        if n_exp:
            ttl = "none" if label_ttl_us is None else format_us(label_ttl_us)
            text += f"; {n_exp:,} came after their event expired (label_ttl {ttl})"
        return text + ": see run_summaries and dead_letters"

    def describe(self, *, run_id: str, shard: int) -> str:
        """The end-of-run line: what was learned and everything that was not."""
        learned = sum(self.labels_learned)
        n_exp = sum(self.expired_labels)
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in
                            sorted(self.dead_letters.items(), key=lambda kv: (-kv[1], kv[0])))
        later = (f" ({n_exp:,} labels came later, {_share(self.expired_labels[1], n_exp)} of them positive)"
                 if n_exp else "")
        return (f"run {run_id} shard {shard} ended: {self.events:,} events predicted, {learned:,} of "
                f"{self.n_labels:,} labels learned; not learned: {self.expired:,} events expired waiting for "
                f"their label{later}, {sum(self.dead_letters.values()):,} dead letters"
                + (f" ({reasons})" if reasons else "") + f", {self.late_events:,} late events")

    def row(self, *, run_id: str, shard: int, seq: int, label_ttl_us: int | None) -> dict:
        """The ``run_summaries`` row, by column name."""
        return {
            "run_id": run_id, "shard": shard, "seq": seq, "n_events": self.events, "n_labels": self.n_labels,
            "n_learned": sum(self.labels_learned), "n_positive_learned": self.labels_learned[1],
            "n_labels_lost": self.n_lost, "n_positive_lost": self.labels_lost[1],
            "n_negative_lost": self.labels_lost[0], "n_expired": self.expired,
            "n_expired_labels": sum(self.expired_labels), "n_expired_positive": self.expired_labels[1],
            "label_ttl_us": label_ttl_us, "n_dead_letters": sum(self.dead_letters.values()),
            "dead_letters": sorted(self.dead_letters.items()), "n_late_events": self.late_events,
            "warning": self.warning(run_id=run_id, shard=shard, label_ttl_us=label_ttl_us),
            "summary": self.describe(run_id=run_id, shard=shard),
        }


_NOT_A_LABEL = object()


def _label_of(raw: str) -> object:
    """The label value of a dead-lettered label item's raw JSON; ``_NOT_A_LABEL`` for other input."""
    try:
        item = json.loads(raw)
    except ValueError:
        return _NOT_A_LABEL
    if not isinstance(item, dict) or item.get("kind") != "label":
        return _NOT_A_LABEL
    value = item.get("label")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
