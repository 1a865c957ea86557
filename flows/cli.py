"""``alflow``: run, inspect, export and report active-learning campaigns."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
LIBRARY_LOGGERS = ("flows", "nnp_core", "qm_backends")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join(LIBRARY_LOGGERS))

console = Console(stderr=False, width=160)
errors = Console(stderr=True, soft_wrap=True)


TERMINAL_COLUMNS = {  # status key -> short header for the terminal table
    "generation": "gen", "status": "status", "labels": "labels", "accurate": "acc",
    "candidate": "cand", "selected": "sel", "filtered": "filt", "duplicate": "dup",
    "rejected": "rej", "failed": "fail", "fresh_force_mae_eV_A": "fresh F MAE",
    "validation_force_mae_eV_A": "val F MAE", "explore_s": "MD s", "label_s": "QM s", "train_s": "train s",
}


def _status_table(status: dict) -> Table:
    table = Table(title=f"labels {status['labels']} done, {status['failed_labels']} failed, "
                        f"{status['pending_labels']} pending (errors in eV/Å)")
    for header in TERMINAL_COLUMNS.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in status["generations"]:
        table.add_row(*("" if row[key] is None else str(row[key]) for key in TERMINAL_COLUMNS))
    return table


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume the campaign (holding its committee lock, like the deployments);
    rich progress bars on a terminal, plain progress log lines otherwise."""
    from flows.active_learning import active_learning, task_runner_for
    from flows.campaign import open_campaign
    from flows.progress import terminal_progress

    ctx = open_campaign(args.config)
    flow = active_learning.with_options(task_runner=task_runner_for(ctx.config))
    with terminal_progress(console):
        summary = flow(config_path=str(ctx.config_path), max_new_generations=args.generations)
    console.print_json(json.dumps(summary))
    return cmd_status(argparse.Namespace(config=args.config, json=False))


def cmd_status(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from flows.campaign import open_campaign
    from flows.status import campaign_status

    ctx = open_campaign(args.config, create=False)
    with Session(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        console.print(_status_table(status))
        if status["latest_committee"]:
            console.print(f"latest committee: {status['latest_committee']}")
        if status["stop_reason"]:
            console.print(f"stopped: {status['stop_reason']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from flows.campaign import open_campaign
    from flows.storage import export_ase_db, export_extxyz, to_dataframe

    ctx = open_campaign(args.config, create=False)
    suffix = {"extxyz": ".extxyz", "ase-db": ".db", "csv": ".csv"}[args.format]
    output = Path(args.output or ctx.work_dir / f"{ctx.name}-labelled{suffix}")
    with Session(ctx.engine) as session:
        if args.format == "extxyz":
            n = export_extxyz(session, ctx.campaign_id, output)
        elif args.format == "ase-db":
            n = export_ase_db(session, ctx.campaign_id, output)
        else:
            frame = to_dataframe(session, "labels", ctx.campaign_id, arrays="omit")
            frame.to_csv(output, index=False)
            n = len(frame)
    console.print(f"wrote {n} rows to {output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.campaign import open_campaign
    from flows.report import write_report

    ctx = open_campaign(args.config, create=False)
    path = write_report(ctx, Path(args.output) if args.output else None)
    console.print(f"report: {path} (plots beside it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume a campaign")
    run.add_argument("config")
    run.add_argument("--generations", type=int, default=None, help="stop after this many new generations")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="per-generation table of a campaign")
    status.add_argument("config")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    export = sub.add_parser("export", help="export labelled frames")
    export.add_argument("config")
    export.add_argument("--format", choices=["extxyz", "ase-db", "csv"], default="extxyz")
    export.add_argument("--output", default=None)
    export.set_defaults(func=cmd_export)
    report = sub.add_parser("report", help="PNG plots and a markdown summary")
    report.add_argument("config")
    report.add_argument("--output", default=None)
    report.set_defaults(func=cmd_report)
    from flows.deployments import add_subcommands  # alflow deploy / alflow retrain

    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from flows.config import ConfigError
    from flows.storage import LevelOfTheoryMismatch

    args = build_parser().parse_args(argv)
    for name in LIBRARY_LOGGERS:  # shown through Prefect's handlers (PREFECT_LOGGING_EXTRA_LOGGERS)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return args.func(args)
    except (ConfigError, LevelOfTheoryMismatch, LookupError, FileNotFoundError) as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
