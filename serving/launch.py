"""Starting a prediction server or a Redis server as a child process (tests and the load generator).

>>> port = free_port()
>>> 1024 < port < 65536
True
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, *, timeout: float, what: str, log_path: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}: {_tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s: {_tail(log_path)}")


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Client:
    """A keep-alive JSON client of one server (``http.client``: the least overhead per request)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed a connection idle past its keep-alive timeout: reconnect once (a repeated
            # prediction gets its first answer, so this is safe).
            self.conn.close()
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def close(self) -> None:
        self.conn.close()


class ServerProcess:
    """``python -m serving`` in a child process on a free loopback port."""

    def __init__(self, lake: str, *, args: Sequence[str] = (), port: int | None = None,
                 env: dict[str, str] | None = None, log_path: str | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.lake = lake
        self.port = port or free_port()
        self.log_path = log_path or os.path.join(lake + "-server.log")
        cmd = [*prefix, sys.executable, "-m", "serving", "--lake", lake, "--port", str(self.port), *args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        _wait_port(self.port, self.proc, timeout=timeout, what="the prediction server", log_path=self.log_path)
        return self

    def client(self) -> Client:
        return Client(self.port)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (uvicorn shuts down: the engine commits what it holds); returns the exit code
        (-15: uvicorn re-raises the signal it handled)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return _tail(self.log_path, 20_000)


class RedisProcess:
    """Debian's ``redis-server`` on a free loopback port, data in ``folder``, nothing saved to disk."""

    def __init__(self, folder: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
        os.makedirs(folder, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = os.path.join(folder, "redis.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", folder, "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=self._log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, timeout=30, what="redis-server", log_path=self.log_path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
