"""``riverlake``: one command for everything the project runs.

    riverlake ingest --scenario flights                  # fill the lake
    riverlake replay --model linear,tree --shards 2      # replay it through the models
    riverlake live --brokers host:9092 --topic events    # or learn from a Kafka topic live
    riverlake info                                       # what the lake holds
    riverlake version | promote | drift | benchmark | serve | ...

Every subcommand takes ``--lake`` (else ``$RIVERLAKE_LAKE``, else ``lakehouse``).
``replay``'s and ``live``'s options are made from the settings classes (:mod:`dataflows.settings`),
one per setting, and each also reads ``RIVERLAKE_<NAME>``; the other subcommands
run the existing ``python -m`` commands with their own options (``riverlake drift
--help``). A user mistake ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from lake.entry import DEFAULT_LAKE, LAKE_ENV, resolve_lake

PASS_THROUGH: dict[str, tuple[str, str, Sequence[str]]] = {
    # name: (module with main(argv), help, leading arguments)
    "ingest": ("lake.cli", "write a scenario or a CSV/Parquet file to events and labels", ("ingest",)),
    "info": ("lake.cli", "version and row count of every table, and what runs did not learn from", ("info",)),
    "maintain": ("lake.cli", "compact, checkpoint and vacuum tables", ("maintain",)),
    "reproduce": ("lake.cli", "rebuild a past prediction's score from its checkpoint and the learn log",
                  ("reproduce",)),
    "training-set": ("lake.cli", "join entity rows to their key's features as of each row's time",
                     ("training-set",)),
    "version": ("flows.versioning", "version the lake's checkpoints in the MLflow registry", ()),
    "promote": ("flows.promotion", "promote a challenger that beats the champion", ()),
    "drift": ("flows.drift", "an Evidently drift report of two windows of the lake", ()),
    "benchmark": ("flows.benchmark", "online learning vs batch retraining on the same history", ()),
    "serve": ("flows.serve", "serve the flows as scheduled Prefect deployments", ()),
    "api": ("serving.app", "the prediction API: predict, learn from labels, an online feature store", ()),
    "demo": ("flows.demo", "the whole loop on the flights data, end to end", ()),
    "ui": ("flows.ui", "the Prefect and MLflow UIs over this lake", ()),
    "maintenance-flow": ("flows.maintenance", "lake maintenance as a Prefect flow", ()),
}
"""Subcommands that run an existing ``main(argv)`` with the arguments given (and ``--lake`` resolved)."""


def _with_lake(args: list[str]) -> list[str]:
    given = any(a == "--lake" or a.startswith("--lake=") for a in args)
    wants_help = any(a in ("-h", "--help") for a in args)
    return args if given or wants_help else ["--lake", resolve_lake(None), *args]


def _pass_through(name: str, module: str, leading: Sequence[str]) -> Callable[..., int]:
    def command(ctx: typer.Context) -> int:
        import importlib

        from lake.entry import prog_as

        args = _with_lake(list(ctx.args))
        with prog_as("riverlake" if leading else f"riverlake {name}"):  # usage and errors name this command
            return importlib.import_module(module).main([*leading, *args]) or 0

    command.__name__ = name.replace("-", "_")
    return command


# --------------------------------------------------------------------------- replay: options from the settings


def _option_type(annotation: Any) -> type:
    """The command-line type of a setting: bool, int, float, or text (parsed by the setting itself)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = typing.get_origin(annotation)
    if base is typing.Annotated:
        return _option_type(args[0])
    if base in (typing.Union, types.UnionType) and len(args) == 1:
        return _option_type(args[0])
    return annotation if annotation in (bool, int, float) else str


def setting_parameters(kind: str) -> list[inspect.Parameter]:
    """One keyword parameter per setting of a run of ``kind``, each a typer option (default: not given)."""
    from dataflows.settings import fields_of

    out = []
    for name, info, group in fields_of(kind):
        kind_ = _option_type(info.annotation)
        flag = "--" + name.replace("_", "-")
        default = info.default
        shown = ",".join(default) if isinstance(default, tuple) else "none" if default is None else default
        literal = typing.get_origin(info.annotation) is typing.Literal
        doc_choices = f"; one of {', '.join(typing.get_args(info.annotation))}" if literal else ""
        doc = f"{info.description} (default: {shown}{doc_choices}; env {group.env_var(name)})"
        decls = (f"{flag}/--no-{name.replace('_', '-')}",) if kind_ is bool else (flag,)
        if name == "lake":
            doc = f"{info.description} (default: ${LAKE_ENV}, else {DEFAULT_LAKE})"
        option = typer.Option(*decls, help=doc, rich_help_panel=f"{group.concern} settings", show_default=False)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                     annotation=Annotated[kind_ | None, option], default=None))
    return out


def replay(*, snapshot_s: float = 10.0, no_recovery: bool = False, **given: Any) -> int:
    """Replay the lake's events and labels through the models (recovery on; prints the run id)."""
    import logging

    from dataflows.defaults import SettingsError
    from dataflows.online import run_replay
    from dataflows.settings import RunSettings
    from lake.entry import settings as reading_settings
    from lake.errors import RunIdentityError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    given = {k: v for k, v in given.items() if v is not None}  # options not given: the settings' own
    given["lake"] = resolve_lake(given.get("lake"))
    with reading_settings():  # a bad value (or a task the lake does not hold): one line naming it, exit status 2
        run = RunSettings.from_env(**given).with_lake_task()
    try:
        run_id = run_replay(recovery=not no_recovery, snapshot_s=snapshot_s, settings=run)
    except (RunIdentityError, SettingsError) as ex:  # refused before any work: one line
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(run_id)
    return 0


