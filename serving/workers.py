"""``python -m serving --workers N``: N server processes behind one port, each key served by one of them.

The design, and why. A server learns in process, so its model, its feature state and
its log are one identity (``server_id``); uvicorn's own ``--workers`` would start N
copies of one identity, whose logs, lake writers and store updates would collide. So
each worker is a server of its own: worker ``i`` of server ``ID`` is server
``ID-wi``, with its own log and snapshot (``LAKE/_serving/ID-wi``), its own lake
writers (app transactions ``ID-wi/...``: the workers' rows never merge or fence each
other) and its own store namespace. A supervisor process starts them and restarts one
killed by a signal; the log replays what it answered.

All workers listen on the public port with ``SO_REUSEPORT``, so the kernel picks the
worker of a connection; each also listens on a private Unix socket. The worker that
receives a request routes it by key, the way a Bytewax dataflow partitions its keyed
state: the events of key ``k`` are served by worker ``crc32(k) % N`` (a request for
another worker's keys is forwarded to it; a list spanning workers is split, its parts
served at once and the answers put back in order). So one key's state lives in one
worker, is updated by one learner in one order, and the features served equal what
a replay of that worker's rows computes, exactly as with one server. A label names
only its ``event_id``: the receiving worker asks the others which of them served the
ids it does not know, and forwards each label to that worker (one extra hop for
``N - 1`` labels in ``N``). Each worker learns its own model from its keys' labels
(the models of the workers are ``ID-w0``, ``ID-w1``, ... in the lake and in
``lake reproduce --run-id``).

The other design, a shared Redis store with per-key idempotent updates and the
kernel's choice of worker for every request, needs no forwarding, but two workers
then update one key's state at once (a lock per key, and positions per key instead of
per server), a label still has to reach the learner that holds its event's features,
and every worker's model sees every key. Routing by key keeps each worker exactly the
single server whose guarantees are tested, at the cost of one loopback hop for the
requests that land on the wrong worker ((N-1)/N of them).

What this costs a client: the number of workers is part of the identity (the
supervisor refuses another N for the same ``--server-id``, since keys would move);
an event id must come with the same key each time to get its first answer back;
while a worker restarts, requests for its keys (and labels whose owner cannot be
asked) get a 503 to retry; ``/health`` and ``/models`` describe the worker that
answered (``worker`` says which).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from zlib import crc32

log = logging.getLogger(__name__)

FORWARDED = "x-riverlake-forwarded"
DEFAULT_KEY = "all"  # the key of an event without one (as dataflows.decode.decode_event gives it)


def owner(key: Any, n: int) -> int:
    """The worker of an event's key, out of ``n`` (the key as the decoder normalizes it).

    >>> owner("UA", 2), owner(None, 2) == owner("all", 2), owner(7, 3) == owner("7", 3)
    (0, True, True)
    """
    if key is None:
        key = DEFAULT_KEY
    elif not isinstance(key, str):
        key = str(key)
    return crc32(key.encode()) % n


def _event_id(obj: Any) -> str | None:
    eid = obj.get("event_id") if isinstance(obj, dict) else None
    if isinstance(eid, int) and not isinstance(eid, bool):
        return str(eid)
    return eid if isinstance(eid, str) and eid else None


def socket_folder(state_root: str) -> str:
    """A private folder for the workers' Unix sockets (short: socket paths are limited to 107 bytes)."""
    digest = hashlib.sha256(os.path.abspath(state_root).encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"riverlake-{os.getuid()}-{digest}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


class Unavailable(RuntimeError):
    """Another worker cannot be reached (it is restarting)."""


class _Peer:
    """Keep-alive HTTP/1.1 connections to one other worker's Unix socket (the least a forward costs)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, target: str, body: bytes) -> tuple[int, bytes]:
        """``(status, body)``; ``ConnectionRefusedError``/``FileNotFoundError`` when nothing listens."""
        if self._idle:
            try:  # an idle connection may have been closed by the worker (keep-alive timeout, restart)
                return await self._exchange(self._idle.pop(), target, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
        return await self._exchange(await asyncio.open_unix_connection(self.path), target, body)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], target: str,
                        body: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        try:
            writer.write(b"POST %s HTTP/1.1\r\nhost: worker\r\ncontent-type: application/json\r\n%s: 1\r\n"
                         b"content-length: %d\r\n\r\n%s" % (target.encode(), FORWARDED.encode(), len(body), body))
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionResetError("the worker closed the connection")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            data = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        self._idle.append(conn)
        return int(status_line.split()[1]), data

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class Router:
    """Routes one worker's requests: its own keys to its engine, the others' to them."""

    def __init__(self, *, index: int, n: int, sockets: Sequence[str],
                 submit: Callable[[str, bytes], Awaitable[tuple[int, Any]]],
                 known: Callable[[list[str]], list[str]], connect_wait: float = 15.0) -> None:
        self.index, self.n, self.connect_wait = index, n, connect_wait
        self.submit, self.known = submit, known
        self._peers = {i: _Peer(path) for i, path in enumerate(sockets) if i != index}

    async def close(self) -> None:
        for peer in self._peers.values():
            peer.close()

    async def _call(self, worker: int, path: str, body: bytes) -> tuple[int, Any]:
        if worker == self.index:
            return await self.submit(path.strip("/"), body)
        deadline = time.monotonic() + self.connect_wait
        while True:
            try:
                status, data = await self._peers[worker].post(path, body)
                break
            except (FileNotFoundError, ConnectionRefusedError):  # not up yet, or restarting: nothing was sent
                if time.monotonic() >= deadline:
                    raise Unavailable(f"worker {worker} is not up (restarting?): send the request again") from None
                await asyncio.sleep(0.05)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as ex:
                # it went away while answering: sent again, the request gets its first answer
                raise Unavailable(f"worker {worker} went away while answering ({type(ex).__name__}): "
                                  "send the request again") from None
        return status, (json.loads(data) if data else None)

    async def handle(self, kind: str, body: bytes) -> tuple[int, Any]:
        """``(status, content)`` of a ``"predict"`` or ``"labels"`` request that reached this worker."""
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return await self.submit(kind, body)  # the engine refuses it (and dead-letters it)
        single = isinstance(obj, dict)
        objs = [obj] if single else obj
        if not isinstance(objs, list) or not objs:
            return await self.submit(kind, body)
        try:
            if kind == "predict":
                owners = [owner(o.get("key"), self.n) if isinstance(o, dict) else self.index for o in objs]
            else:
                owners = await self._label_owners(objs)
            return await self._run(kind, body, objs, owners, single)
        except Unavailable as ex:
            return 503, {"detail": [{"index": None, "event_id": None, "field": None, "reason": str(ex)}]}

    async def _label_owners(self, objs: list[Any]) -> list[int]:
        ids = [_event_id(o) for o in objs]
        mine = set(self.known([e for e in ids if e is not None]))
        ask = sorted({e for e in ids if e is not None and e not in mine})
        where: dict[str, int] = {}
        if ask:
            body = json.dumps({"ids": ask}).encode()
            others = [w for w in range(self.n) if w != self.index]
            replies = await asyncio.gather(*(self._call(w, "/_workers/known", body) for w in others))
            for w, (status, found) in zip(others, replies, strict=True):
                if status != 200:
                    raise Unavailable(f"worker {w} could not say which labels are its own ({status})")
                for e in found:
                    where.setdefault(e, w)
        # Ids nobody served stay here: this worker refuses them (404) and dead-letters them, once.
        return [where.get(e, self.index) if e is not None else self.index for e in ids]

    async def _run(self, kind: str, body: bytes, objs: list[Any], owners: list[int],
                   single: bool) -> tuple[int, Any]:
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(owners):
            groups.setdefault(w, []).append(i)
        if len(groups) == 1:
            return await self._call(owners[0], "/" + kind, body)
        parts = list(groups.items())
        replies = await asyncio.gather(*(
            self._call(w, "/" + kind, json.dumps([objs[i] for i in idx]).encode()) for w, idx in parts))
        merged: list[Any] = [None] * len(objs)
        for (_, idx), (status, content) in zip(parts, replies, strict=True):
            if status != 200:  # the parts of other workers were served: sent again, they get their first answers
                for d in content.get("detail", []) if isinstance(content, dict) else []:
                    if isinstance(d, dict) and isinstance(d.get("index"), int) and d["index"] < len(idx):
                        d["index"] = idx[d["index"]]
                return status, content
            for i, answer in zip(idx, content, strict=True):
                merged[i] = answer
        return 200, merged


def _record_workers(state_root: str, n: int) -> None:
    os.makedirs(state_root, exist_ok=True)
    path = os.path.join(state_root, "workers.json")
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)["workers"]
        if before != n:
            raise SystemExit(f"serving: {state_root} was served by {before} workers, not {n}: each key's state "
                             "lives in the worker its hash names; use another --server-id for another count")
        return
    with open(path, "w") as f:
        json.dump({"workers": n}, f)


def supervise(argv: Sequence[str], *, n: int, state_root: str) -> int:
    """Run ``n`` workers (``python -m serving ARGV --worker-index i``) until SIGTERM or SIGINT; restart a
    worker killed by a signal we did not send; stop all when one exits by itself (a start that failed)."""
    _record_workers(state_root, n)

    def spawn(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "serving", *argv, "--worker-index", str(i)])

    procs = [spawn(i) for i in range(n)]
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while not stopping:
        time.sleep(0.1)
        for i, p in enumerate(procs):
            rc = p.poll()
            if rc is None:
                continue
            if rc < 0:
                log.warning("worker %d (pid %d) was killed by signal %d: restarting it (its log replays)",
                            i, p.pid, -rc)
                procs[i] = spawn(i)
            else:
                log.error("worker %d exited with code %d: stopping the others", i, rc)
                code = rc or 1
                stopping.append(signal.SIGTERM)
                break
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return code


def listen(host: str, port: int, unix_path: str) -> list[socket.socket]:
    """The public socket (shared with the other workers through ``SO_REUSEPORT``) and the private one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    public = socket.socket(family, socket.SOCK_STREAM)
    public.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    public.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    public.bind((host, port))
    public.listen(2048)
    if os.path.exists(unix_path):
        os.unlink(unix_path)  # left by a killed worker
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(unix_path)
    os.chmod(unix_path, 0o600)
    private.listen(2048)
    return [public, private]
