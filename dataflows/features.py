"""Featurizers: raw event dicts in, dicts of floats out (River's dict-in protocol).

:class:`KeyedFeaturizer` keeps state per entity key, all of it known at
prediction time: how many events the key has had, the time since its last
event, and the rate of positive labels among its labels that have *arrived*.

>>> f = KeyedFeaturizer(time_features=False)
>>> x = {"distance": 1400, "carrier": "UA", "late": None}
>>> f.transform_one(x, key="UA", event_time_us=0)
{'distance': 1400.0, 'carrier=UA': 1.0, 'key_n': 0.0, 'key_gap': 0.0, 'key_rate': 0.5, 'key_recent': 0.5}
>>> f.learn_one(x, key="UA", event_time_us=0)
>>> f.learn_label(key="UA", y=True)
>>> f.transform_one(x, key="UA", event_time_us=60_000_000)["key_n"]
0.6931471805599453
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import filterfalse, islice, repeat
from sys import intern as _intern
from typing import Any
from zlib import crc32

import numpy as np

# Token characters are a-z and 0-9 (after lowercasing); every other byte separates tokens.
# bytes.translate + split is ~5x faster than re.findall and gives the same tokens.
_SEPARATE = bytes(c if (48 <= c <= 57 or 97 <= c <= 122) else 32 for c in range(256))
_SEP = "\x00"
_TOKEN_CACHE = 1 << 18  # memoised token -> feature name entries per hashed field
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
_TWO_PI = 2.0 * math.pi


class KeyedFeaturizer:
    """Event fields plus per-key history, as River features.

    Numbers (and booleans) pass through as floats; strings become one-hot
    indicators ``"column=value"`` (so unseen categories are simply new
    features); ``None`` and NaN are missing and left out. Fields named in
    ``exclude`` are dropped; fields in ``categorical`` are one-hot even when
    numeric.

    Parameters
    ----------
    exclude
        Payload fields never used as features.
    categorical
        Numeric fields to treat as categories.
    time_features
        Add the hour of day and day of week (UTC) of the event as sin/cos pairs.
    key_features
        Add the per-key history features ``key_n``, ``key_gap``, ``key_rate``, ``key_recent``.
    smoothing
        Weight of the global positive rate in ``key_rate`` (additive smoothing).
    recent_alpha
        Weight of the newest label in the per-key moving average ``key_recent``.
    max_category_length
        Longer strings are cut to this length before one-hot encoding.
    hash_fields
        Text fields (e.g. a URL) split into tokens, each token hashed (CRC-32, the
        same in every process) into one of ``n_buckets`` indicators
        ``"field=#bucket"``, plus ``field_len`` and ``field_tokens``. Memory stays
        bounded however many distinct tokens the stream brings.
    n_buckets
        Size of the hashing space.
    max_keys
        Keys with history kept at most; past it the keys idle longest are forgotten
        (a forgotten key starts afresh), so unbounded key spaces (hosts, users) keep
        memory and snapshot size bounded.
    shared_prior
        Smooth ``key_rate`` (and start ``key_recent``) towards the positive rate of all
        the labels this featurizer has seen; with ``False`` towards 0.5, so a key's
        features depend on its own events only (per-key runs: the same features however
        the keys are spread over shards).
    """

    def __init__(
        self,
        *,
        exclude: Iterable[str] = (),
        categorical: Iterable[str] = (),
        time_features: bool = True,
        key_features: bool = True,
        smoothing: float = 20.0,
        recent_alpha: float = 0.05,
        max_category_length: int = 64,
        hash_fields: Iterable[str] = (),
        n_buckets: int = 2**20,
        max_keys: int = 200_000,
        shared_prior: bool = True,
    ) -> None:
        if isinstance(exclude, str) or isinstance(categorical, str):
            raise TypeError("exclude and categorical must be collections of names, not a string")
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing!r}")
        if not 0.0 < recent_alpha <= 1.0:
            raise ValueError(f"recent_alpha must be in (0, 1], got {recent_alpha!r}")
        if isinstance(hash_fields, str):
            raise TypeError("hash_fields must be a collection of names, not a string")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        if n_buckets < 2:
            raise ValueError(f"n_buckets must be >= 2, got {n_buckets!r}")
        if max_category_length < 1:
            raise ValueError(f"max_category_length must be >= 1, got {max_category_length!r}")
        self.exclude = frozenset(exclude)
        self.categorical = frozenset(categorical)
        self.time_features = time_features
        self.key_features = key_features
        self.smoothing = float(smoothing)
        self.recent_alpha = float(recent_alpha)
        self.max_category_length = int(max_category_length)
        self.hash_fields = frozenset(hash_fields)
        self.n_buckets = int(n_buckets)
        self.max_keys = int(max_keys)
        self.shared_prior = bool(shared_prior)
        self.keys_forgotten = 0
        # key -> its row in the history columns (in the order the keys came: pickles and pruning read it)
        self._keys: dict[str, int] = {}
        self._n_labels = 0
        self._n_positive = 0
        self._token_names: dict[str, dict[bytes, str]] = {}
        self._set_columns(*_blank_columns())

    @property
    def n_keys(self) -> int:
        """Keys with state."""
        return len(self._keys)

    @property
    def n_rows(self) -> int:
        """Rows of :meth:`history_columns` (those of the keys with state, and some of forgotten keys)."""
        return len(self._n)

    def transform_one(self, x: dict[str, Any], *, key: str, event_time_us: int) -> dict[str, float]:
        """Features of one event; reads state, never changes it, never mutates ``x``."""
        out: dict[str, float] = {}
        exclude, categorical, hashed = self.exclude, self.categorical, self.hash_fields
        for name, value in x.items():
            if value is None or name in exclude:
                continue
            if name in hashed:
                self._hash_tokens(name, value, out)
                continue
            kind = type(value)
            if (kind is float or kind is int or kind is bool) and name not in categorical:
                if value != value:  # NaN is missing
                    continue
                out[name] = float(value)
            else:
                text = value if kind is str else str(value)
                if len(text) > self.max_category_length:
                    text = text[: self.max_category_length]
                # (interned: the events waiting for their labels, and the rows of a snapshot, share one string
                # per indicator, which a pickle writes once, not once per event: BENCHMARKS.md, issue 19)
                out[_intern(f"{name}={text}")] = 1.0
        if self.time_features:
            hour = (event_time_us % _US_PER_DAY) / _US_PER_HOUR
            # 1970-01-01 was a Thursday: shift so Monday is day 0.
            day = ((event_time_us // _US_PER_DAY) + 3) % 7
            out["hour_sin"] = math.sin(_TWO_PI * hour / 24.0)
            out["hour_cos"] = math.cos(_TWO_PI * hour / 24.0)
            out["dow_sin"] = math.sin(_TWO_PI * day / 7.0)
            out["dow_cos"] = math.cos(_TWO_PI * day / 7.0)
        if self.key_features:
            prior = (self._n_positive + 1.0) / (self._n_labels + 2.0) if self.shared_prior else 0.5
            row = self._keys.get(key)
            if row is None:
                out["key_n"] = 0.0
                out["key_gap"] = 0.0
                out["key_rate"] = prior
                out["key_recent"] = prior
            else:
                gap = max(0, event_time_us - self._last[row]) / 1_000_000.0
                out["key_n"] = math.log1p(self._n[row])
                out["key_gap"] = math.log1p(gap)
                denom = self._n_lab[row] + self.smoothing
                out["key_rate"] = (self._n_pos[row] + self.smoothing * prior) / denom if denom else prior
                recent = self._recent[row]
                out["key_recent"] = prior if recent != recent else recent  # (NaN: no label yet)
        return out

    def _hash_tokens(self, name: str, value: Any, out: dict[str, float]) -> None:
        text = value if type(value) is str else str(value)
        tokens = text.lower().encode().translate(_SEPARATE).split()
        # token -> feature name, memoised: frequent tokens (hosts, words, TLDs) skip the
        # CRC and the formatting. Bounded (cleared when full) and not part of the state.
        cache = self._token_names.get(name)
        if cache is None:
            cache = self._token_names[name] = {}
        get = cache.get
        for token in tokens:
            feature = get(token)
            if feature is None:
                feature = f"{name}=#{crc32(token) % self.n_buckets:x}"
                if len(cache) >= _TOKEN_CACHE:
                    cache.clear()
                cache[token] = feature
            out[feature] = 1.0
        out[name + "_len"] = math.log1p(len(text))
        out[name + "_tokens"] = math.log1p(len(tokens))

    # -- the per-key histories: a key -> row dict over six columns ---------------------------------
    # array.array columns: the item path reads and writes single values at about list speed, and the
    # columnar steps see them as numpy arrays without a copy (history_columns). A recent rate of NaN
    # is none yet. Rows of forgotten keys stay until compaction (more dead rows than live ones).
    def _set_columns(self, n: array, last: array, n_lab: array, n_pos: array, recent: array) -> None:
        self._n, self._last, self._n_lab, self._n_pos, self._recent = n, last, n_lab, n_pos, recent

    def _columns(self) -> tuple[array, ...]:
        return self._n, self._last, self._n_lab, self._n_pos, self._recent

    def _add_row(self, key: str, n: int, last: int, n_lab: int, n_pos: int, recent: float | None) -> int:
        row = len(self._n)
        values = (n, last, n_lab, n_pos, math.nan if recent is None else recent)
        try:
            for col, v in zip(self._columns(), values, strict=True):
                col.append(v)
        except BufferError:  # a numpy view of the columns is still alive somewhere: grow copies
            self._set_columns(*(c[:row] for c in self._columns()))
            return self._add_row(key, n, last, n_lab, n_pos, recent)
        self._keys[key] = row
        return row

    def _write_row(self, row: int, state: Sequence[Any]) -> None:
        n, last, n_lab, n_pos, recent = state
        self._n[row], self._last[row], self._n_lab[row], self._n_pos[row] = n, last, n_lab, n_pos
        self._recent[row] = math.nan if recent is None else recent

    def _row(self, row: int) -> list[Any]:
        recent = self._recent[row]
        return [self._n[row], self._last[row], self._n_lab[row], self._n_pos[row], None if recent != recent else recent]

    def _rows_in_order(self, keys: dict[str, int]) -> np.ndarray:
        return np.fromiter(keys.values(), np.intp, len(keys))

    def _compact_if_sparse(self) -> None:
        """Rows in key order, dead ones dropped, once they outnumber the live ones."""
        n_rows, keys = len(self._n), self._keys
        if n_rows <= 2 * len(keys) + 1024:
            return
        rows = self._rows_in_order(keys)
        self._set_columns(*(array(c.typecode, np.frombuffer(c, _DTYPE[c.typecode])[rows].tobytes())
                            for c in self._columns()))
        self._keys = dict(zip(keys, range(len(keys)), strict=True))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in _COLUMN_ATTRS:  # (they travel in "_keys", as they did when they were the dict's lists)
            del state[name]
        state["_token_names"] = {}  # a cache: rebuilt on use, kept out of snapshots
        for name in ("exclude", "categorical", "hash_fields"):  # sorted: the same bytes for the same state
            state[name] = tuple(sorted(state[name]))
        # Per-key state goes as columns (one string of keys, arrays of numbers): recovery
        # snapshots of 200k keys take milliseconds, not the per-object pickling of lists.
        keys = self._keys
        try:
            names = _SEP.join(keys)
        except TypeError:  # a key that is not a string: a dict of lists
            state["_keys"] = {k: self._row(r) for k, r in keys.items()}
            return state
        if names.count(_SEP) != max(0, len(keys) - 1):
            state["_keys"] = {k: self._row(r) for k, r in keys.items()}
            return state
        rows = self._rows_in_order(keys)
        n, last, n_lab, n_pos, recent = (np.frombuffer(c, _DTYPE[c.typecode])[rows] for c in self._columns())
        recent[np.isnan(recent)] = math.nan  # (one NaN, as the columns always held)
        state["_keys"] = ("columns", names, n.tobytes(), last.tobytes(), n_lab.tobytes(), n_pos.tobytes(),
                          recent.tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_token_names", {})  # pickled before the cache existed
        state.setdefault("shared_prior", True)  # pickled before the setting existed
        for name in ("exclude", "categorical", "hash_fields"):
            state[name] = frozenset(state.get(name, ()))
        packed = state["_keys"]
        if isinstance(packed, tuple):  # columns
            _, names, *cols, recent = packed
            keys = names.split(_SEP) if names else []
            columns = (*(array("q", c) for c in cols), array("d", recent))
        else:  # a dict of lists: [n_events, last_event_time_us, n_labels, n_positive, recent_rate]
            keys = list(packed)
            rows = list(packed.values())
            columns = (*(array("q", [r[i] for r in rows]) for i in range(4)),
                       array("d", [math.nan if r[4] is None else r[4] for r in rows]))
        state["_keys"] = dict(zip(keys, range(len(keys)), strict=True))
        self.__dict__.update(state)
        self._set_columns(*columns)

    def learn_one(self, x: dict[str, Any], *, key: str, event_time_us: int) -> None:
        """Record that ``key`` had an event at ``event_time_us``."""
        if not self.key_features:
            return
        row = self._keys.get(key)
        if row is None:
            self._add_row(key, 1, event_time_us, 0, 0, None)
            if len(self._keys) > self.max_keys:
                self.prune()
        else:
            self._n[row] += 1
            last = self._last
            if event_time_us > last[row]:
                last[row] = event_time_us

    def learn_label(self, *, key: str, y: bool) -> None:
        """Record a label that arrived for an event of ``key``."""
        self._n_labels += 1
        self._n_positive += bool(y)
        if not self.key_features:
            return
        row = self._keys.get(key)
        if row is None:
            row = self._add_row(key, 0, 0, 0, 0, None)
        self._n_lab[row] += 1
        target = 0.0
        if y:
            self._n_pos[row] += 1
            target = 1.0
        recent = self._recent
        r = recent[row]
        recent[row] = target if r != r else r + self.recent_alpha * (target - r)

    def prune(self) -> None:
        """Forget the keys idle longest, down to 80% of ``max_keys`` (amortised O(log n) per key):
        what :meth:`learn_one` does when a new key makes more than ``max_keys``."""
        keep = int(self.max_keys * 0.8)
        keys = self._keys
        # The keys idle longest (ties: the oldest first, as a stable sort of the items by time would).
        last = np.frombuffer(self._last, np.int64)[self._rows_in_order(keys)]
        drop = np.argsort(last, kind="stable")[: len(keys) - keep]
        names = list(keys)
        self.keys_forgotten += self.forget_keys([names[i] for i in drop.tolist()])

    # -- per-key state as plain values (an online feature store holds it between events) ----
    def key_state(self, key: str) -> tuple[int, int, int, int, float | None] | None:
        """``(n_events, last_event_time_us, n_labels, n_positive, recent_rate)`` of ``key``, or ``None``."""
        row = self._keys.get(key)
        return None if row is None else tuple(self._row(row))

    def set_key_state(self, key: str, state: tuple[int, int, int, int, float | None] | None) -> None:
        """Give ``key`` the history ``state`` (as :meth:`key_state` returns it); ``None`` forgets the key."""
        if state is None:
            self.forget_keys((key,))
            return
        row = self._keys.get(key)
        if row is None:
            self._add_row(key, *state)
        else:
            self._write_row(row, state)

    def key_states(self, keys: Iterable[str]) -> list[list[Any] | None]:
        """The histories of ``keys`` in bulk, as :meth:`key_state` gives them (``None``: an unknown key),
        as lists (copies: change the featurizer through :meth:`set_key_states`)."""
        keys = keys if isinstance(keys, list) else list(keys)
        if len(keys) < _BULK:
            get, row_of = self._keys.get, self._row
            return [None if (r := get(k)) is None else row_of(r) for k in keys]
        rows = self.key_rows(keys, len(keys))
        known = rows >= 0
        every = bool(known.all())
        at = rows if every else rows[known]
        n, last, n_lab, n_pos, recent = (np.frombuffer(c, _DTYPE[c.typecode])[at].tolist() for c in self._columns())
        found = list(map(list, zip(n, last, n_lab, n_pos, [None if r != r else r for r in recent], strict=True)))
        if every:
            return found
        out: list[list[Any] | None] = [None] * len(keys)
        for i, st in zip(np.flatnonzero(known).tolist(), found, strict=True):
            out[i] = st
        return out

    def set_key_states(self, keys: Iterable[str], states: Iterable[Sequence[Any]]) -> None:
        """:meth:`set_key_state` in bulk; keys new to the featurizer are added in the order given."""
        keys, states = list(keys), list(states)
        if len(keys) != len(states):
            raise ValueError(f"got {len(keys)} keys and {len(states)} states")
        rows = self.key_rows(keys, len(keys)) if len(keys) >= _BULK else None
        if rows is None or len(set(keys)) != len(keys):
            get = self._keys.get
            for k, st in zip(keys, states, strict=True):
                row = get(k)
                if row is None:
                    self._add_row(k, *st)
                else:
                    self._write_row(row, st)
            return
        n, last, n_lab, n_pos, recent = zip(*states, strict=True)
        recent = [math.nan if r is None else r for r in recent]
        known = rows >= 0
        if known.all():  # (all known: written in place, column by column)
            for col, values in zip(self.history_columns(), (n, last, n_lab, n_pos, recent), strict=True):
                col[rows] = values
            return
        if not known.any():  # (all new: appended, column by column)
            r0 = len(self._n)
            for col, values in zip(self._columns(), (n, last, n_lab, n_pos, recent), strict=True):
                col.extend(values)
            self._keys.update(zip(keys, range(r0, r0 + len(keys)), strict=True))
            return
        new = ~known  # (some of each: the known ones, then the new ones in order)
        self.set_key_states([k for k, w in zip(keys, known.tolist(), strict=True) if w],
                            [st for st, w in zip(states, known.tolist(), strict=True) if w])
        self.set_key_states([k for k, w in zip(keys, new.tolist(), strict=True) if w],
                            [st for st, w in zip(states, new.tolist(), strict=True) if w])

    # -- the histories as columns, for the compiled featurizer of the columnar steps -------------
    def unknown_keys(self, keys: Iterable[str]) -> list[str]:
        """The keys of ``keys`` without history here, once each, in order of first appearance."""
        return list(dict.fromkeys(filterfalse(self._keys.__contains__, keys)))

    def add_blank_keys(self, keys: Iterable[str]) -> None:
        """Give each of ``keys`` (all unknown here) a row of zeros, at the end of the key order."""
        for k in keys:
            self._add_row(k, 0, 0, 0, 0, None)

    def key_rows(self, keys: Iterable[str], n: int = -1) -> np.ndarray:
        """The rows of ``keys`` in :meth:`history_columns`, -1 for a key without history (``n``: how
        many keys, if known)."""
        return np.fromiter(map(self._keys.get, keys, repeat(-1)), np.int64, n)

    def history_columns(self) -> tuple[np.ndarray, ...]:
        """The histories as writable numpy views of the featurizer's own columns, by row:
        ``(n_events, last_event_time_us, n_labels, n_positive, recent_rate)`` (int64 x 4, float64;
        a recent rate of NaN: no label yet). Valid while no row is added or removed: drop them before."""
        return tuple(np.frombuffer(c, _DTYPE[c.typecode]) if len(c) else np.zeros(0, _DTYPE[c.typecode])
                     for c in self._columns())

    def trim_keys(self, n_keys: int, then: Sequence[str] = (), *, n_rows: int | None = None) -> None:
        """Keep the first ``n_keys`` keys, then the later keys ``then`` in that order, and forget the
        other keys after the first ``n_keys``; ``n_rows``: the rows from it on belong to forgotten keys
        only (they are dropped). Rows stay where they are (no compaction)."""
        keys = self._keys
        tail = dict(keys.popitem() for _ in range(len(keys) - n_keys))
        keys.update(zip(then, map(tail.__getitem__, then), strict=True))
        if n_rows is not None:
            for col in self._columns():
                try:
                    del col[n_rows:]
                except BufferError:  # a view still alive: shrunk copies
                    self._set_columns(*(c[:n_rows] for c in self._columns()))
                    break

    @contextmanager
    def as_of(self, n_keys: int, then: Sequence[str], label_totals: tuple[int, int]) -> Iterator[KeyedFeaturizer]:
        """The featurizer as if it held only its first ``n_keys`` keys, then ``then`` (later keys, in
        that order), with ``label_totals`` (e.g. to pickle the state at a checkpoint inside a batch);
        as it was again on leaving."""
        keys, totals = self._keys, (self._n_labels, self._n_positive)
        view = dict(islice(keys.items(), n_keys))
        view.update(zip(then, map(keys.__getitem__, then), strict=True))
        self._keys = view
        self._n_labels, self._n_positive = label_totals
        try:
            yield self
        finally:
            self._keys = keys
            self._n_labels, self._n_positive = totals

    @property
    def label_totals(self) -> tuple[int, int]:
        """``(labels, positive labels)`` seen over all keys (the shared prior of ``key_rate``)."""
        return self._n_labels, self._n_positive

    def set_label_totals(self, n_labels: int, n_positive: int) -> None:
        """Restore the totals :attr:`label_totals` returned."""
        if not 0 <= n_positive <= n_labels:
            raise ValueError(f"need 0 <= n_positive <= n_labels, got {n_positive!r} of {n_labels!r}")
        self._n_labels, self._n_positive = int(n_labels), int(n_positive)

    def forget_keys(self, keys: Iterable[str]) -> int:
        """Drop the state of ``keys`` (bounded memory on unbounded key spaces); returns how many."""
        n = 0
        pop = self._keys.pop
        for k in keys:
            if pop(k, None) is not None:
                n += 1
        if n:
            self._compact_if_sparse()
        return n


_BULK = 64  # key_states / set_key_states: from this many keys on, column by column
_COLUMN_ATTRS = ("_n", "_last", "_n_lab", "_n_pos", "_recent")
_DTYPE = {"q": np.int64, "d": np.float64}


def _blank_columns() -> tuple[array, ...]:
    return array("q"), array("q"), array("q"), array("q"), array("d")
