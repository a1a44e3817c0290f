"""The columnar path of the predict/learn step: a batch as arrays, its sequential loops compiled.

The item-by-item step (:meth:`dataflows.learner.ShardLearner.process`) builds a dict
of features per event, looks every feature up in the model three times and turns
the dicts into Arrow: 42.9 µs of CPU per URL event, all of it Python (12.1 µs here;
BENCHMARKS.md, "The columnar path"). On streams of
hashed tokens (the ``urls`` setting) the same work fits arrays:

- :func:`tokenize` splits a batch of strings straight from the Arrow buffer,
  lowercases ASCII, and CRC-32s every token into its bucket (zlib's CRC-32, so the
  buckets equal :class:`~dataflows.features.KeyedFeaturizer`'s);
- :func:`featurize` walks the batch's events and labels in order: per-key history
  features from state arrays, time features, and every event's feature row written
  to an :class:`Arena` (CSR: feature ids and values) where it waits for its label;
- :func:`linear_step` predicts every event and learns every label, in item order,
  with the weights of a :class:`~dataflows.sparse.SparseLogisticRegression` viewed
  as an array.
- :func:`resolve_labels` and :func:`prune_point` find, changing nothing, which
  waiting event each label is for and where the featurizer would forget keys.

The columnar path gives *the same floats* as the dict path, bit for bit: every
feature row is summed in the dict's order, and ``math.exp``, ``math.sin`` and
``math.log1p`` are the C library's in both (``tests/test_columnar.py`` checks
features, scores, weights and the lake's tables against the dict path). A
:class:`Layout` decides, per run, whether a payload fits (hashed text fields,
numbers); a batch that does not (an odd character, a duplicate id, a label ahead
of its event, key-state pruning) takes the dict path, on the same state.

Feature ids: bucket ``b`` of the ``j``-th hashed field is ``j * n_buckets + b``;
named features (``url_len``, ``hour_sin``, ``key_n``, numbers) follow.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
_TWO_PI = 2.0 * math.pi
_MAX_Z = 35.0


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether the compiled loops load here (numba imports and compiles); if not, every batch takes
    the item path, which writes the same rows, and the reason is logged once."""
    try:
        from dataflows import _kernels  # noqa: F401
    except Exception as ex:  # noqa: BLE001 - any failure to load means: no columnar path
        logging.getLogger(__name__).warning("columnar path off, batches go item by item: %s: %s",
                                            type(ex).__name__, ex)
        return False
    return True


