"""The online feature store: per-key feature state, read at request time, written by the learner.

What a key's features depend on besides the event itself (its event count, the
time of its last event, its labels so far and their moving average, see
:class:`dataflows.features.KeyedFeaturizer`) and the label totals behind the
shared prior live here between events. The server reads the state of a
request's keys before it featurizes, and writes back what the event and the
labels changed, tagged with the position (``seq``) of the batch that changed it.

Updates are idempotent by position: :meth:`FeatureStore.apply` at a position at
or below the store's is a no-op. A server that restarts replays its log and
re-applies every update; the ones the store already holds are skipped, the ones
it lost are applied, so nothing is skipped and nothing is counted twice.

Two stores behind one interface (:func:`open_store`):

- ``memory`` (the default): dictionaries in the server process; needs no server.
- ``redis://host:port/db``: a Redis server (one hash of key states and one of
  totals per namespace; updates are one Lua script, so a batch lands whole or not
  at all). Several processes can read the same state.

>>> store = open_store("memory", namespace="doc")
>>> store.apply({"UA": (1, 60, 0, 0, None)}, (0, 0), position=0)
True
>>> store.apply({"UA": (9, 99, 9, 9, 1.0)}, (0, 0), position=0)  # the same position again: skipped
False
>>> store.read(["UA", "AA"])
({'UA': (1, 60, 0, 0, None)}, (0, 0))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

KeyState = tuple[int, int, int, int, float | None]
"""``(n_events, last_event_time_us, n_labels, n_positive, recent_rate)`` of one key."""

Totals = tuple[int, int]
"""``(labels, positive labels)`` over all keys."""


class StoreError(RuntimeError):
    """The feature store cannot be reached or holds something unreadable."""


class FeatureStore(Protocol):
    """Per-key feature state with updates idempotent by position."""

    url: str

    @property
    def position(self) -> int | None:
        """The position of the last update applied, ``None`` before any."""

    def read(self, keys: Iterable[str]) -> tuple[dict[str, KeyState], Totals]:
        """The state of those ``keys`` that have one, and the label totals (one consistent read)."""

    def apply(self, states: Mapping[str, KeyState | None], totals: Totals, *, position: int) -> bool:
        """Set the states (``None`` removes a key) and totals at ``position``; ``False`` when already applied."""

    def dump(self) -> tuple[dict[str, KeyState], Totals, int | None]:
        """Every key's state, the totals and the position (one consistent read): what a snapshot keeps."""

    def close(self) -> None:
        """Release connections."""


class MemoryStore:
    """The embedded store: the state in this process's memory (lost with it; the server's log rebuilds it)."""

    url = "memory"

    def __init__(self) -> None:
        self._keys: dict[str, KeyState] = {}
        self._totals: Totals = (0, 0)
        self._position: int | None = None

    @property
    def position(self) -> int | None:
        return self._position

    @property
    def n_keys(self) -> int:
        return len(self._keys)

    def read(self, keys: Iterable[str]) -> tuple[dict[str, KeyState], Totals]:
        get = self._keys.get
        found = {}
        for k in keys:
            state = get(k)
            if state is not None:
                found[k] = state
        return found, self._totals

    def apply(self, states: Mapping[str, KeyState | None], totals: Totals, *, position: int) -> bool:
        if self._position is not None and position <= self._position:
            return False
        for k, state in states.items():
            if state is None:
                self._keys.pop(k, None)
            else:
                self._keys[k] = state
        self._totals = (int(totals[0]), int(totals[1]))
        self._position = int(position)
        return True

    def dump(self) -> tuple[dict[str, KeyState], Totals, int | None]:
        return dict(self._keys), self._totals, self._position

    def close(self) -> None:
        return None


_APPLY = """
local pos = redis.call('HGET', KEYS[2], 'position')
if pos and tonumber(pos) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'position', ARGV[1], 'n_labels', ARGV[2], 'n_positive', ARGV[3])
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def _encode(state: KeyState) -> str:
    n, last, n_lab, n_pos, recent = state
    return f"{n},{last},{n_lab},{n_pos},{'' if recent is None else repr(float(recent))}"


def _decode(key: str, text: bytes) -> KeyState:
    try:
        n, last, n_lab, n_pos, recent = text.decode().split(",")
        return int(n), int(last), int(n_lab), int(n_pos), (float(recent) if recent else None)
    except ValueError as ex:
        raise StoreError(f"feature store: unreadable state of key {key!r}: {text[:80]!r}") from ex


class RedisStore:
    """Key states in a Redis server, under ``riverlake:{namespace}:``."""

    def __init__(self, url: str, *, namespace: str) -> None:
        import redis  # the client is needed only with this store

        self.url = url
        self.namespace = namespace
        self._client = redis.Redis.from_url(url)
        prefix = f"riverlake:{namespace}:"
        self._keys_name, self._meta_name = prefix + "keys", prefix + "meta"
        try:
            self._apply = self._client.register_script(_APPLY)
            self._client.ping()
        except redis.RedisError as ex:
            raise StoreError(f"feature store {url!r}: {ex}") from None

    @property
    def position(self) -> int | None:
        value = self._client.hget(self._meta_name, "position")
        return None if value is None else int(value)

    def read(self, keys: Iterable[str]) -> tuple[dict[str, KeyState], Totals]:
        names = list(dict.fromkeys(keys))
        pipe = self._client.pipeline(transaction=True)
        if names:
            pipe.hmget(self._keys_name, names)
        pipe.hmget(self._meta_name, ["n_labels", "n_positive"])
        replies = pipe.execute()
        found: dict[str, KeyState] = {}
        if names:
            for k, value in zip(names, replies[0], strict=True):
                if value is not None:
                    found[k] = _decode(k, value)
        n_labels, n_positive = replies[-1]
        return found, (int(n_labels or 0), int(n_positive or 0))

    def apply(self, states: Mapping[str, KeyState | None], totals: Totals, *, position: int) -> bool:
        args: list[str | int] = [int(position), int(totals[0]), int(totals[1])]
        for k, state in states.items():
            args.append(k)
            args.append("" if state is None else _encode(state))
        return bool(self._apply(keys=[self._keys_name, self._meta_name], args=args))

    def dump(self) -> tuple[dict[str, KeyState], Totals, int | None]:
        pipe = self._client.pipeline(transaction=True)
        pipe.hgetall(self._keys_name)
        pipe.hmget(self._meta_name, ["n_labels", "n_positive", "position"])
        keys, (n_labels, n_positive, position) = pipe.execute()
        states = {k.decode(): _decode(k.decode(), v) for k, v in keys.items()}
        return states, (int(n_labels or 0), int(n_positive or 0)), None if position is None else int(position)

    def clear(self) -> None:
        """Drop this namespace's state (a server that starts afresh)."""
        self._client.delete(self._keys_name, self._meta_name)

    def close(self) -> None:
        self._client.close()


def open_store(url: str, *, namespace: str) -> FeatureStore:
    """The store at ``url``: ``memory`` or ``redis://host:port/db``; ``namespace`` separates servers."""
    if url == "memory":
        return MemoryStore()
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url, namespace=namespace)
    raise ValueError(f"store must be 'memory' or a redis:// URL, got {url!r}")
