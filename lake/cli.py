"""``python -m lake``: ingest data, maintain tables, show what the lake holds.

One function per subcommand (``cmd_<name>``), registered in :data:`COMMANDS`
with the function that adds its arguments; add a subcommand by adding a pair.
Errors of the lake (:class:`lake.errors.LakeError`) end the command with exit
code 2 and one line ``error: ...`` on stderr.

>>> build_parser().parse_args(["info", "--lake", "x"]).command
'info'
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lake.entry import DEFAULT_LAKE, LAKE_ENV, ArgumentParser, resolve_lake
from lake.errors import LakeError

PROGRESS_MIN_ROWS = 100_000
"""Inputs at least this large get progress lines on stderr."""


# --------------------------------------------------------------------------- ingest


def add_ingest(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--scenario", choices=["flights", "agrawal-drift", "urls", "friedman-drift", "rbf-drift"],
        help="a built-in scenario"
    )
    parser.add_argument(
        "--task", choices=["binary", "multiclass", "regression"],
        help="the learning task (default: inferred from the labels and printed; one task per lake)",
    )
    what.add_argument("--file", help="a .csv or .parquet file")
    scen = parser.add_argument_group("scenario options")
    scen.add_argument("--limit", type=int, help="flights: first N events in event-time order")
    scen.add_argument(
        "--key-by", choices=["carrier", "route"], help="flights: entity key (default carrier)"
    )
    scen.add_argument("--repeat", type=int, help="flights: play the year this many times (soak tests)")
    scen.add_argument("--n", type=int, help="agrawal-drift, urls, friedman-drift, rbf-drift: number of events")
    scen.add_argument("--seed", type=int, help="agrawal-drift, urls, friedman-drift, rbf-drift: random seed")
    user = parser.add_argument_group("file options")
    user.add_argument("--id-col", help="column of unique event ids (strings or integers)")
    user.add_argument(
        "--time-col",
        help="column of event times (ISO 8601, datetimes or epoch seconds; naive = UTC)",
    )
    user.add_argument(
        "--label-col", help="column of labels (booleans, 0/1, or two strings with --positive)"
    )
    user.add_argument(
        "--key-col", help="column of entity keys (default: every event has key 'all')"
    )
    when = user.add_mutually_exclusive_group()
    when.add_argument("--label-time-col", help="column of the times labels became known")
    when.add_argument(
        "--label-delay", type=float, help="labels become known SECONDS after their event"
    )
    user.add_argument("--positive", help="the label value that means 1, for string labels")
    user.add_argument(
        "--text-col",
        action="append",
        dest="text_cols",
        metavar="COLUMN",
        help="a CSV column to keep as text even where its values look like numbers (repeatable)",
    )
    user.add_argument(
        "--on-error",
        choices=["refuse", "dead-letter"],
        help="bad rows: refuse the whole file, writing nothing (default), or write the good rows "
        "and the bad ones to dead_letters",
    )
    user.add_argument(
        "--max-id-chars", type=int, help="longest event id or key accepted (default 512 characters)"
    )
    user.add_argument(
        "--max-field-bytes", type=int, help="longest text value accepted (default 65536 bytes)"
    )


_SCENARIO_FLAGS = {"limit": "--limit", "key_by": "--key-by", "repeat": "--repeat", "n": "--n", "seed": "--seed"}
_FILE_FLAGS = {
    "id_col": "--id-col",
    "time_col": "--time-col",
    "label_col": "--label-col",
    "key_col": "--key-col",
    "label_time_col": "--label-time-col",
    "label_delay": "--label-delay",
    "positive": "--positive",
    "text_cols": "--text-col",
    "on_error": "--on-error",
    "max_id_chars": "--max-id-chars",
    "max_field_bytes": "--max-field-bytes",
}
_SCENARIO_PARAMS = {
    "flights": {"limit": "limit", "key_by": "key", "repeat": "repeat"},
    "agrawal-drift": {"n": "n", "seed": "seed"},
    "urls": {"n": "n", "seed": "seed"},
    "friedman-drift": {"n": "n", "seed": "seed"},
    "rbf-drift": {"n": "n", "seed": "seed"},
}


def cmd_ingest(args: argparse.Namespace) -> int:
    from lake.ingest import IngestLimits, ingest_file, ingest_scenario

    def progress(done: int, total: int) -> None:
        if total >= PROGRESS_MIN_ROWS:
            print(
                f"  {done:,} / {total:,} rows written ({done / total:.0%})",
                file=sys.stderr,
                flush=True,
            )

    given = {name for name in (*_SCENARIO_FLAGS, *_FILE_FLAGS) if getattr(args, name) is not None}
    if args.scenario:
        allowed = _SCENARIO_PARAMS[args.scenario]
        wrong = sorted(given - set(allowed))
        if wrong:
            flags = ", ".join(_SCENARIO_FLAGS.get(w) or _FILE_FLAGS[w] for w in wrong)
            raise LakeError(f"not an option of --scenario {args.scenario}: {flags}")
        params = {allowed[name]: getattr(args, name) for name in given}
        report = ingest_scenario(args.lake, args.scenario, progress=progress, task=args.task, **params)
    else:
        wrong = sorted(given & set(_SCENARIO_FLAGS))
        if wrong:
            flags = ", ".join(_SCENARIO_FLAGS[w] for w in wrong)
            raise LakeError(f"not an option of --file (only of --scenario): {flags}")
        missing = [
            _FILE_FLAGS[c] for c in ("id_col", "time_col", "label_col") if getattr(args, c) is None
        ]
        if missing:
            raise LakeError(f"--file needs {', '.join(missing)}")
        sizes = {k: getattr(args, k) for k in ("max_id_chars", "max_field_bytes") if getattr(args, k) is not None}
        try:
            limits = IngestLimits(**sizes)
        except ValueError as ex:
            raise LakeError(f"--{str(ex).replace('_', '-')}") from None
        report = ingest_file(
            args.lake,
            args.file,
            id_col=args.id_col,
            time_col=args.time_col,
            label_col=args.label_col,
            key_col=args.key_col,
            label_time_col=args.label_time_col,
            label_delay=args.label_delay,
            positive=args.positive,
            on_error=args.on_error or "refuse",
            limits=limits,
            text_cols=args.text_cols or (),
            progress=progress,
            task=args.task,
            **_file_limits(),
        )
    print(report)
    return 0


def _file_limits() -> dict[str, Any]:
    """Ingest limits from RIVERLAKE_INGEST_MAX_BYTES and RIVERLAKE_INGEST_ROOTS (os.pathsep-separated)."""
    limits: dict[str, Any] = {}
    raw = os.environ.get("RIVERLAKE_INGEST_MAX_BYTES")
    if raw:
        try:
            limits["max_bytes"] = int(raw)
        except ValueError:
            raise LakeError(f"RIVERLAKE_INGEST_MAX_BYTES must be an integer, got {raw!r}") from None
    roots = os.environ.get("RIVERLAKE_INGEST_ROOTS")
    if roots:
        limits["allowed_roots"] = [r for r in roots.split(os.pathsep) if r]
    return limits


# --------------------------------------------------------------------------- maintain


def add_maintain(parser: argparse.ArgumentParser) -> None:
    from lake.schemas import TABLES

    parser.add_argument(
        "--table",
        action="append",
        choices=sorted(TABLES),
        help="table to maintain (repeatable; default: every table)",
    )
    parser.add_argument(
        "--retention-hours",
        type=int,
        default=168,
        help="delete files removed more than H hours ago (default 168)",
    )
    parser.add_argument("--dry-run", action="store_true", help="only list what vacuum would delete")


def cmd_maintain(args: argparse.Namespace) -> int:
    from lake.maintain import maintain

    if args.retention_hours < 0:
        raise LakeError(f"--retention-hours must be >= 0, got {args.retention_hours}")
    report = maintain(
        args.lake, args.table, retention_hours=args.retention_hours, dry_run=args.dry_run
    )
    if not report:
        print(f"no tables to maintain in {args.lake}")
    for name, r in report.items():
        verb = "would vacuum" if r["dry_run"] else "vacuumed"
        print(
            f"{name}: version {r['version_before']} -> {r['version_after']}, "
            f"compacted {r['files_removed_by_compaction']} files "
            f"into {r['files_added_by_compaction']}, "
            f"{verb} {r['files_vacuumed']} files"
        )
    return 0


# --------------------------------------------------------------------------- info


def add_info(parser: argparse.ArgumentParser) -> None:
    del parser  # no options beyond --lake


def cmd_info(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from lake.schemas import TABLES
    from lake.table import exists, open_table

    found = [name for name in TABLES if exists(args.lake, name)]
    if not found:
        print(f"no tables in {args.lake}")
    for name in found:
        dt = open_table(args.lake, name)
        rows = sum(pa.table(dt.get_add_actions(flatten=True)).column("num_records").to_pylist())
        print(f"{name:<16} version {dt.version():>6}   rows {rows:>12,}")
    from lake.tasks import read_task

    task = read_task(args.lake)
    if task is not None:
        print(task)
    from lake.summary import discard_lines

    lines = discard_lines(args.lake)
    if lines:
        print("what runs did not learn from (run_summaries):")
        for line in lines:
            print(f"  {line}")
    return 0


# --------------------------------------------------------------------------- reproduce


def add_reproduce(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-id", required=True, help="event whose prediction(s) to rebuild")
    parser.add_argument("--run-id", help="run that predicted it (needed when several did)")
    parser.add_argument("--model", help="only this model's prediction (default: every model of the run)")


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Exit 0 when every rebuilt score is bit-equal to the stored one, 1 when one is not (2: lake error)."""
    from lake.reproduce import reproduce

    results = reproduce(args.lake, args.event_id, run_id=args.run_id, model=args.model)
    print("\n\n".join(r.describe() for r in results))
    return 0 if all(r.bit_equal for r in results) else 1


