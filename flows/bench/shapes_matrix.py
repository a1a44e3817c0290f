"""Every README command, with its defaults, on every stream shape: a Markdown table of what happened.

    python -m flows.bench.shapes_matrix [--root /tmp/shapes] [--shapes tiny,one-key] [--budget 20m] [--timeout 900] \\
        [--task binary|regression|multiclass] [--out table.md]

For each shape of :mod:`lake.scenarios.shapes` it writes the shape's CSV file and runs, as
subprocesses and in this order, exactly what a user types: ``lake ingest --file``, the replay
(``dataflows.online``), the same replay under ``bytewax.run``, ``lake info``, ``lake reproduce``
of the last event, ``flows.versioning``, ``flows.promotion``, ``flows.drift``, ``flows.benchmark``
and ``lake maintain``. Each cell is ``ok`` (exit 0), ``refused`` (exit 2, one ``error:`` line, no
traceback) or ``FAILED`` (anything else), with its wall time; the defaults each command chose
(the lines it printed) follow the table. ``--budget`` is passed to the benchmark only when given.
``--task`` gives the shapes that task's labels (:func:`lake.scenarios.shapes.shape_rows`) and
ingests them with ``--task`` (the binary shapes are ingested as before, the task inferred).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lake.entry import ArgumentParser, run_main

COMMANDS = ("ingest", "replay", "bytewax.run", "info", "reproduce", "versioning", "promotion", "drift",
            "benchmark", "maintain")
"""The commands of the matrix, in the order they run on a shape's lake."""

_CHOSEN = (
    re.compile(r"^\s+(window|label_ttl|grace|stats_window|action_window): (\S+)"),
    re.compile(r"^(drift windows: .*?) \("),
    re.compile(r"^chosen: (.*)"),
    re.compile(r"^budget: (.*)"),
)


@dataclass(frozen=True)
class Outcome:
    """One command on one shape: exit status, wall seconds, its output and what it chose."""

    command: str
    returncode: int
    seconds: float
    stdout: str
    stderr: str

    @property
    def status(self) -> str:
        """``ok``, ``refused`` (exit 2, one ``error:`` line on stderr, no traceback) or ``FAILED``."""
        if self.returncode == 0:
            return "ok"
        lines = self.stderr.strip().splitlines()
        if self.returncode == 2 and "Traceback" not in self.stderr and lines and lines[-1].startswith("error:"):
            return "refused"
        return "FAILED"

    @property
    def refusal(self) -> str | None:
        """The ``error:`` line of a refusal, the last stderr line of a failure, else ``None``."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if self.status != "ok" and lines else None

    @property
    def chosen(self) -> list[str]:
        """The defaults the command printed as chosen from the data (``window: 1d``, ``drift windows: ...``)."""
        out = []
        for line in (self.stderr + "\n" + self.stdout).splitlines():
            for pattern in _CHOSEN:
                m = pattern.match(line)
                if m:
                    out.append(": ".join(m.groups()) if len(m.groups()) > 1 else m.group(1))
                    break
        return list(dict.fromkeys(out))


def command_lines(lake: str, csv_path: str, *, last_event: str, budget: str | None,
                  task: str = "binary") -> dict[str, list[str]]:
    """Command name -> argv (after ``python -m``) of every README command on ``lake``, defaults only
    (and ``--task`` at ingest for a task other than binary)."""
    from lake.scenarios.shapes import INGEST_ARGS

    bench = ["flows.benchmark", "--lake", lake] + (["--budget", budget] if budget else [])
    told = ["--task", task] if task != "binary" else []
    return {
        "ingest": ["lake", "ingest", "--lake", lake, "--file", csv_path, *INGEST_ARGS, *told],
        "replay": ["dataflows.online", "--lake", lake],
        "bytewax.run": ["bytewax.run", f"dataflows.online:build_flow(lake={lake!r})"],
        "info": ["lake", "info", "--lake", lake],
        "reproduce": ["lake", "reproduce", "--lake", lake, "--event-id", last_event],
        "versioning": ["flows.versioning", "--lake", lake],
        "promotion": ["flows.promotion", "--lake", lake],
        "drift": ["flows.drift", "--lake", lake],
        "benchmark": bench,
        "maintain": ["lake", "maintain", "--lake", lake],
    }


def run_command(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> tuple[int, float,
                                                                                                        str, str]:
    """Run ``python -m ARGV``: ``(returncode, wall seconds, stdout, stderr)``; a timeout is returncode -9."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
        return proc.returncode, time.perf_counter() - start, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as ex:
        err = ex.stderr.decode() if isinstance(ex.stderr, bytes) else (ex.stderr or "")
        return -9, time.perf_counter() - start, "", err + f"\ntimed out after {timeout:.0f} s"


