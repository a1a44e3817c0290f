"""The columnar step for tabular payloads: numbers, booleans, categories and nulls, compiled.

The item path builds a dict per event with :class:`~dataflows.features.KeyedFeaturizer` and runs
River's ``NumericStandardScaler | LogisticRegression`` (``linear``) or ``GaussianNB``
(``naive-bayes``) on it. :class:`TabularStep` does that work on a batch of columns and gives *the
same floats*, bit for bit (``tests/test_tabular.py``):

- :class:`TabularLayout`: payload columns to features. Numbers and booleans as floats (nulls and
  NaN left out), strings (and ``categorical`` columns) one-hot ``"column=value"``, new categories
  registered as they come. What it cannot reproduce exactly (hashed text, timestamps, decimals,
  nested values, infinities) gets no layout: the batch takes the item path.
- :class:`FeatureSpace` numbers every feature name a run has seen (ids, never reused).
- The event rows (payload, time and per-key history features, in the dict's order) are written by
  the urls path's compiled featurizer (:func:`dataflows._kernels._featurize`) into an
  :class:`~dataflows.columnar.Arena`, where they wait for their labels.
- Each model as arrays over the ids (:class:`~dataflows.tabular_linear.LinearState`,
  :class:`~dataflows.tabular_nb.NBState`), converted to and from the River objects (``from_river``,
  ``to_river``): a declined batch continues on the same model; checkpoints pickle River objects.
  Their compiled loops (:mod:`dataflows._tabular_kernels`) predict every event and learn every
  label in item order with River's arithmetic, operation by operation.

>>> import polars as pl
>>> from dataflows.features import KeyedFeaturizer
>>> from dataflows.models import get_spec
>>> model = get_spec("linear").build(seed=0)
>>> step = TabularStep(KeyedFeaturizer(), [model])
>>> events = pl.DataFrame({"event_id": ["a", "b"], "event_time": [0, 60_000_000], "key": ["k", "k"],
...                        "amount": [3.5, None], "shop": ["x", "y"]})
>>> labels = pl.DataFrame({"event_id": ["a"], "label": [1]})
>>> out = step.process(kinds=np.array([0, 1, 0], np.int8), events=events, labels=labels)
>>> out.scores.round(4).tolist(), out.accepted.tolist(), sorted(step.pending)
([[0.5, 0.5012]], [0], ['b'])
>>> step.sync_models()  # the River pipeline now holds what the step learned
>>> model["LogisticRegression"].weights["shop=x"]
0.0025

Size: the layout, the feature space and the step share one contract on feature ids and item
order, read together (the models' states are in :mod:`dataflows.tabular_linear` and
:mod:`dataflows.tabular_nb`).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat
from typing import Any

import numpy as np
import pyarrow as pa

from dataflows.checkpoints import featurizer_state
from dataflows.columnar import Arena
from dataflows.tabular_linear import LinearState, supports
from dataflows.tabular_nb import NBState, supports_nb

__all__ = ["FeatureSpace", "LinearState", "NBState", "TabularLayout", "TabularResult", "TabularStep", "available",
           "model_state", "supports", "warm_up"]

EVENT, LABEL, SKIP = 0, 1, 2
TIME_FEATURES = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")
KEY_FEATURES = ("key_n", "key_gap", "key_rate", "key_recent")
_TIME_AT, _KEY_AT = 0, len(TIME_FEATURES)


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether the compiled loops load here (numba imports and compiles)."""
    try:
        from dataflows import _kernels, _tabular_kernels  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to load means: no tabular step
        return False
    return True