def add_check_recovery(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recovery_dir", help="the Bytewax recovery folder (the -r DIR of bytewax.run)")


def cmd_check_recovery(args: argparse.Namespace) -> int:
    """Exit 0 when every snapshot in the folder is plain data, 2 (and nothing unpickled) otherwise."""
    from lake.integrity import IntegrityError, check_recovery

    if not os.path.isdir(args.recovery_dir):
        raise IntegrityError(f"recovery folder {args.recovery_dir!r} does not exist")
    n = check_recovery(args.recovery_dir)
    print(f"{n} snapshot(s) in {args.recovery_dir} hold plain data only: safe for Bytewax to resume from")
    return 0


# --------------------------------------------------------------------------- training-set


def add_training_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entities", required=True, help="CSV or Parquet file of entity rows")
    parser.add_argument("--as-of-col", required=True, help="column with each row's time (UTC if naive)")
    parser.add_argument("--key-col", default="key", help="column with the entity key (default: key)")
    parser.add_argument("--out", required=True, help="output file: Parquet, or CSV when it ends in .csv")


def cmd_training_set(args: argparse.Namespace) -> int:
    """Each entity row with its key's features as of its time (dataflows.training_set)."""
    from dataflows.training_set import read_entities, training_set, write_frame

    out = training_set(args.lake, read_entities(args.entities), as_of_col=args.as_of_col, key_col=args.key_col)
    write_frame(out, args.out)
    print(f"{out.height:,} rows with point-in-time features -> {args.out}")
    return 0


# --------------------------------------------------------------------------- wiring

Command = tuple[
    str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]

COMMANDS: list[Command] = [
    (
        "ingest",
        "write a scenario or a CSV/Parquet file to events and labels",
        add_ingest,
        cmd_ingest,
    ),
    ("maintain", "compact, checkpoint and vacuum tables", add_maintain, cmd_maintain),
    ("info", "version and row count of every table, and what runs did not learn from", add_info, cmd_info),
    ("reproduce", "rebuild a past prediction's score from its checkpoint and the learn log",
     add_reproduce, cmd_reproduce),
    ("check-recovery", "check a Bytewax recovery folder before resuming from it (`bytewax.run -r DIR`)",
     add_check_recovery, cmd_check_recovery),
    ("training-set", "join entity rows to their key's features as of each row's time (nothing from later)",
     add_training_set, cmd_training_set),
]
"""``(name, help, add_arguments, run)`` of every subcommand."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m lake", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lake", help=f"lake root (default: ${LAKE_ENV} or {DEFAULT_LAKE})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.lake = resolve_lake(args.lake)
    try:
        return args.run(args)
    except LakeError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