def _crc_table() -> np.ndarray:
    table = np.empty(256, np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


CRC_TABLE = _crc_table()


def tokenize(strings: pa.Array, n_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of each string as in :class:`~dataflows.features.KeyedFeaturizer` (lowercased, split on
    every character but a-z and 0-9, each token's CRC-32 modulo ``n_buckets``, first occurrences
    only), as CSR ``(offsets, buckets)``, plus each string's length in characters (-1 when null),
    its number of tokens (repeats counted) and whether it holds a character whose lowercase is
    ASCII (U+0130, U+212A: those rows need Python's ``str.lower``).

    >>> off, b, chars, ntok, odd = tokenize(pa.array(["A-b a", None]), 2**20)
    >>> from zlib import crc32
    >>> b.tolist() == [crc32(b"a") % 2**20, crc32(b"b") % 2**20], off.tolist(), chars.tolist(), ntok.tolist()
    (True, [0, 2, 2], [5, -1], [3, 0])
    """
    arr = strings.cast(pa.large_string()) if not pa.types.is_large_string(strings.type) else strings
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64, n + 1, arr.offset * 8) if n else np.zeros(1, np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = (np.ones(n, np.bool_) if arr.null_count == 0
             else np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), np.bool_))
    cap = int(offsets[-1] - offsets[0]) // 2 + n + 1  # a token takes a character and a separator
    tok_off = np.empty(n + 1, np.int64)
    tok_b = np.empty(cap, np.int64)
    n_chars = np.empty(n, np.int64)
    n_tok = np.empty(n, np.int64)
    odd = np.zeros(n, np.bool_)
    from dataflows import _kernels

    k = _kernels._tokenize(data, offsets, valid, n_buckets, CRC_TABLE, tok_off, tok_b, n_chars, n_tok, odd)
    return tok_off, tok_b[:k], n_chars, n_tok, odd


def log1p_counts(counts: np.ndarray) -> np.ndarray:
    """``math.log1p`` of each count (the C library's, like the dict path; numpy's may differ in the
    last bit), ``NaN`` where the count is negative (a null string)."""
    out = np.empty(counts.size, np.float64)
    from dataflows import _kernels

    _kernels._log1p_counts(counts, out)
    return out


class Layout:
    """How a run's events map to feature ids: which payload columns, in which order, as what.

    ``Layout.of(featurizer, columns, dtypes)`` returns ``None`` when a column is neither a
    hashed text field, a number nor excluded (one-hot categories take the dict path).
    """

    def __init__(self, *, hash_fields: list[str], entries: list[tuple[int, int, str]], named: list[str],
                 n_buckets: int, time_features: bool, key_features: bool) -> None:
        self.hash_fields = hash_fields
        # In dict order: (0, j, column) the tokens of hashed field j; (1, k, column) named feature k
        # (a hashed field's ``_len``/``_tokens`` or a numeric column).
        self.entries = entries
        self.named = named
        self.n_buckets = n_buckets
        self.time_features = time_features
        self.key_features = key_features
        self.base = len(hash_fields) * n_buckets
        self.named_index = {name: self.base + k for k, name in enumerate(named)}
        self.n_dense = sum(1 for kind, _, _ in entries if kind == 1)
        self.time_at = self.base + self.n_dense  # the time features' ids, then the key features'
        self.key_at = self.time_at + (4 if time_features else 0)
        self.size = self.base + len(named)
        if self.size >= 2**31:
            raise ValueError(f"{len(hash_fields)} hashed fields x {n_buckets} buckets: too many feature ids")

    @classmethod
    def of(cls, featurizer: Any, columns: list[str], dtypes: dict[str, Any]) -> Layout | None:
        import polars as pl

        hash_fields: list[str] = []
        entries: list[tuple[int, int, str]] = []
        named: list[str] = []
        for col in columns:
            if col in featurizer.exclude:
                continue
            dtype = dtypes[col]
            if col in featurizer.hash_fields:
                if dtype not in (pl.String, pl.Utf8):
                    return None
                entries.append((0, len(hash_fields), col))
                hash_fields.append(col)
                for suffix in ("_len", "_tokens"):
                    entries.append((1, len(named), col))
                    named.append(col + suffix)
            elif (dtype.is_integer() or dtype.is_float() or dtype == pl.Boolean) and col not in featurizer.categorical:
                # (not Decimal: its values reach the item path as decimal.Decimal, one-hot encoded)
                entries.append((1, len(named), col))
                named.append(col)
            else:
                return None
        if featurizer.time_features:
            named += ["hour_sin", "hour_cos", "dow_sin", "dow_cos"]
        if featurizer.key_features:
            named += ["key_n", "key_gap", "key_rate", "key_recent"]
        if len(set(named)) != len(named) or any("=" in n for n in named):
            return None  # a payload column named like a derived feature: the dict path decides
        return cls(hash_fields=hash_fields, entries=entries, named=named, n_buckets=featurizer.n_buckets,
                   time_features=featurizer.time_features, key_features=featurizer.key_features)

    def name_of(self, f: int) -> str:
        if f >= self.base:
            return self.named[f - self.base]
        j, b = divmod(f, self.n_buckets)
        return f"{self.hash_fields[j]}=#{b:x}"

    def index_of(self, name: Any) -> int | None:
        """The id of a feature name, or ``None`` when this layout cannot produce it."""
        f = self.named_index.get(name)
        if f is not None or not isinstance(name, str):
            return f
        field, sep, hexpart = name.partition("=#")
        if not sep or field not in self.hash_fields or not hexpart:
            return None
        try:
            b = int(hexpart, 16)
        except ValueError:
            return None
        if not 0 <= b < self.n_buckets or f"{b:x}" != hexpart:
            return None
        return self.hash_fields.index(field) * self.n_buckets + b

    def names(self) -> pa.Array:
        """Every feature id's name, as an Arrow string array (``take`` turns ids into names)."""
        parts = [_bucket_names(f, self.n_buckets) for f in self.hash_fields]
        parts.append(pa.array(self.named, pa.string()))
        return pa.concat_arrays(parts)


@lru_cache(maxsize=8)
def _bucket_names(field: str, n_buckets: int) -> pa.Array:
    return pa.array([f"{field}=#{b:x}" for b in range(n_buckets)], pa.string())


class Arena:
    """Feature rows of events that wait for their label: CSR in growable arrays, one slot per event.

    A slot holds the row's offset and length in the pool, the event time, key and every model's
    score. Slots are handed out in order; :meth:`compact` keeps the live ones (renumbered).
    """

    def __init__(self, n_models: int) -> None:
        self.n_models = n_models
        self.n = 0  # slots handed out
        self.top = 0  # pool entries used
        self.a_off = np.zeros(1024, np.int64)
        self.a_len = np.zeros(1024, np.int64)
        self.a_t = np.zeros(1024, np.int64)
        self.scores = np.zeros((1024, n_models), np.float64)
        self.keys: list[str] = []
        self.p_f = np.zeros(16_384, np.int32)  # feature ids (Layout keeps them below 2**31)
        self.p_v = np.zeros(16_384, np.float64)

    def reserve(self, slots: int, entries: int) -> None:
        need = self.n + slots
        if need > self.a_off.size:
            cap = max(need, 2 * self.a_off.size)
            for name in ("a_off", "a_len", "a_t"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
            scores = np.zeros((cap, self.n_models), np.float64)
            scores[: self.n] = self.scores[: self.n]
            self.scores = scores
        need = self.top + entries
        if need > self.p_f.size:
            cap = max(need, 2 * self.p_f.size)
            p_f = np.zeros(cap, np.int32)
            p_v = np.zeros(cap, np.float64)
            p_f[: self.top] = self.p_f[: self.top]
            p_v[: self.top] = self.p_v[: self.top]
            self.p_f, self.p_v = p_f, p_v

    def row(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        a = int(self.a_off[slot])
        b = a + int(self.a_len[slot])
        return self.p_f[a:b], self.p_v[a:b]

    def add_row(self, fs: list[int], vs: list[float], t: int, key: str, scores: list[float]) -> int:
        """One row from Python (an event the dict path took in); returns its slot."""
        self.reserve(1, len(fs))
        slot = self.n
        self.a_off[slot] = self.top
        self.a_len[slot] = len(fs)
        self.p_f[self.top: self.top + len(fs)] = fs
        self.p_v[self.top: self.top + len(fs)] = vs
        self.top += len(fs)
        self.a_t[slot] = t
        self.scores[slot] = scores
        self.keys.append(key)
        self.n += 1
        return slot

    def compact(self, pending: dict[str, Any]) -> None:
        """Keep the slots ``pending`` still refers to (int values), renumbered in order."""
        values = list(pending.values())
        if set(map(type, values)) == {int}:
            live_ids = list(pending)
            old = np.array(values, np.int64)
        else:  # entries of the item-by-item path hold tuples
            live_ids = [eid for eid, v in pending.items() if type(v) is int]
            old = np.fromiter((pending[eid] for eid in live_ids), np.int64, len(live_ids))
        from dataflows import _kernels

        order = np.argsort(old, kind="stable")
        old = old[order]
        entries = int(self.a_len[old].sum()) if old.size else 0
        p_f = np.zeros(max(16_384, 2 * entries), np.int32)
        p_v = np.zeros(p_f.size, np.float64)
        new_off = np.zeros(old.size, np.int64)
        top = _kernels._gather(self.a_off, self.a_len, old, self.p_f, self.p_v, p_f, p_v, new_off) if old.size else 0
        cap = max(1024, 2 * old.size)
        a_len = np.zeros(cap, np.int64)
        a_len[: old.size] = self.a_len[old]
        a_t = np.zeros(cap, np.int64)
        a_t[: old.size] = self.a_t[old]
        scores = np.zeros((cap, self.n_models), np.float64)
        scores[: old.size] = self.scores[old]
        a_off = np.zeros(cap, np.int64)
        a_off[: old.size] = new_off
        keys = self.keys
        self.keys = list(itemgetter(*old.tolist())(keys)) if old.size > 1 else [keys[s] for s in old.tolist()]
        self.a_off, self.a_len, self.a_t, self.scores, self.p_f, self.p_v = a_off, a_len, a_t, scores, p_f, p_v
        self.n, self.top = int(old.size), int(top)
        pending.update(zip(itemgetter(*order.tolist())(live_ids) if order.size > 1 else
                           [live_ids[k] for k in order.tolist()], range(old.size), strict=True))

    def __getstate__(self) -> dict[str, Any]:
        n, top = self.n, self.top
        return {"n_models": self.n_models, "n": n, "top": top, "a_off": self.a_off[:n].copy(),
                "a_len": self.a_len[:n].copy(), "a_t": self.a_t[:n].copy(), "scores": self.scores[:n].copy(),
                "keys": self.keys, "p_f": self.p_f[:top].copy(), "p_v": self.p_v[:top].copy()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.reserve(1024, 16_384)


_INT_OR_NONE = {int, type(None)}


def resolve_labels(pending: dict[str, Any], layout: Layout, ev_ids: list[str], lb_ids: list[str],
                   ev_items: np.ndarray, lb_items: np.ndarray) -> tuple | None:
    """Which pending event (or event of this batch) each label is for, in order, changing nothing:
    ``(accepted label indices, their arena slots or -1 - event index, dead label indices, pending
    entries of the item path to convert, ids labelled)``; ``None`` when the item path must decide
    (a label ahead of its own event; a pending entry with features this layout does not make)."""
    n_ev, n_lb = len(ev_ids), len(lb_ids)
    local = dict(zip(ev_ids, range(-1, -n_ev - 1, -1), strict=True))  # event of this batch: -1 - index
    done: set[str] = set()
    acc_j: list[int] = []  # accepted labels (index in the batch's labels)
    acc_ref: list[int] = []  # their arena slot, or -1 - index of an event of this batch
    dead_j: list[int] = []
    convert: list[tuple[int, list[int], tuple]] = []  # (position in acc, feature ids, item-path entry)
    pget, lget = pending.get, local.get
    refs = list(map(pget, lb_ids))
    if set(map(type, refs)) <= _INT_OR_NONE and len(set(lb_ids)) == n_lb:
        # The common case: every label once, for an event the columnar path took in.
        for j in [j for j, r in enumerate(refs) if r is None]:
            e = lget(lb_ids[j])
            if e is None:
                dead_j.append(j)
            elif ev_items[-1 - e] > lb_items[j]:
                return None  # a label ahead of its own event in the batch
            else:
                refs[j] = e
        if dead_j:
            gone = set(dead_j)
            acc_j = [j for j in range(n_lb) if j not in gone]
            acc_ref = [refs[j] for j in acc_j]
        else:
            acc_j, acc_ref = list(range(n_lb)), refs
    else:
        for j, eid in enumerate(lb_ids):
            ref = pget(eid)
            if ref is None:
                ref = lget(eid)
                if ref is None or eid in done:
                    dead_j.append(j)
                    continue
                if ev_items[-1 - ref] > lb_items[j]:
                    return None  # a label ahead of its own event in the batch
            elif eid in done:
                dead_j.append(j)
                continue
            elif type(ref) is not int:
                fs = [layout.index_of(k) for k in ref[0]]
                if None in fs:
                    return None  # features this layout does not make: item by item
                convert.append((len(acc_j), fs, ref))
                ref = 0
            done.add(eid)
            acc_j.append(j)
            acc_ref.append(ref)
    return acc_j, acc_ref, dead_j, convert, done


def prune_point(at: np.ndarray, key_at: np.ndarray, by_event: np.ndarray, present: np.ndarray, start: int,
                n_keys: int, max_keys: int) -> int | None:
    """The position of the first item from ``start`` on after which the featurizer forgets keys: an
    event whose key is new when the featurizer already holds ``max_keys`` keys (labels add keys
    without forgetting). ``at``: item positions in order; ``key_at``: their key ids; ``present``:
    which key ids the featurizer holds now."""
    room = max_keys - n_keys
    sel = at >= start
    keys = key_at[sel]
    new = ~present[keys]
    if int(new.sum()) <= room:  # (an upper bound of the keys the segment adds)
        return None
    positions, events = at[sel][new], by_event[sel][new]
    _, first = np.unique(keys[new], return_index=True)
    first.sort()  # each new key's first item, in order
    count = np.arange(1, first.size + 1)
    over = np.flatnonzero((count > room) & events[first])
    return int(positions[first[over[0]]]) if over.size else None
