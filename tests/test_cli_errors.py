"""A user mistake on any command line is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.bench.daily import write_daily_history


@pytest.fixture(scope="module")
def daily_lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("cli") / "lake")
    write_daily_history(root, years=48)
    return root


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


@pytest.mark.parametrize(("command", "expected"), [
    (["flows.drift", "--window", "1d"], "error: window 1d: the last 1d of event time holds 1 event(s)"),
    (["flows.benchmark", "--sliding", "28d"], "error: sliding window 28d keeps ~30 labelled rows per fit"),
    (["flows.benchmark", "--retrain-every", "7x"], "error: retrain_every must be a duration such as '12h' or '7d'"),
    (["flows.benchmark", "--budget", "soon"], "error: budget must be a duration"),
    (["flows.benchmark", "--online", "nope"], "error: unknown River spec 'nope'"),
    (["flows.drift", "--by", "sideways"], "error: python -m flows.drift: argument --by: invalid choice"),
    (["lake", "info", "--bogus"], "error: python -m lake: unrecognized arguments: --bogus"),
    # the riverlake command (python -m flows.cli): its own options and those of the commands it runs
    (["flows.cli", "replay", "--shards", "0"], "error: shards must be >= 1, got 0"),
    (["flows.cli", "replay", "--bogus"], "error: riverlake replay: No such option: --bogus"),
    (["flows.cli", "drift", "--by", "sideways"], "error: riverlake drift: argument --by: invalid choice"),
    (["flows.cli", "info", "--bogus"], "error: riverlake: unrecognized arguments: --bogus"),
])
def test_a_user_mistake_is_one_line_and_exit_2(daily_lake, subprocess_env, command, expected):
    proc = _run([*command, "--lake", daily_lake] if command[0] != "lake" else [*command, "--lake", daily_lake],
                subprocess_env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert "Traceback" not in proc.stderr and "prefect" not in proc.stderr.lower()


def test_a_missing_table_is_one_line_from_every_flow_entry_point(tmp_path, subprocess_env):
    empty = str(tmp_path / "nothing-here")
    for module, table in (("flows.drift", "events"), ("flows.benchmark", "events"),
                          ("flows.versioning", "checkpoints"), ("flows.promotion", "predictions")):
        proc = _run([module, "--lake", empty], subprocess_env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (module, proc.stderr)
        assert lines[0].startswith(f"error: table '{table}' does not exist at "), lines
