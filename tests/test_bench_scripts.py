"""The benchmark commands BENCHMARKS.md quotes still run and report what it copies from them.

Small sizes: these check the commands, not the figures (benchmarks print numbers; tests
assert behaviour).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict[str, str], timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_on_urls_compares_the_columnar_dataflow_with_the_bare_loop(subprocess_env):
    out = _run(["dataflows.bench", "--scenario", "urls", "--events", "3000", "--repeat", "1"], subprocess_env)
    fields = dict(re.findall(r"^(\w+)\s+(.+)$", out, re.MULTILINE))
    # both phases predicted every event (the command itself refuses phases that disagree)
    assert fields["events"] == "3000" and fields["scenario"] == "urls" and fields["model"] == "linear-hash"
    ratio = float(re.search(r"^end_to_end_vs_bare_river: ([0-9.]+)$", out, re.MULTILINE).group(1))
    assert ratio > 0 and float(fields["end_to_end_events_per_s"]) > 0


def test_bench_on_a_categorical_history_reports_the_columnar_and_the_item_path(subprocess_env):
    out = _run(["dataflows.bench", "--scenario", "categorical", "--events", "2000", "--repeat", "1"], subprocess_env)
    fields = dict(re.findall(r"^(\w+)\s+(.+)$", out, re.MULTILINE))
    # the three phases predicted every event (the command refuses phases that disagree)
    assert fields["events"] == "2000" and fields["scenario"] == "categorical" and fields["model"] == "linear"
    assert float(fields["item_path_events_per_s"]) > 0 and float(fields["item_path_vs_bare_river"]) > 0
    ratio = float(re.search(r"^end_to_end_vs_bare_river: ([0-9.]+)$", out, re.MULTILINE).group(1))
    assert ratio > 0


def test_soak_on_urls_reports_throughput_memory_and_the_columnar_models_accuracy(subprocess_env, tmp_path):
    lake = str(tmp_path / "lake")
    columnar = _run(["dataflows.bench.soak", "--scenario", "urls", "--n", "6000", "--every", "0.2", "--lake", lake],
                    subprocess_env)
    assert re.search(r"replayed 12,000 items \(6,000 events\) in [0-9.]+ s: .* events per CPU second", columnar)
    assert "'checkpoint_every': 100000" in columnar
    # the item-by-item path on the same stream: the same accuracy, weights and checkpoint size
    env = {**subprocess_env, "RIVERLAKE_COLUMNAR": "0"}
    items = _run(["dataflows.bench.soak", "--scenario", "urls", "--n", "6000", "--every", "0.2",
                  "--lake", str(tmp_path / "lake-items")], env)

    def state(out: str) -> str:
        return re.search(r"^(\{'model'.*\})$", out, re.MULTILINE).group(1)

    assert state(columnar) == state(items)
    assert "'accuracy'" in state(columnar) and "'final_model_bytes'" in state(columnar)
