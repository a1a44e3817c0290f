"""See it: the Prefect UI with the deployments served, the MLflow UI on the lake's store, the newest reports.

    python -m flows.ui [--lake lakehouse] [--prefect-port 4200] [--mlflow-port 5000]     # or: make ui

Starts, on 127.0.0.1 unless ``--host`` says otherwise:

1. a Prefect server (its database under ``$PREFECT_HOME``, default ``./.prefect``, printed);
2. the lake's checkpoints versioned in MLflow and a promotion decision, as flow runs of that server, so the
   registered models carry a ``champion`` alias;
3. an MLflow server on the lake's tracking store (``sqlite:///LAKE/mlflow.db`` by default; a remote
   ``MLFLOW_TRACKING_URI`` is shown as it is, not started);
4. ``flows.serve``: the scheduled deployments (versioning, promotion, drift report, maintenance, replay,
   benchmark where this version has them), visible and editable in the Prefect UI.

Then it prints the URLs and the paths of the newest drift and benchmark reports, and waits. Ctrl-C (or
SIGTERM) stops the deployments first, then the servers, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lake.errors import LakeError


@dataclass
class Services:
    """The processes started, newest last; :meth:`stop` ends them in reverse order."""

    logs: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(list(argv), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the process group: server workers too
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()


def wait_http(url: str, proc: subprocess.Popen, *, name: str, log: Path, timeout_s: float = 180) -> None:
    """Poll ``url`` until it answers 200; a clear error with the end of the log if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LakeError(f"{name} exited with status {proc.returncode}; its log {log} ends with:\n"
                            + log.read_text(errors="replace")[-1500:])
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise LakeError(f"{name} did not answer {url} within {timeout_s:.0f} s (log: {log})")


def newest_reports(lake: str) -> dict[str, str]:
    """Paths of the newest drift report (HTML) and benchmark report of ``lake``, where they exist."""
    from lake.table import exists, read_table

    found: dict[str, str] = {}
    if exists(lake, "drift_reports"):
        rows = read_table(lake, "drift_reports", columns=["created_at", "html_path"]).sort("created_at")
        if rows.height:
            found["drift report"] = rows["html_path"][-1]
    pages = sorted(Path(lake, "reports").glob("benchmark-*.html"), key=lambda p: p.stat().st_mtime) \
        if "://" not in lake else []
    if pages:
        found["benchmark report"] = str(pages[-1])
    from monitoring.evidently_workspace import workspace_dir

    if "://" not in lake and workspace_dir(lake).is_dir():
        found["drift over time"] = f"{Path(sys.executable).parent / 'evidently'} ui --workspace {workspace_dir(lake)}"
    return found


