"""MLflow plumbing shared by the versioning and promotion flows: store, experiment, registry.

Where the tracking store is (:func:`tracking_uri_for`): the ``tracking_uri``
argument, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///LAKE/mlflow.db`` with
artifacts in ``LAKE/mlartifacts`` (absolute paths). A SQLite or file store keeps
its artifacts beside its database; a server (``http://...``) decides itself.

Every checkpoint is registered once, as a version of the registered model
``f"{prefix}-{model}"`` tagged ``riverlake.checkpoint = f"{run_id}/{checkpoint_id}"``:
that tag is how the flows find what MLflow already has. Each version also carries
``riverlake.artifacts_hmac``, an HMAC with the riverlake key over every file of its
logged model (:func:`artifacts_hmac`): :func:`load_verified` checks it before MLflow
unpickles or imports anything of the model, which a plain ``mlflow.pyfunc.load_model``
does not (it unpickles ``python_model.pkl`` first; see :mod:`flows.mlflow_model`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

TAG = "riverlake."
CHECKPOINT_TAG = TAG + "checkpoint"
KIND_TAG = TAG + "kind"
RUN_TAG = TAG + "run_id"
ARTIFACTS_HMAC_TAG = TAG + "artifacts_hmac"
CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACTS_ENV = "RIVERLAKE_MLFLOW_ARTIFACTS"  # artifact root of new experiments on a database store


def tracking_uri_for(lake: str | os.PathLike[str], tracking_uri: str | None = None) -> str:
    """The tracking store to use: explicit, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///LAKE/mlflow.db``.

    >>> tracking_uri_for("/data/lake", "http://127.0.0.1:5000")
    'http://127.0.0.1:5000'
    """
    if tracking_uri:
        return tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = os.fspath(lake)
    if "://" in root:
        raise ValueError(f"lake {root!r} is not a local folder: pass tracking_uri or set MLFLOW_TRACKING_URI")
    return f"sqlite:///{os.path.join(os.path.abspath(root), 'mlflow.db')}"


_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token|access_key|secret_key)=)[^&#]*")


def redact_uri(uri: str) -> str:
    """``uri`` with its password (and secret query values) as ``***``: what logs, results and
    Prefect parameters may show of a tracking store.

    >>> redact_uri("postgresql+psycopg2://mlflow:s3cr:et@db.internal:5432/mlflow?sslmode=require&password=x")
    'postgresql+psycopg2://mlflow:***@db.internal:5432/mlflow?sslmode=require&password=***'
    >>> redact_uri("sqlite:////data/lake/mlflow.db")
    'sqlite:////data/lake/mlflow.db'
    """
    return _SECRET_QUERY.sub(r"\1***", _PASSWORD.sub(r"\1:***@", uri))


def _keep_secret(tracking_uri: str) -> None:
    """A store whose URI holds a password: stop MLflow printing run links built from that URI."""
    if redact_uri(tracking_uri) != tracking_uri:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def use_tracking_uri(tracking_uri: str | None) -> None:
    """Make ``tracking_uri`` (a command-line setting) this process's ``MLFLOW_TRACKING_URI``: the
    flows, and the flow runs a served deployment starts as subprocesses, read it at run time, so
    it is never a flow or deployment parameter, which Prefect stores and shows."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri


def artifact_location(tracking_uri: str) -> str | None:
    """Artifact folder of a new experiment: ``mlartifacts`` beside a SQLite/file store, the server's choice otherwise.

    >>> artifact_location("sqlite:////data/lake/mlflow.db")
    '/data/lake/mlartifacts'
    >>> artifact_location("http://127.0.0.1:5000") is None
    True

    A database store used directly takes its artifact root from ``$RIVERLAKE_MLFLOW_ARTIFACTS``.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        path = unquote(tracking_uri[len("sqlite:///"):])
        return os.path.join(os.path.dirname(os.path.abspath(path)), "mlartifacts")
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme else tracking_uri
        return os.path.join(os.path.abspath(path), "mlartifacts")
    if parsed.scheme.split("+")[0] not in ("postgresql", "mysql", "mssql"):
        return None
    # a database store used directly (postgresql+psycopg2://, mysql://, ...): MLflow would put artifacts
    # in ./mlruns of whichever process created the experiment; ask for a shared place instead
    location = os.environ.get(ARTIFACTS_ENV)
    if not location:
        raise ValueError(f"tracking store {parsed.scheme}://... has no artifact store: set {ARTIFACTS_ENV} "
                         "(e.g. s3://bucket/mlartifacts), or use an MLflow server (http://...) that has one")
    return location


def client_for(tracking_uri: str) -> MlflowClient:
    """A client on ``tracking_uri`` (registry on the same store); makes the folder of a SQLite store."""
    _keep_secret(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(unquote(tracking_uri[len("sqlite:///"):]))), exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def using(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``) at ``tracking_uri`` for a while.

    MLflow's own setter also writes ``MLFLOW_TRACKING_URI`` (and unsets it when restored to
    nothing); this puts the environment back exactly as it was.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved_tracking = tracking_utils._tracking_uri
    from mlflow.tracking._model_registry import utils as registry_utils

    saved_registry = registry_utils._registry_uri
    _keep_secret(tracking_uri)
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created (or restored from the bin) when needed."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
        except MlflowException:  # created meanwhile by another flow
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def registered_model_name(prefix: str, model: str) -> str:
    """``riverlake-linear`` for prefix ``riverlake`` and model spec ``linear``.

    >>> registered_model_name("riverlake", "naive-bayes")
    'riverlake-naive-bayes'
    """
    return f"{prefix}-{model}" if prefix else model


def checkpoint_key(run_id: str, checkpoint_id: str) -> str:
    """The value of the ``riverlake.checkpoint`` tag: unique over the whole lake."""
    return f"{run_id}/{checkpoint_id}"


def ensure_registered_model(client: MlflowClient, name: str, *, description: str | None = None) -> None:
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as ex:
        if ex.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def quote_filter_value(value: str) -> str | None:
    r"""``value`` as a string literal of MLflow's search filters, or ``None`` when none can hold it.

    MLflow strips the quotes of a literal and undoes no escape (``'it\'s'`` searches for
    ``it\'s``), so a value is written as it is, between quotes it does not hold; one holding
    both kinds of quote cannot be written, and is matched after the search instead.

    >>> print(quote_filter_value("r1"), quote_filter_value("it's"), quote_filter_value('say "hi"'))
    'r1' "it's" 'say "hi"'
    >>> print(quote_filter_value("it's \"both\""))
    None
    """
    for q in ("'", '"'):
        if q not in value:
            return f"{q}{value}{q}"
    return None


def _equal(field: str, value: str) -> tuple[str | None, bool]:
    """``(filter clause or None, whether the result must be checked after the search)``."""
    quoted = quote_filter_value(value)
    return (None, True) if quoted is None else (f"{field} = {quoted}", False)


def _versions(client: MlflowClient, name: str, tags: dict[str, str] | None = None, *,
              max_results: int = 1000) -> Iterator[Any]:
    """Every version of registered model ``name`` whose tags have the given values."""
    tags = tags or {}
    parts = [_equal("name", name), *(_equal(f"tags.`{k}`", v) for k, v in tags.items())]
    filter_string = " and ".join(c for c, _ in parts if c is not None)
    recheck = any(r for _, r in parts)
    token = None
    while True:
        page = client.search_model_versions(filter_string, max_results=max_results, page_token=token)
        for mv in page:
            if not recheck or (mv.name == name and all(mv.tags.get(k) == v for k, v in tags.items())):
                yield mv
        token = page.token
        if not token:
            return


def registered_checkpoints(client: MlflowClient, name: str) -> dict[str, str]:
    """``{checkpoint key: version}`` of every version of registered model ``name`` (none if it does not exist)."""
    found: dict[str, str] = {}
    for mv in _versions(client, name):
        key = mv.tags.get(CHECKPOINT_TAG)
        if key is not None:
            found.setdefault(key, str(mv.version))
    return found


def find_version(client: MlflowClient, name: str, key: str) -> str | None:
    """Version of registered model ``name`` holding checkpoint ``key``, ``None`` if not registered."""
    versions = sorted((str(mv.version) for mv in _versions(client, name, {CHECKPOINT_TAG: key}, max_results=10)),
                      key=int)
    return versions[0] if versions else None


def keep_first_version(client: MlflowClient, name: str, key: str, *, version: str, run_id: str) -> str:
    """Fence a just-created version of checkpoint ``key``: of versions registered at once, the first stays.

    Two syncs whose schedules meet (versioning and promotion) can both find a checkpoint
    unregistered and both register it. Each checks after registering; the later one sees
    the earlier version (numbers grow with creation), deletes its own version and run, and
    returns the version kept.
    """
    first = find_version(client, name, key)
    if first is None or first == version:
        return version
    log.info("%s: registered at once by another sync as version %s; dropping version %s", key, first, version)
    client.delete_model_version(name, version)
    client.delete_run(run_id)
    return first


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_tagged(client: MlflowClient, experiment_id: str, **tags: str) -> list[Any]:
    """Active runs of the experiment whose ``riverlake.<name>`` tags have the given values."""
    parts = [_equal(f"tags.`{TAG}{k}`", v) for k, v in tags.items()]
    runs = search_all_runs(client, experiment_id, " and ".join(c for c, _ in parts if c is not None))
    if any(r for _, r in parts):
        runs = [run for run in runs if all(run.data.tags.get(TAG + k) == v for k, v in tags.items())]
    return runs


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version ``alias`` points at in registered model ``name``, ``None`` when unset."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as ex:
        if ex.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def drop_alias(client: MlflowClient, name: str, alias: str) -> None:
    if alias_version(client, name, alias) is not None:
        client.delete_registered_model_alias(name, alias)


def _manifest(directory: str | os.PathLike[str]) -> bytes:
    """Every file under ``directory``: its relative path and the sha256 of its bytes, sorted by path."""
    root = Path(directory)
    lines = [f"{p.relative_to(root).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}"
             for p in sorted(root.rglob("*")) if p.is_file()]
    return "\n".join(lines).encode()


def artifacts_hmac(directory: str | os.PathLike[str], *, checkpoint: str) -> str:
    """HMAC (riverlake key) over every file of a logged model, bound to its checkpoint key."""
    from lake import integrity

    return integrity.sign(_manifest(directory), purpose=f"mlflow model {checkpoint}")


def load_verified(client: MlflowClient, name: str, *, version: str | None = None, alias: str | None = None) -> Any:
    """The pyfunc model of version (or alias) of registered model ``name``, loaded only once its files check out.

    The files are downloaded to a private folder, their :func:`artifacts_hmac` compared with
    the version's ``riverlake.artifacts_hmac`` tag, and the model loaded from that folder:
    nothing of it (``python_model.pkl``, its code, the River bytes) is unpickled or imported
    before. Raises :class:`lake.integrity.IntegrityError` when they do not.
    """
    import mlflow

    from lake import integrity

    if (version is None) == (alias is None):
        raise ValueError(f"give one of version or alias, got version={version!r}, alias={alias!r}")
    mv = (client.get_model_version(name, version) if version is not None
          else client.get_model_version_by_alias(name, alias))
    what = f"MLflow model {name!r} version {mv.version}"
    checkpoint = mv.tags.get(CHECKPOINT_TAG)
    if checkpoint is None:
        raise integrity.IntegrityError(f"{what}: no {CHECKPOINT_TAG} tag; not registered by riverlake's versioning")
    with tempfile.TemporaryDirectory(prefix="riverlake-model-") as tmp, using(client.tracking_uri):
        local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp)
        integrity.verify(_manifest(local), mv.tags.get(ARTIFACTS_HMAC_TAG), purpose=f"mlflow model {checkpoint}",
                         what=what)
        return mlflow.pyfunc.load_model(local)


_NOISY_LOGGERS = ("mlflow.pyfunc", "mlflow.utils.environment", "mlflow.models.model", "mlflow.models.signature")


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's notices that say nothing about a riverlake model: the advice to add type hints to ``predict``
    (the model checks its input itself: raw events, or feature columns no signature can list), pip and
    cloudpickle version notes, the input example's validation line, and the artifact progress bars (one per
    checkpoint, dozens in a demo). They come as warnings and as log records of these loggers; errors still show."""
    import warnings

    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\..*)?")
            warnings.filterwarnings("ignore", message=".*(type hint|cloudpickle|pip).*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before