def warm_up() -> None:
    """Compile the step's loops into numba's cache (``__pycache__`` beside their sources) on a tiny batch of
    each model: a fresh checkout's first replay loads them (~0.04 s, :mod:`dataflows._numba_cache`) instead of
    compiling them (~3 s)."""
    import polars as pl

    from dataflows.features import KeyedFeaturizer
    from dataflows.models import get_spec

    step = TabularStep(KeyedFeaturizer(), [get_spec(name).build(seed=0) for name in ("linear", "naive-bayes")])
    events = pl.DataFrame({"event_id": ["a", "b", "c"], "event_time": [0, 60_000_000, 120_000_000],
                           "key": ["k", "k", "j"], "amount": [3.5, None, 1.0], "shop": ["x", "y", "x"]})
    step.process(kinds=np.array([0, 1, 0, 1, 0], np.int8), events=events,  # (both classes: every loop runs)
                 labels=pl.DataFrame({"event_id": ["a", "b"], "label": [1, 0]}))
    step.arena.compact(step.pending)


_FEW_ROWS = 256
"""String columns of batches up to this many rows are encoded value by value (in the order of the values: new
categories get ids in the order Arrow's dictionary encoding would give them), larger ones through Arrow."""


class FeatureSpace:
    """Feature name <-> id, for every name a run has seen; ids are never reused.

    The time features take ids 0-3 and the key features 4-7 (the compiled featurizer writes them
    as runs). A name holding ``=`` is a one-hot indicator, any other a number
    (:class:`~dataflows.transformers.NumericStandardScaler` draws the same line).

    >>> s = FeatureSpace()
    >>> s.id("amount"), s.id("shop=x"), s.id("amount"), s.names[9], bool(s.is_num[9])
    (8, 9, 8, 'shop=x', False)
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.is_num = np.zeros(64, np.bool_)
        self._arrow: pa.Array | None = None
        for name in (*TIME_FEATURES, *KEY_FEATURES):
            self.id(name)

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str) -> int:
        """The id of ``name``, registered when new."""
        f = self.index.get(name)
        if f is None:
            f = self.index[name] = len(self.names)
            self.names.append(name)
            if f >= self.is_num.size:
                grown = np.zeros(2 * self.is_num.size, np.bool_)
                grown[: self.is_num.size] = self.is_num
                self.is_num = grown
            self.is_num[f] = "=" not in name
        return f

    def ids(self, names: list[str]) -> np.ndarray:
        """The ids of ``names`` (int64), new ones registered in order.

        >>> s = FeatureSpace()
        >>> s.ids(["amount", "shop=x", "amount"]).tolist(), s.ids(["shop=x"]).tolist()
        ([8, 9, 8], [9])
        """
        try:
            return np.fromiter(map(self.index.__getitem__, names), np.int64, len(names))  # (all known: in C)
        except KeyError:
            return np.array([self.id(name) for name in names], np.int64)

    def arrow_names(self) -> pa.Array:
        """Every id's name as an Arrow string array (``take`` turns ids into names)."""
        arrow, n = self._arrow, len(self.names)
        if arrow is None or len(arrow) > n:
            self._arrow = pa.array(self.names, pa.string())
        elif len(arrow) < n:  # (names only grow: the new ones appended, not every name converted again)
            self._arrow = pa.concat_arrays([arrow, pa.array(self.names[len(arrow):], pa.string())])
        return self._arrow

    def __getstate__(self) -> dict[str, Any]:
        return {"names": self.names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
        for name in state["names"]:
            self.id(name)


@dataclass(frozen=True)
class TabularLayout:
    """The payload columns that make features, in the featurizer's order: ``(column, kind)`` with
    kind ``"num"`` (a float; nulls and NaN missing) or ``"cat"`` (one-hot; nulls missing).

    ``TabularLayout.of(featurizer, dtypes)`` is ``None`` where the item path must decide: a hashed
    text field, a type other than numbers, booleans and strings, a numeric column named like a
    derived feature or holding ``=``, a categorical column whose name holds ``=`` (its indicators
    could collide with another column's).

    >>> import polars as pl
    >>> from dataflows.features import KeyedFeaturizer
    >>> TabularLayout.of(KeyedFeaturizer(exclude=["id"]), {"id": pl.Int64, "n": pl.Int32, "c": pl.String})
    TabularLayout(entries=(('n', 'num'), ('c', 'cat')), max_category_length=64)
    >>> TabularLayout.of(KeyedFeaturizer(), {"when": pl.Datetime("us")}) is None
    True
    """

    entries: tuple[tuple[str, str], ...]
    max_category_length: int

    @classmethod
    def of(cls, featurizer: Any, dtypes: dict[str, Any]) -> TabularLayout | None:
        import polars as pl

        derived = set(TIME_FEATURES if featurizer.time_features else ()) | set(
            KEY_FEATURES if featurizer.key_features else ())
        entries: list[tuple[str, str]] = []
        for col, dtype in dtypes.items():
            if col in featurizer.exclude or dtype == pl.Null:
                continue  # (an all-null column makes no feature on either path)
            if col in featurizer.hash_fields:
                return None  # the urls path's business
            numeric = dtype.is_integer() or dtype.is_float() or dtype == pl.Boolean
            if numeric and col not in featurizer.categorical:
                if "=" in col or col in derived:
                    return None
                entries.append((col, "num"))
            elif numeric or dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
                if "=" in col:
                    return None
                entries.append((col, "cat"))
            else:  # Decimal, temporal, binary, nested: Python objects on the item path
                return None
        return cls(entries=tuple(entries), max_category_length=featurizer.max_category_length)

    @property
    def numeric(self) -> list[str]:
        return [c for c, k in self.entries if k == "num"]

    @property
    def categorical(self) -> list[str]:
        return [c for c, k in self.entries if k == "cat"]

    def encode(self, events: Any, space: FeatureSpace) -> tuple | None:
        """The events' payload as the compiled featurizer reads it: ``(tok_off, tok_f, dense,
        dense_f, layout_kind, layout_j)`` (one-hot ids per categorical column as CSR, numbers as a
        matrix with NaN for missing), or ``None`` for an infinite number (the item path decides).
        New categories are registered in ``space``."""
        import polars as pl

        n_ev = events.height
        num, cat = self.numeric, self.categorical
        dense = np.empty((n_ev, len(num)), np.float64)
        for j, col in enumerate(num):
            series = events.get_column(col)
            dense[:, j] = (series if series.dtype == pl.Float64 else series.cast(pl.Float64)).to_numpy()  # (nulls: NaN)
        if np.isinf(dense).any():
            return None
        dense_f = np.array([space.id(c) for c in num], np.int64)
        tok_off = np.zeros((max(len(cat), 1), n_ev + 1), np.int64)
        parts = [np.zeros(0, np.int64)]
        offset = 0
        cut = self.max_category_length
        for j, col in enumerate(cat):
            series = events.get_column(col)
            if series.dtype == pl.String and n_ev <= _FEW_ROWS:  # (a live batch: a dict look-up per value costs less)
                values = series.to_list()
                valid = np.fromiter((v is not None for v in values), np.bool_, n_ev)
                tok_off[j, 1:] = np.cumsum(valid) + offset
                tok_off[j, 0] = offset
                parts.append(np.fromiter((space.id(f"{col}={v[:cut]}") for v in values if v is not None), np.int64))
                offset += int(valid.sum())
                continue
            if series.dtype == pl.Categorical or isinstance(series.dtype, pl.Enum):
                series = series.cast(pl.String)
            enc = series.to_arrow()
            if isinstance(enc, pa.ChunkedArray):
                enc = enc.combine_chunks()
            enc = enc.dictionary_encode()
            ids = np.fromiter((space.id(f"{col}={_text(v)[:cut]}") for v in enc.dictionary.to_pylist()),
                              np.int64, len(enc.dictionary))
            valid = np.asarray(enc.indices.is_valid().to_numpy(zero_copy_only=False), np.bool_)
            codes = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            tok_off[j, 1:] = np.cumsum(valid) + offset
            tok_off[j, 0] = offset
            parts.append(ids[codes[valid]] if ids.size else np.zeros(0, np.int64))
            offset += int(valid.sum())
        kinds = np.array([0 if k == "cat" else 1 for _, k in self.entries], np.int64)
        js, n_cat, n_num = [], 0, 0
        for _, k in self.entries:
            if k == "cat":
                js.append(n_cat)
                n_cat += 1
            else:
                js.append(n_num)
                n_num += 1
        return tok_off, np.concatenate(parts), dense, dense_f, kinds, np.array(js, np.int64)


def _resolve_labels(pending: dict[str, Any], lb_ids: list[str], ev_ids: list[str], ev_items: np.ndarray,
                    lb_items: np.ndarray, arena: Arena, adopt: Callable[..., None]) -> tuple | None:
    """The batch's labels against the events waiting (``pending``; the batch's own events ``ev_ids``
    take the arena's next slots): ``(accepted, slots, dead, base)`` (indices of the labels learned,
    their events' slots, indices of the labels for no event or for one labelled before, the first slot
    of the batch's events), or ``None`` for a label ahead of its own event. Entries the item path left
    in ``pending`` are adopted into the arena (``adopt``) first.

    One dict look-up per label at C level; the loop in Python only where a batch holds an id twice.
    """
    n_lb = len(lb_ids)
    try:
        slot = np.fromiter(map(pending.get, lb_ids, repeat(-1)), np.int64, n_lb)
    except (TypeError, ValueError):  # entries the item path left (tuples): into the arena (their form only changes)
        for eid in lb_ids:
            entry = pending.get(eid)
            if entry is not None and type(entry) is not int:
                adopt(eid, *entry)
        slot = np.fromiter(map(pending.get, lb_ids, repeat(-1)), np.int64, n_lb)
    base = arena.n
    local = dict(zip(ev_ids, range(len(ev_ids)), strict=True))
    e = np.fromiter(map(local.get, lb_ids, repeat(-1)), np.int64, n_lb)
    own = e >= 0  # (an id is never both pending and in the batch: the caller declined that)
    dead_mask = (slot < 0) & ~own
    if len(set(lb_ids)) != n_lb:  # the second label of an id is dead, whatever the first was
        seen: set[str] = set()
        for j, eid in enumerate(lb_ids):
            if eid in seen:
                dead_mask[j] = True
            elif not dead_mask[j]:
                seen.add(eid)
    if (own & ~dead_mask).any() and (ev_items[e[own & ~dead_mask]] > lb_items[own & ~dead_mask]).any():
        return None
    slot[own] = base + e[own]
    acc = np.flatnonzero(~dead_mask)
    return acc, slot[acc], np.flatnonzero(dead_mask).tolist(), base


def _arrived(keys: list[str], first: np.ndarray) -> list[str]:
    """The ``keys`` with a ``first`` item (>= 0), in the order of their first items."""
    came = np.flatnonzero(first >= 0)
    return [keys[i] for i in came[np.argsort(first[came], kind="stable")].tolist()]


def _text(value: Any) -> str:
    return value if type(value) is str else str(value)


@dataclass
class TabularResult:
    """What :meth:`TabularStep.process` did with a batch.

    ``scores``: every model's score of every event (models x events), River's
    ``predict_proba_one(x)`` read as :func:`~dataflows.models.score_one` reads it; ``accepted``:
    indices (in the batch's labels) of the labels learned, in order, with ``label_scores`` (models x
    accepted: the scores their events got), ``label_event_times`` and ``label_keys`` (their events'
    times and keys); ``dead``: indices of labels for no pending event (unknown, or a second label);
    ``offsets``/``ids``/``values``: the events' feature rows (CSR in the featurizer's order;
    :meth:`TabularStep.names` turns ids into names).
    """

    scores: np.ndarray
    accepted: np.ndarray
    label_scores: np.ndarray
    label_event_times: np.ndarray
    dead: list[int]
    offsets: np.ndarray
    ids: np.ndarray
    values: np.ndarray
    label_keys: list[Any]


def model_state(model: Any, space: FeatureSpace) -> LinearState | NBState | None:
    """The array state of a model the step runs (the ``linear`` or ``naive-bayes`` spec), else ``None``."""
    if supports(model):
        return LinearState.from_river(model, space)
    if supports_nb(model):
        return NBState.from_river(model, space)
    return None


class TabularStep:
    """Featurize, predict and learn a batch of tabular columns, in item order, for several models.

    Holds the events that wait for their label (``pending``: event id -> row) and works on the
    featurizer given (its per-key history is read and written through its public methods) and on
    array states of the River models, written back by :meth:`sync_models` and read again by
    :meth:`reload_models` (after the item path changed the River objects).
    """

    def __init__(self, featurizer: Any, models: Sequence[Any]) -> None:
        if featurizer.hash_fields:
            raise ValueError(f"TabularStep takes no hashed text fields, got {sorted(featurizer.hash_fields)!r}")
        self.featurizer = featurizer
        self.models = list(models)
        self.space = FeatureSpace()
        states = [model_state(m, self.space) for m in self.models]
        if None in states:
            bad = next(m for m, s in zip(self.models, states, strict=True) if s is None)
            raise ValueError(f"TabularStep runs the 'linear' and 'naive-bayes' specs only, got {bad!r}")
        self.states: list[LinearState | NBState] = states  # type: ignore[assignment]
        self.arena = Arena(len(self.models))
        self.pending: dict[str, int] = {}
        self._layouts: dict[tuple, TabularLayout | None] = {}
        self._used = False  # whether a batch ran here

    # -- the River side -------------------------------------------------------------------
    def sync_models(self) -> None:
        """Write every model's state into its River pipeline (before a checkpoint, a snapshot or
        a batch on the item path)."""
        for model, state in zip(self.models, self.states, strict=True):
            state.to_river(model, self.space)
            if self._used:
                # The item path's pipeline has built its plan (a cache that is pickled) by now;
                # predicting on no features builds it and changes nothing else.
                model.predict_proba_one({})

    def reload_models(self, models: Sequence[Any] | None = None) -> None:
        """Read the River pipelines again (``models``: new objects, e.g. after a hot swap)."""
        if models is not None:
            self.models = list(models)
        states = [model_state(m, self.space) for m in self.models]
        if None in states:
            raise ValueError("a model is no longer one of the 'linear' and 'naive-bayes' specs")
        self.states = states  # type: ignore[assignment]

    def names(self) -> pa.Array:
        """Feature id -> name (``names().take(ids)``)."""
        return self.space.arrow_names()

    def pop_entry(self, event_id: str) -> tuple[dict[str, float], int, Any, list[float]] | None:
        """The pending entry ``(x, event_time_us, key, scores)`` of ``event_id`` as the item path
        keeps it (removed from ``pending``), or ``None``."""
        slot = self.pending.pop(event_id, None)
        if slot is None or type(slot) is not int:
            return slot  # (none, or an entry the item path left as it keeps them)
        fs, vs = self.arena.row(slot)
        names = self.space.names
        x = {names[f]: v for f, v in zip(fs.tolist(), vs.tolist(), strict=True)}
        return x, int(self.arena.a_t[slot]), self.arena.keys[slot], self.arena.scores[slot].tolist()

    def adopt(self, event_id: str, x: dict[str, float], event_time_us: int, key: Any, scores: Sequence[float]) -> None:
        """Take in an event the item path predicted (its features ``x`` wait for the label here)."""
        fs = [self.space.id(name) for name in x]
        self.pending[event_id] = self.arena.add_row(fs, list(x.values()), event_time_us, key, list(scores))

    def _undo(self, n_keys: int, n_rows: int, rows: np.ndarray, values: list[np.ndarray], totals: tuple[int, int],
              base: int, top: int, model_states: list, used: bool) -> None:
        """Put back what a batch changed before its models ran: the featurizer's histories (``values``
        of its history columns at ``rows``; its first ``n_keys`` keys and ``n_rows`` rows were there
        before), its label totals, the arena's rows from slot ``base`` and pool entry ``top`` on, the
        models' states."""
        f = self.featurizer
        columns = f.history_columns()
        for c, before in enumerate(values):
            columns[c][rows] = before
        del columns  # (views: the new keys' rows go next)
        f.trim_keys(n_keys, n_rows=n_rows)
        f.set_label_totals(*totals)
        arena = self.arena
        arena.n, arena.top = base, top
        del arena.keys[base:]
        self.states, self._used = model_states, used

    # -- the batch ------------------------------------------------------------------------
    def layout(self, dtypes: dict[str, Any]) -> TabularLayout | None:
        sig = tuple((c, str(t)) for c, t in dtypes.items())
        if sig not in self._layouts:
            self._layouts[sig] = TabularLayout.of(self.featurizer, dtypes)
        return self._layouts[sig]

    def process(self, *, kinds: np.ndarray, events: Any, labels: Any,
                checkpoint_after: Sequence[int] = (),
                on_checkpoint: Callable[..., None] | None = None,
                fresh_prior: Sequence[float | None] | None = None, rewind: bool = False) -> TabularResult | None:
        """Run a batch: ``kinds`` (0 event, 1 label per item, in order), ``events`` (a polars frame:
        ``event_id``, ``event_time`` in µs, ``key``, the payload columns) and ``labels``
        (``event_id``, ``label`` 0/1), both in item order.

        ``None``, with nothing changed, when the batch needs the item path: a payload without a
        layout or with an infinite number, an event id twice in the batch or already pending, a
        label ahead of its event, keys the featurizer would have to forget. (The caller rejects
        ids it has already labelled.) After the models learned ``k`` of the batch's accepted labels
        for each ``k`` in ``checkpoint_after``, the River pipelines are synced and
        ``on_checkpoint(k, j)`` is called (``j``: that label's index in ``labels``); with ``rewind``,
        ``on_checkpoint(k, j, state)``: ``state``, the featurizer's pickle as of that label.
        ``fresh_prior[m]``, when not ``None``, is what model ``m`` serves while it has learned
        nothing (the learner's prior): its scores of the events before the first label learned.

        ``pending`` may also hold entries ``(x, event_time_us, key, scores)`` the item path left
        (a dict shared with it): they are taken into the arena when their label comes.
        """
        from dataflows import _kernels

        schema = events.schema  # (a polars frame builds its schema anew at each read)
        layout = self.layout({c: t for c, t in schema.items() if c not in ("event_id", "event_time", "key")})
        if layout is None:
            return None
        kinds = np.array(kinds, np.int8)
        n_ev, n_lb = events.height, labels.height
        ev_items = np.flatnonzero(kinds == EVENT)
        lb_items = np.flatnonzero(kinds == LABEL)
        if ev_items.size != n_ev or lb_items.size != n_lb:
            raise ValueError(f"kinds name {ev_items.size} events and {lb_items.size} labels, "
                             f"the frames hold {n_ev} and {n_lb}")
        ev_ids = events.get_column("event_id").to_list()
        pending = self.pending
        if len(set(ev_ids)) != n_ev or not pending.keys().isdisjoint(ev_ids):
            return None
        encoded = layout.encode(events, self.space)
        if encoded is None:
            return None
        tok_off, tok_f, dense, dense_f, layout_kind, layout_j = encoded
        ev_keys = events.get_column("key").to_list()
        ev_t = events.get_column("event_time").to_numpy().astype(np.int64)
        # Labels: the pending slot of their event, or an event of this batch (before them).
        arena = self.arena
        lb_ids = labels.get_column("event_id").to_list()
        resolved = _resolve_labels(pending, lb_ids, ev_ids, ev_items, lb_items, arena, self.adopt)
        if resolved is None:
            return None  # a label ahead of its own event
        acc, lb_slot_a, dead, base = resolved
        accepted = acc.tolist()
        lb_slot = lb_slot_a.tolist()
        lb_y = ((labels.get_column("label").to_numpy() == 1).astype(np.int64)[acc] if acc.size  # (y == 1, as
                else np.zeros(0, np.int64))  # the item path reads a label)
        all_keys = arena.keys + ev_keys  # (slot -> key, the batch's events after the arena's)
        lb_keys = list(map(all_keys.__getitem__, lb_slot))
        # Keys: the compiled featurizer reads and writes the featurizer's own history columns by row;
        # keys new to it get rows (and places at the end of its key order) for the batch.
        f = self.featurizer
        n_keys0, n_rows0 = f.n_keys, f.n_rows
        new_keys: list[str] = []
        if f.key_features:
            ev_kid, lb_kid = f.key_rows(ev_keys, n_ev), f.key_rows(lb_keys, len(lb_keys))  # (-1: a new key)
            if (ev_kid < 0).any() or (lb_kid < 0).any():
                new_keys = f.unknown_keys(chain(ev_keys, lb_keys))
        else:
            ev_kid, lb_kid = np.zeros(n_ev, np.int64), np.zeros(len(lb_keys), np.int64)
        if new_keys and n_keys0 + len(new_keys) > f.max_keys:
            return None  # the featurizer would forget keys mid-batch: the item path knows when
        # -- from here on, state changes (undone where a model goes non-finite: see _undo) ----------
        if new_keys:
            f.add_blank_keys(new_keys)
            ev_kid, lb_kid = f.key_rows(ev_keys, n_ev), f.key_rows(lb_keys, len(lb_keys))
        new_rows = np.arange(n_rows0, n_rows0 + len(new_keys), dtype=np.int64)
        k_n, k_last, k_nlab, k_npos, k_rec = f.history_columns()
        touched = np.concatenate([ev_kid, lb_kid]) if f.key_features else np.zeros(0, np.int64)
        undo = (n_keys0, n_rows0, touched, [c[touched] for c in (k_n, k_last, k_nlab, k_npos, k_rec)],
                f.label_totals, base, arena.top, [copy.deepcopy(st) for st in self.states], self._used)
        self._used = self._used or kinds.size > 0
        for j in dead:
            kinds[lb_items[j]] = SKIP
        cuts = sorted(k for k in set(checkpoint_after) if 0 < k <= acc.size)
        n_rows = k_n.size
        k_hasrec = ~np.isnan(k_rec)
        k_present = np.ones(n_rows, np.bool_)
        k_present[new_rows] = False
        k_first = np.full(n_rows, -1, np.int64)
        glob = np.array(f.label_totals, np.int64)
        ev_pos = np.zeros(kinds.size, np.int64)
        ev_pos[ev_items] = np.arange(n_ev)
        lb_pos = np.zeros(kinds.size, np.int64)
        lb_pos[lb_items[acc]] = np.arange(acc.size)
        ev_slot = np.arange(base, base + n_ev, dtype=np.int64)
        per_event = dense.shape[1] + (4 if f.time_features else 0) + (4 if f.key_features else 0)
        arena.reserve(n_ev, int(tok_f.size) + n_ev * per_event)
        arena.keys.extend(ev_keys)
        b0 = arena.top
        # With `rewind`, each checkpoint also gets the featurizer's pickle as of its label: the compiled
        # featurizer stops there, the featurizer shows its keys known then (arrived) and is pickled.
        states_at: list[bytes] = []
        seg_a = 0
        for cut in [*(cuts if rewind else ()), None]:
            seg_b = kinds.size if cut is None else int(lb_items[acc[cut - 1]]) + 1
            arena.top = _kernels._featurize(
                kinds, seg_a, seg_b, ev_pos, lb_pos, tok_off, tok_f, dense, dense_f, layout_kind, layout_j,
                ev_t, ev_kid, ev_slot, lb_kid, lb_y,
                k_n, k_last, k_nlab, k_npos, k_rec, k_hasrec, k_present, k_first, glob,
                f.time_features, _TIME_AT, f.key_features, _KEY_AT, f.smoothing, f.recent_alpha, f.shared_prior,
                arena.a_off, arena.a_len, arena.p_f, arena.p_v, arena.top)
            if cut is not None:
                with f.as_of(n_keys0, _arrived(new_keys, k_first[new_rows]), (int(glob[0]), int(glob[1]))):
                    states_at.append(featurizer_state(f))
            seg_a = seg_b
        b1 = arena.top
        arena.a_t[base: base + n_ev] = ev_t
        arena.n += n_ev
        del k_n, k_last, k_nlab, k_npos, k_rec  # (views of the featurizer's columns)
        f.set_label_totals(int(glob[0]), int(glob[1]))
        # (keys known before keep their place; new ones in order of arrival)
        f.trim_keys(n_keys0, _arrived(new_keys, k_first[new_rows]))
        # Every model, in segments cut where the caller checkpoints.
        scores = np.zeros((len(self.states), n_ev), np.float64)
        longest = int(arena.a_len[lb_slot_a].max()) if acc.size else 0
        longest = max(longest, int(arena.a_len[base: base + n_ev].max()) if n_ev else 0)
        buf = np.empty(max(longest, 1), np.float64)
        for state in self.states:
            state.ensure(len(self.space))
            state.begin(n_ev)
        seg_a = 0
        at_cuts = []  # (cut, item after it, every model's state there): checkpointed once the batch is known good
        for cut in [*cuts, None]:
            seg_b = kinds.size if cut is None else int(lb_items[acc[cut - 1]]) + 1
            for m, state in enumerate(self.states):
                state.run(kinds, seg_a, seg_b, ev_pos, lb_pos, ev_slot, lb_slot_a, lb_y, arena, self.space.is_num,
                          buf, scores[m])
            if cut is not None:
                at_cuts.append((cut, seg_b, [copy.deepcopy(st) for st in self.states]))
            seg_a = seg_b
        for m, state in enumerate(self.states):
            state.finish(scores[m])
        for m, prior in enumerate(fresh_prior or ()):
            if prior is not None:  # a model that had learned nothing served the prior until its first label
                scores[m, : int(np.searchsorted(ev_items, lb_items[acc[0]])) if acc.size else n_ev] = prior
        if not (np.isfinite(scores).all() and all(st.finite() for st in self.states)):
            self._undo(*undo)
            return None  # the item path dead-letters what poisons a model (dataflows.guard), step by step
        final = self.states
        for q, (cut, _, states_there) in enumerate(at_cuts):
            self.states = states_there
            self.sync_models()
            if rewind:
                on_checkpoint(cut, int(acc[cut - 1]), states_at[q])
            elif on_checkpoint is not None:
                on_checkpoint(cut, int(acc[cut - 1]))
        self.states = final
        arena.scores[base: base + n_ev] = scores.T
        # Bookkeeping: the batch's events wait, the labelled ones leave.
        pending.update(zip(ev_ids, range(base, base + n_ev), strict=True))
        deque(map(pending.__delitem__, map(lb_ids.__getitem__, accepted)), maxlen=0)
        label_scores = arena.scores[lb_slot_a].T.copy() if acc.size else np.zeros((len(self.states), 0))
        label_event_times = arena.a_t[lb_slot_a].copy()
        offsets = np.empty(n_ev + 1, np.int64)
        offsets[:-1] = arena.a_off[base: base + n_ev] - b0
        offsets[-1] = b1 - b0
        result = TabularResult(scores=scores, accepted=acc, label_scores=label_scores,
                               label_event_times=label_event_times, dead=dead,
                               offsets=offsets, ids=arena.p_f[b0:b1].copy(),
                               values=arena.p_v[b0:b1].copy(), label_keys=lb_keys)
        if arena.n > 3 * len(pending) + 32_768:
            arena.compact(pending)
        return result