def run(lake: str, *, host: str = "127.0.0.1", prefect_port: int = 4200, mlflow_port: int = 5000,
        serve: bool = True, tracking_uri: str | None = None,
        ready: Callable[[dict[str, str]], None] | None = None, stop: threading.Event | None = None) -> dict[str, str]:
    """Start everything for ``lake``, call ``ready`` with the URLs and paths, wait for ``stop``, stop it all."""
    from flows.registry import tracking_uri_for
    from lake.storage import canonical
    from lake.table import exists

    lake = canonical(lake)
    if not exists(lake, "events"):
        raise LakeError(f"lake {lake} holds no events: fill it first (make demo, or python -m lake ingest ...)")
    home = Path(os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve()
    logs = home / "ui-logs"
    logs.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    root = str(Path(__file__).resolve().parent.parent)
    api = f"http://{host}:{prefect_port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PREFECT_API_URL", None)
    services = Services(logs)
    stop = stop or threading.Event()
    try:
        print(f"Prefect server on {host}:{prefect_port} (PREFECT_HOME={home}; logs in {logs})", flush=True)
        # the UI asks the API at PREFECT_UI_API_URL, which defaults to port 4200 whatever --port says
        proc = services.start("prefect-server", [str(bin_dir / "prefect"), "server", "start", "--host", host,
                                                 "--port", str(prefect_port)], {**env, "PREFECT_UI_API_URL": api})
        wait_http(f"{api}/health", proc, name="the Prefect server", log=logs / "prefect-server.log")
        flow_env = {**env, "PREFECT_API_URL": api, "PREFECT_LOGGING_LEVEL": "WARNING"}

        store = tracking_uri_for(lake, tracking_uri)
        if tracking_uri:
            flow_env["MLFLOW_TRACKING_URI"] = tracking_uri
        print("versioning the checkpoints and deciding the champion (flow runs in the Prefect UI)", flush=True)
        for module in ("flows.versioning", "flows.promotion"):
            done = subprocess.run([sys.executable, "-m", module, "--lake", lake], env=flow_env, capture_output=True,
                                  text=True, timeout=900)
            if done.returncode != 0:
                raise LakeError(f"python -m {module} failed (status {done.returncode}): "
                                + (done.stderr.strip().splitlines() or ["no output"])[-1])

        if store.startswith(("http://", "https://")):
            mlflow_url = store
        else:
            from flows.registry import artifact_location

            mlflow_url = f"http://{host}:{mlflow_port}"
            argv = [str(bin_dir / "mlflow"), "server", "--host", host, "--port", str(mlflow_port), "--workers", "1",
                    "--backend-store-uri", store]
            artifacts = artifact_location(store)
            if artifacts and "://" not in artifacts:
                argv += ["--artifacts-destination", artifacts]
            print(f"MLflow server on {host}:{mlflow_port} ({_redacted(store)})", flush=True)
            proc = services.start("mlflow-server", argv, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
            wait_http(f"{mlflow_url}/health", proc, name="the MLflow server", log=logs / "mlflow-server.log")

        if serve:
            argv = [sys.executable, "-m", "flows.serve", "--lake", lake]
            proc = services.start("flows-serve", argv, flow_env)
            _wait_deployments(api, proc, log=logs / "flows-serve.log")

        shown = {"Prefect UI (deployments)": f"http://{host}:{prefect_port}/deployments",
                 "MLflow UI (registered models)": f"{mlflow_url}/#/models",
                 **newest_reports(lake)}
        width = max(map(len, shown))
        print("ready:", flush=True)
        for name, where in shown.items():
            print(f"  {name:<{width}}  {where}", flush=True)
        print("Ctrl-C stops the deployments and the servers.", flush=True)
        if ready is not None:
            ready(shown)
        while not stop.wait(1.0):
            for name, proc in services.procs:
                if proc.poll() is not None:
                    raise LakeError(f"{name} exited with status {proc.returncode} (log: {logs / (name + '.log')})")
        return shown
    finally:
        services.stop()


def _wait_deployments(api: str, proc: subprocess.Popen, *, log: Path, timeout_s: float = 180) -> None:
    """Wait until the served deployments are registered with the server."""
    import json

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LakeError(f"flows.serve exited with status {proc.returncode}; log {log}:\n"
                            + log.read_text(errors="replace")[-1500:])
        req = urllib.request.Request(f"{api}/deployments/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                if json.loads(r.read()):
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise LakeError(f"no deployment registered within {timeout_s:.0f} s (log: {log})")


def _redacted(uri: str) -> str:
    """``uri`` without a password (``user:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=os.environ.get("RIVERLAKE_LAKE", "lakehouse"))
    parser.add_argument("--host", default="127.0.0.1", help="address the servers bind to (default 127.0.0.1)")
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///LAKE/mlflow.db)")
    parser.add_argument("--no-serve", action="store_true", help="do not serve the scheduled deployments")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        run(args.lake, host=args.host, prefect_port=args.prefect_port, mlflow_port=args.mlflow_port,
            serve=not args.no_serve, tracking_uri=args.tracking_uri, stop=stop)
    except (LakeError, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
