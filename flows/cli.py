"""``alflow``: run, inspect, export and report active-learning campaigns."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
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
    rich progress bars on a terminal, plain progress log lines otherwise.

    With ``PREFECT_API_URL`` set, refuses (exit 2) when the campaign slug's deployments on
    that server belong to another campaign database (``flows.identity``): it would share
    their committee lock and overwrite their artifacts."""
    from flows.active_learning import active_learning, task_runner_for
    from flows.campaign import open_campaign
    from flows.identity import check_if_server
    from flows.progress import terminal_progress

    check_if_server(args.config)
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


def cmd_labels_added(args: argparse.Namespace) -> int:
    """``alflow labels-added CONFIG [--count N]``: emit ``alflow.labels.added`` for the
    campaign by hand, as a labelling pass does (``flows.dashboard.announce_labels``), e.g.
    after adding labels outside the flows, so the ``retrain`` deployment's trigger fires.

    ``count``: ``--count``, else the done training labels the latest committee has not
    seen (``plan_retrain``). Refuses (exit 2) on a bad config or unknown campaign, without
    ``PREFECT_API_URL`` (an event sent to Prefect's ephemeral in-process server reaches no
    automation), when the server does not answer, when the slug's deployments belong to
    another campaign database, and when there is nothing to announce. The event is
    delivered (Prefect's events worker drained) before the command returns.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    from flows.campaign import open_campaign
    from flows.dashboard import LABELS_ADDED, announce_labels, campaign_resource, campaign_slug
    from flows.deployments import plan_retrain
    from flows.identity import NoPrefectServer, check_deployed_identity, deployed, require_prefect_server

    ctx = open_campaign(args.config, create=False)
    api_url = require_prefect_server("an alflow.labels.added event sent to Prefect's ephemeral in-process "
                                     "server reaches no automation")
    plan = plan_retrain(ctx, 0)
    count = args.count if args.count is not None else plan.new_labels
    if count < 1:
        raise LookupError(f"campaign {ctx.name!r}: no done training labels are new to the latest committee "
                          f"({plan.new_labels}); nothing to announce (--count N emits anyway)")
    try:
        with get_client(sync_client=True) as client:
            if (failure := client.api_healthcheck()) is not None:
                raise NoPrefectServer(f"the Prefect server at {api_url} does not answer: {failure}")
            check_deployed_identity(ctx.config_path, ctx.config, client)
            retrain = deployed(ctx.name, client).get(f"retrain/{campaign_slug(ctx.name)}")
            automations = (client.read_resource_related_automations(f"prefect.deployment.{retrain.id}")
                           if retrain is not None else [])
    except httpx.HTTPError as exc:
        raise NoPrefectServer(f"cannot reach the Prefect server at {api_url}: {exc}") from None
    announce_labels(ctx.name, ctx.campaign_id, count)
    if not _deliver_events(EventsWorker, timeout_s=60.0):
        raise NoPrefectServer(f"the {LABELS_ADDED} event was not delivered to {api_url} within 60 s")
    resource = campaign_resource(ctx.name, ctx.campaign_id)["prefect.resource.id"]
    source = ("--count" if args.count is not None else f"labels new to committee {plan.committee_id}"
              if plan.committee_id is not None else "done training labels, no committee yet")
    print(f"emitted {LABELS_ADDED}: resource {resource} (campaign {ctx.name}, id {ctx.campaign_id}), "
          f"count {count} ({source}), to {api_url}")
    print(_what_it_starts(ctx.name, retrain, automations, plan.new_labels))
    return 0


def _deliver_events(worker_class: type, timeout_s: float) -> bool:
    """Wait until Prefect's events worker (asynchronous, a thread of its own) has sent the
    queued events, then stop it; False if that took longer than ``timeout_s``."""
    import threading

    sent = threading.Thread(target=worker_class.instance().wait_until_empty, daemon=True)
    sent.start()
    sent.join(timeout_s)
    _, undelivered = worker_class.drain_all(timeout=timeout_s, at_exit=False)
    return not sent.is_alive() and not undelivered


def _what_it_starts(campaign_name: str, retrain: object, automations: list, new_labels: int) -> str:
    """One line: the retrain deployment's trigger(s) and what a run will do."""
    from flows.dashboard import LABELS_ADDED, campaign_resource, campaign_slug

    name = f"retrain/{campaign_slug(campaign_name)}"
    if retrain is None:
        return f"starts: nothing (no deployment {name} on this server; alflow deploy CONFIG creates it)"
    resource = campaign_resource(campaign_name, 0)["prefect.resource.id"]
    triggers = [a for a in automations if LABELS_ADDED in (getattr(a.trigger, "expect", None) or set())]
    if not triggers:
        return f"starts: nothing ({name} has no {LABELS_ADDED} trigger: deployed with --no-retrain-trigger?)"
    lines = []
    for automation in triggers:
        trigger = automation.trigger
        match = (trigger.match.model_dump() if trigger.match else {}).get("prefect.resource.id")
        if not automation.enabled:
            lines.append(f"nothing: automation {automation.name!r} of {name} is disabled")
            continue
        if match not in (None, resource):
            lines.append(f"nothing: automation {automation.name!r} matches {match}, not {resource}")
            continue
        when = ("once this event arrives" if trigger.threshold <= 1 else
                f"after {trigger.threshold} such events within {trigger.within.total_seconds():g} s, this one included")
        minimum = next((action.parameters.get("min_new_labels") for action in automation.actions
                        if getattr(action, "parameters", None)), None)
        then = ("" if minimum is None else
                f"; the run trains if at least {minimum} label(s) are new to the committee (now {new_labels})")
        lines.append(f"a run of {name} {when} (automation {automation.name!r}){then}")
    return "starts: " + "; ".join(lines)


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
    labels = sub.add_parser("labels-added", help="emit alflow.labels.added for a campaign by hand "
                                                 "(starts the retrain deployment's trigger)")
    labels.add_argument("config")
    labels.add_argument("--count", type=_positive_int, default=None,
                        help="the event's label count (default: done training labels the latest committee "
                             "has not seen)")
    labels.set_defaults(func=cmd_labels_added)
    from flows.deployments import add_subcommands  # alflow deploy / alflow retrain

    add_subcommands(sub)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: a bad input is one red line on stderr and exit 2, never a
    traceback (also ``deploy/serve.py``)."""
    from flows.config import ConfigError
    from flows.identity import NoPrefectServer
    from flows.storage import LevelOfTheoryMismatch

    for name in LIBRARY_LOGGERS:  # shown through Prefect's handlers (PREFECT_LOGGING_EXTRA_LOGGERS)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return args.func(args)
    except (ConfigError, LevelOfTheoryMismatch, LookupError, FileNotFoundError, NoPrefectServer) as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
