"""The prediction API: FastAPI on uvicorn, one serving engine (learner, store, log) per process.

    python -m serving --lake L [--host 127.0.0.1] [--port 8000] [--model linear] [--store redis://...]

Requests go through one queue, served by one task on the event loop: it takes the
requests that are waiting (one when the server is idle, all that arrived meanwhile
when it is busy, up to ``max_batch``) and runs them, in arrival order, as one step
of the engine. So the learner needs no lock, a model never changes in the middle of
a request (it changes *between* requests), and under load the requests share the
step's fixed costs. Lake commits run on background threads; a timer task hands
them what is due.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from dataflows.gc_tuning import freeze_survivors, tune_gc
from lake.entry import ArgumentParser
from serving.config import ServeConfig
from serving.engine import Engine

log = logging.getLogger(__name__)


class EventIn(BaseModel):
    event_id: str | int = Field(description="unique id; a second request with it gets the first answer")
    key: str | None = Field(None, description="entity key (per-key features); default 'all'")
    event_time: str | float | None = Field(None, description="ISO time or epoch seconds, UTC; default now")
    payload: dict[str, str | float | int | bool | None] = Field(default_factory=dict,
                                                                 description="feature values")


class Answer(BaseModel):
    event_id: str
    score: float = Field(description="binary: P(label = 1); regression: the value; multiclass: the class's "
                                     "probability")
    prediction: int | float | str = Field(description="the lake's task: 0/1, the value, or the class")
    probabilities: dict[str, float] | None = Field(None, description="multiclass only: every class's probability")
    model: str
    model_version: str = Field(description="checkpoint id; with the learn log it rebuilds the score")


class LabelIn(BaseModel):
    event_id: str | int
    label: int | float | str = Field(description="the lake's task: 0 or 1, a number, or the class")
    label_time: str | float | None = Field(None, description="ISO time or epoch seconds; default now")


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "anyOf": [schema, {"type": "array", "items": schema}]}}}}}


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _render(content)


class _Queue:
    """Requests waiting for the engine, served in arrival order by one task, together when they queue up."""

    def __init__(self, engine: Engine, *, max_batch: int) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[str, bytes, asyncio.Future]] = asyncio.Queue()

    async def submit(self, kind: str, body: bytes) -> tuple[int, Any]:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((kind, body, future))
        return await future

    async def serve(self) -> None:
        queue = self._queue
        while True:
            jobs = [await queue.get()]
            await asyncio.sleep(0)  # requests already read from their sockets join this step
            while not queue.empty() and len(jobs) < self.max_batch:
                jobs.append(queue.get_nowait())
            try:
                answers = self.engine.handle([(kind, body) for kind, body, _ in jobs])
            except Exception as ex:  # noqa: BLE001 - e.g. the log cannot be written: each request fails
                log.exception("serving %d request(s) failed", len(jobs))
                for _, _, future in jobs:
                    if not future.done():
                        future.set_exception(ex)
                continue
            for (_, _, future), answer in zip(jobs, answers, strict=True):
                if not future.done():  # (a client that went away)
                    future.set_result(answer)


_JSON_HEADERS = [(b"content-type", b"application/json")]


class _Direct:
    """``POST /predict`` and ``POST /labels`` straight from ASGI to the engine's queue; everything else
    (and these two when a worker forwards them to another) goes to the FastAPI app, which also
    documents them. FastAPI's routing and its request and response objects cost about as much CPU
    as a single prediction; the answers are the same bytes either way."""

    def __init__(self, app: FastAPI, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = _KINDS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if kind is None or self.state["router"] is not None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        status, content = await self.state["queue"].submit(kind, b"".join(chunks))
        body = _render(content)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def __getattr__(self, name: str) -> Any:  # (the FastAPI app's own attributes: openapi, routes, ...)
        return getattr(self.app, name)


_KINDS = {"/predict": "predict", "/labels": "labels"}


def _render(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


def create_app(config: ServeConfig, *, tick_seconds: float = 0.2, max_batch: int = 256,
               worker: tuple[int, int, list[str]] | None = None) -> _Direct:
    """The ASGI app of one server (the FastAPI app behind :class:`_Direct`); the engine starts (and replays
    its log) when the app starts.

    ``worker``: ``(index, count, unix socket paths)`` when the server is one of ``count`` workers
    (:mod:`serving.workers`): requests for other workers' keys are forwarded to them."""
    state: dict[str, Any] = {"router": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(config)
        state["engine"] = engine
        tune_gc()  # collect rarely and never walk what the start-up built (warm start, log replay)
        freeze_survivors()
        log.info("serving %s from %s (store %s), position %d", config.models, config.lake, config.store,
                 engine.next_seq - 1)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(tick_seconds)
                try:
                    engine.tick()
                except Exception:  # a failed commit stops the server (the engine answers 503 until then);
                    log.exception("lake commit failed; stopping: a restart replays the log")  # restart replays
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        queue = state["queue"] = _Queue(engine, max_batch=max_batch)
        if worker is not None:
            from serving.workers import Router

            state["router"] = Router(index=worker[0], n=worker[1], sockets=worker[2], submit=queue.submit,
                                     known=engine.known)
        tasks = [asyncio.create_task(ticker()), asyncio.create_task(queue.serve())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if state["router"] is not None:
                await state["router"].close()
            engine.close()

    async def serve(kind: str, request: Request) -> Response:
        body = await request.body()
        router = state["router"]
        if router is None or request.headers.get("x-riverlake-forwarded"):
            status, content = await state["queue"].submit(kind, body)
        else:
            status, content = await router.handle(kind, body)
        return _Json(content, status_code=status)

    app = FastAPI(title="riverlake serving", lifespan=lifespan,
                  description="Predictions from an online model that keeps learning from the labels sent back.")

    @app.post("/predict", openapi_extra=_body(EventIn), response_model=Answer | list[Answer],
              responses={422: {"description": "a field is wrong: the detail names it and why"}})
    async def predict(request: Request) -> Response:
        return await serve("predict", request)

    @app.post("/labels", openapi_extra=_body(LabelIn),
              responses={404: {"description": "no served event has this id"},
                         409: {"description": "the event was labelled before"}})
    async def labels(request: Request) -> Response:
        return await serve("labels", request)

    if worker is not None:
        @app.post("/_workers/known", include_in_schema=False)
        async def known(request: Request) -> JSONResponse:  # asked by the other workers, on their sockets
            ids = json.loads(await request.body()).get("ids", [])
            return JSONResponse(state["engine"].known([str(e) for e in ids]))

    @app.get("/health")
    async def health() -> JSONResponse:
        h = state["engine"].health()
        if worker is not None:
            h["worker"], h["workers"], h["pid"] = worker[0], worker[1], os.getpid()
        return JSONResponse(h, status_code=200 if h["status"] == "ok" else 503)

    @app.get("/models")
    async def models() -> JSONResponse:
        return JSONResponse(state["engine"].models())

    return _Direct(app, state)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", required=True, help="lake root")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="linear", help="model specs, comma-separated; the first is served")
    p.add_argument("--server-id", default="serve", help="identity: run_id in the lake, store namespace")
    p.add_argument("--store", default="memory", help="feature store: memory or redis://HOST:PORT/DB")
    p.add_argument("--state-dir", default=None, help="log and lock folder (default LAKE/_serving/ID)")
    p.add_argument("--task", default=None, choices=("binary", "multiclass", "regression"),
                   help="the learning task (default: the lake's, binary before any label)")
    p.add_argument("--exclude", default="", help="payload fields not used as features (comma list)")
    p.add_argument("--checkpoint-every", type=int, default=1_000, help="new model version every N labels")
    p.add_argument("--flush-seconds", type=float, default=1.0, help="lake commit interval")
    p.add_argument("--anomaly", default=None, help="anomaly scorer (e.g. zscore); default off")
    p.add_argument("--snapshot-every", type=int, default=50_000,
                   help="snapshot the state every N positions; the log before it is then deleted (0: never)")
    p.add_argument("--fsync", action="store_true", help="fsync the log per request (survives power loss)")
    p.add_argument("--warm-start", action="store_true",
                   help="on a first start, learn the lake's events and labels before serving")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on the port, each key served by one (see serving.workers)")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor
    p.add_argument("--log-level", default="warning")
    return p


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    names = tuple(m.strip() for m in args.model.split(",") if m.strip())
    return ServeConfig(lake=args.lake, server_id=args.server_id, models=names, store=args.store,
                       state_dir=args.state_dir, exclude=tuple(e for e in args.exclude.split(",") if e),
                       checkpoint_every=args.checkpoint_every, flush_seconds=args.flush_seconds,
                       anomaly=args.anomaly, fsync=args.fsync,
                       snapshot_every=args.snapshot_every, warm_start=args.warm_start, task=args.task)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as ex:
        raise SystemExit(f"serving: {ex}") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers < 1:
        raise SystemExit(f"serving: --workers must be >= 1, got {args.workers}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.worker_index is None:
        log.warning("serving on %s: the API has no authentication; put it behind a proxy that has", args.host)
    if args.workers == 1:
        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level,
                    access_log=False, lifespan="on")
        return 0
    from serving import workers

    if args.worker_index is None:  # the supervisor
        argv = list(sys.argv[1:] if argv is None else argv)
        return workers.supervise(argv, n=args.workers, state_root=config.state_path)
    i, n = args.worker_index, args.workers
    folder = workers.socket_folder(config.state_path)
    paths = [os.path.join(folder, f"w{w}.sock") for w in range(n)]
    sockets = workers.listen(args.host, args.port, paths[i])
    mine = dataclasses.replace(config, server_id=f"{config.server_id}-w{i}", state_dir=(
        None if config.state_dir is None else os.path.join(config.state_dir, f"w{i}")))
    server = uvicorn.Server(uvicorn.Config(create_app(mine, worker=(i, n, paths)), log_level=args.log_level,
                                           access_log=False, lifespan="on"))
    server.run(sockets=sockets)
    return 0