def run_shape(name: str, root: Path, *, commands: tuple[str, ...] = COMMANDS, budget: str | None = None,
              n: int | None = None, timeout: float = 900, env: dict[str, str] | None = None,
              task: str = "binary") -> list[Outcome]:
    """Write shape ``name`` with ``task``'s labels under ``root`` and run ``commands`` on a fresh lake of it,
    in order."""
    import shutil

    from lake.scenarios.shapes import shape_rows, write_shape

    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    csv_path = write_shape(name, folder / f"{name}.csv", n=n, task=task)
    last_event = str(shape_rows(name, n=n)[-1]["id"]) if "reproduce" in commands else ""
    lines = command_lines(str(folder / "lake"), str(csv_path), last_event=last_event, budget=budget, task=task)
    outcomes = []
    for command in commands:
        rc, secs, out, err = run_command(lines[command], env=env, timeout=timeout)
        outcomes.append(Outcome(command, rc, secs, out, err))
        print(f"{name} ({task}) {command}: {outcomes[-1].status} in {secs:.1f} s", file=sys.stderr, flush=True)
    return outcomes


def markdown(results: dict[str, list[Outcome]]) -> str:
    """The shape x command table, then per shape the chosen defaults and any refusal or failure line."""
    commands = [o.command for o in next(iter(results.values()))]
    lines = ["| shape | " + " | ".join(f"`{c}`" for c in commands) + " |",
             "|---|" + "---|" * len(commands)]
    for name, outcomes in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{o.status} {o.seconds:.1f} s" for o in outcomes) + " |")
    lines.append("")
    for name, outcomes in results.items():
        chosen, previous = [], None
        for o in outcomes:
            if o.chosen:  # the replay under bytewax.run chooses what the replay chose: said once
                chosen.append(f"{o.command}: " + ("the same" if o.chosen == previous else ", ".join(o.chosen)))
                previous = o.chosen
        said = [f"{o.command} {o.status}: `{o.refusal}`" for o in outcomes if o.refusal]
        lines.append(f"- **{name}**: " + "; ".join(chosen + said))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from lake.scenarios.shapes import SHAPES, TASKS

    parser = ArgumentParser(prog="python -m flows.bench.shapes_matrix", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/riverlake-shapes", help="folder for the shapes' files and lakes")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names (default: all)")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated commands (default: all)")
    parser.add_argument("--budget", default=None, help="the benchmark's --budget (default: its own default)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one command may take (default 900)")
    parser.add_argument("--task", default="binary", choices=TASKS, help="the shapes' labels (default: binary)")
    parser.add_argument("--out", default=None, help="also write the table here, rewritten after every shape")
    args = parser.parse_args(argv)
    names = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    commands = tuple(c for c in args.commands.split(",") if c)
    if bad := [c for c in commands if c not in COMMANDS]:
        parser.error(f"unknown command(s) {', '.join(bad)}; known: {', '.join(COMMANDS)}")
    env = dict(os.environ)
    results: dict[str, list[Outcome]] = {}
    for name in names:
        results[name] = run_shape(name, Path(args.root), commands=commands, budget=args.budget,
                                  timeout=args.timeout, env=env, task=args.task)
        if args.out:
            Path(args.out).write_text(markdown(results) + "\n")
    print(markdown(results))
    return 1 if any(o.status == "FAILED" for outcomes in results.values() for o in outcomes) else 0


if __name__ == "__main__":
    run_main(main)
