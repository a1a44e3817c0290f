"""Stateless checks of incoming items; what fails becomes a dead letter, never an exception.

>>> from dataflows.items import Batch, EVENT, LABEL
>>> b = Batch(0, [(0, EVENT, "e1", 0, "k", {"x": 1.0}),
...              (1, EVENT, "e2", 0, "k", {"x": float("inf")}),
...              (2, LABEL, "e1", 7, 10, "k")])
>>> out = validate_batch(b)
>>> [item[0] for item in out.items]
[0]
>>> [(d[0], d[2]) for d in out.dead]
[(1, "non-finite value in field 'x'"), (2, 'label must be 0 or 1, got 7')]
>>> check_event((3, EVENT, "e3", 0, "k", {"x": -1e308}))
"value -1e+308 in field 'x' is beyond what the models can learn from (|value| <= 1e+100)"
"""

from __future__ import annotations

from dataflows.guard import MAX_ABS_FEATURE
from dataflows.items import EVENT, LABEL, Batch, raw_json
from lake.limits import MAX_ID_LENGTH, MAX_TIME_US, MIN_TIME_US
from monitoring.tasks import label_value

_SCALARS = frozenset({str, int, float, bool, type(None)})
_INF = float("inf")


def check_event(item: tuple) -> str | None:
    """Why an event item cannot be processed, or ``None`` when it can."""
    _, _, event_id, event_time, key, payload = item
    if type(event_id) is not str or not event_id:
        return f"event_id must be a non-empty string, got {event_id!r:.80}"
    if len(event_id) > MAX_ID_LENGTH:
        return f"event_id longer than {MAX_ID_LENGTH} characters"
    if type(event_time) is not int:
        return f"event_time must be an integer of microseconds, got {event_time!r:.80}"
    if not MIN_TIME_US <= event_time < MAX_TIME_US:
        return f"event_time out of range (years 1900-2200): {event_time!r} us"
    if type(key) is not str:
        return f"key must be a string, got {key!r:.80}"
    if type(payload) is not dict:
        return f"payload must be a mapping, got {type(payload).__name__}"
    lo, hi = -MAX_ABS_FEATURE, MAX_ABS_FEATURE
    for name, value in payload.items():
        kind = type(value)
        if kind is float:
            if not lo <= value <= hi and value == value:  # (one comparison for a usual value; NaN is missing)
                if value == _INF or value == -_INF:
                    return f"non-finite value in field {name!r}"
                return (f"value {value!r} in field {name!r} is beyond what the models can learn from "
                        f"(|value| <= {MAX_ABS_FEATURE:g})")
        elif kind not in _SCALARS:
            return f"field {name!r} must be a number, string, bool or null, got {kind.__name__}"
        elif kind is int and not -(2**63) <= value < 2**63:
            return f"integer out of range in field {name!r}"
        if type(name) is not str:
            return f"field names must be strings, got {name!r:.80}"
    return None


def check_label(item: tuple, task: str = "binary") -> str | None:
    """Why a label item cannot be processed in a run of ``task``, or ``None`` when it can.

    >>> check_label((0, LABEL, "e1", "late", 10, "k"), "regression")
    "label must be a finite number, got 'late'"
    """
    _, _, event_id, label, label_time, _key = item
    if type(event_id) is not str or not event_id:
        return f"event_id must be a non-empty string, got {event_id!r:.80}"
    if task != "binary":
        try:
            label_value(task, label)
        except ValueError as ex:
            return f"{ex}"[:200]
    elif label not in (0, 1) or type(label) not in (int, bool):
        return f"label must be 0 or 1, got {label!r:.80}"
    if type(label_time) is not int:
        return f"label_time must be an integer of microseconds, got {label_time!r:.80}"
    if not MIN_TIME_US <= label_time < MAX_TIME_US:
        return f"label_time out of range (years 1900-2200): {label_time!r} us"
    return None


def dead_letter(item: tuple, *, step: str, reason: str, source: str) -> tuple:
    """A ``dead_letters`` row (without run_id and shard) for ``item``."""
    seq, kind = item[0], item[1]
    event_id = item[2] if isinstance(item[2], str) else None
    names = ("event_id", "event_time_us", "key", "payload") if kind == EVENT else (
        "event_id", "label", "label_time_us", "key")
    raw = raw_json({"kind": "event" if kind == EVENT else "label", **dict(zip(names, item[2:], strict=False))})
    return (seq, step, reason, source, event_id, raw)


def validate_batch(batch: Batch, task: str = "binary") -> Batch:
    """Keep the items that pass; move the others to ``batch.dead`` with their reason.

    ``task``: the run's (:mod:`lake.tasks`); a label that is not one of its labels is a dead letter.

    A source that checked its items in bulk (e.g. a replay from typed Delta
    columns) names the few it could not vouch for in ``batch.suspects``; only
    those are checked one by one.
    """
    suspects = batch.suspects
    if suspects is not None and not suspects:
        return batch  # the source vouched for every item (its columns stay columns)
    good = []
    dead = batch.dead
    for item in batch.items:
        if suspects is not None and item[0] not in suspects:
            good.append(item)
            continue
        kind = item[1]
        if kind == EVENT:
            reason = check_event(item)
        elif kind == LABEL:
            reason = check_label(item, task)
        else:
            reason = f"unknown item kind {kind!r}"
        if reason is None:
            good.append(item)
        else:
            dead.append(dead_letter(item, step="validate", reason=reason, source=batch.source))
    batch.items = good
    return batch
