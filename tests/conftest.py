from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.synthetic import make_lake

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def riverlake_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The riverlake key of the whole session, in a tmp file: the suite never writes to the home folder.

    Set in ``os.environ`` so subprocesses (``subprocess_env``) sign and verify with it too.
    """
    import secrets

    path = tmp_path_factory.mktemp("riverlake-key") / "key"
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    os.environ.pop("RIVERLAKE_KEY", None)
    os.environ["RIVERLAKE_KEY_FILE"] = str(path)
    return path


@pytest.fixture(scope="session")
def _synthetic_lake_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "lake"
    make_lake(str(path), n=3_000, seed=7)
    return path


@pytest.fixture
def synthetic_lake(tmp_path: Path, _synthetic_lake_template: Path) -> str:
    """A fresh lake holding 3,000 synthetic events and their labels."""
    dest = tmp_path / "lake"
    shutil.copytree(_synthetic_lake_template, dest)
    return str(dest)


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running the project's commands in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    return env


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """Prefect's test harness (a temporary API and database), shared by the whole session."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a busy 2-core machine starts it slowly
        yield


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """A real MLflow tracking store (SQLite) on a tmp path; artifacts beside it."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