def live(*, snapshot_s: float = 10.0, recovery: str | None = None, **given: Any) -> int:
    """Predict and learn from a Kafka topic live, into the lake (with --stop-at-end: until the topic's end)."""
    import logging
    from datetime import timedelta
    from pathlib import Path

    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    from dataflows.online import build_live_flow
    from dataflows.settings import RunSettings
    from lake import integrity
    from lake.entry import settings as reading_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    given = {k: v for k, v in given.items() if v is not None}
    given["lake"] = resolve_lake(given.get("lake"))
    with reading_settings():
        run = RunSettings.from_env(kind="live", **given).with_lake_task()
    config = None
    if recovery is not None:
        if not Path(recovery).exists():
            Path(recovery).mkdir(parents=True)
            init_db_dir(Path(recovery), 1)
        integrity.check_recovery(recovery)
        config = RecoveryConfig(recovery)
    flow = build_live_flow(settings=run)
    cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=snapshot_s), recovery_config=config)
    return 0


RUN_OPTIONS: dict[str, list[inspect.Parameter]] = {
    "replay": [
        inspect.Parameter("snapshot_s", inspect.Parameter.KEYWORD_ONLY, default=10.0, annotation=Annotated[
            float, typer.Option("--snapshot-s", help="seconds between recovery snapshots", rich_help_panel="run")]),
        inspect.Parameter("no_recovery", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--no-recovery", help="do not keep recovery state", rich_help_panel="run")]),
    ],
    "live": [
        inspect.Parameter("snapshot_s", inspect.Parameter.KEYWORD_ONLY, default=10.0, annotation=Annotated[
            float, typer.Option("--snapshot-s", help="seconds between recovery snapshots", rich_help_panel="run")]),
        inspect.Parameter("recovery", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option("--recovery", help="Bytewax recovery folder (made if new): a restart resumes "
                                     "at the stored offsets", rich_help_panel="run")]),
    ],
}
"""Options of a run that are not settings (how the process runs it)."""


def _settings_command(kind: str, run: Callable[..., int]) -> Callable[..., int]:
    """A typer command for ``run``: its run options, then one option per setting of a ``kind`` run."""
    def command(**kwargs: Any) -> int:
        return run(**kwargs)

    params = [*RUN_OPTIONS[kind], *setting_parameters(kind)]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = run.__doc__
    command.__name__ = kind
    return command


# --------------------------------------------------------------------------- the app


def build_app() -> typer.Typer:
    """The ``riverlake`` command (built on call: the settings classes decide the replay options)."""
    app = typer.Typer(name="riverlake", help="One command for everything riverlake runs. Every subcommand takes "
                      f"--lake (else ${LAKE_ENV}, else {DEFAULT_LAKE}).",
                      no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.command("replay", help=replay.__doc__)(_settings_command("replay", replay))
    app.command("live", help=live.__doc__)(_settings_command("live", live))
    for name, (module, help_, leading) in PASS_THROUGH.items():
        package = module.removesuffix(".cli").removesuffix(".app")  # python -m lake, python -m serving
        old = f"python -m {package}{' ' + ' '.join(leading) if leading else ''}"
        app.command(name, help=f"{help_} (as {old}; its options)",
                    add_help_option=False,
                    context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
            _pass_through(name, module, leading))
    app.command("check-recovery", help="check a Bytewax recovery folder before resuming from it")(_check_recovery)
    return app


def _check_recovery(recovery_dir: Annotated[str, typer.Argument(help="the -r DIR of bytewax.run")]) -> int:
    from lake.cli import main as lake_main

    return lake_main(["check-recovery", recovery_dir])


def _invoke(command: Any, args: list[str], prog: str) -> int:
    """Run a typer/click command in this process; a bad option raises :class:`~lake.errors.UsageError`."""
    from lake.errors import UsageError

    try:
        code = command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as ex:  # a bad option or value: one line naming the command
        ctx = getattr(ex, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else f"{prog}: "
        message = ex.format_message() if hasattr(ex, "format_message") else str(ex)
        raise UsageError(" ".join(f"{where}{message}".split())) from None
    return int(code or 0)


def main(argv: Sequence[str] | None = None, *, prog: str = "riverlake") -> int:
    """Run ``riverlake`` with ``argv``; returns the exit status. A bad option raises
    :class:`~lake.errors.UsageError` (one line under :func:`lake.entry.run_main`)."""
    args = list(sys.argv[1:] if argv is None else argv) or ["--help"]
    return _invoke(typer.main.get_command(build_app()), args, prog)


def replay_main(argv: Sequence[str] | None = None, *, prog: str = "riverlake replay") -> int:
    """``riverlake replay ARGS``, also run as ``python -m dataflows.online ARGS``."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.command(help=replay.__doc__)(_settings_command("replay", replay))
    return _invoke(typer.main.get_command(app), list(sys.argv[1:] if argv is None else argv), prog)


def run() -> None:
    """The ``riverlake`` console script."""
    from lake.entry import run_main

    run_main(main)


if __name__ == "__main__":
    run()
