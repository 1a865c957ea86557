"""``alflow``: run, inspect, export and report active-learning campaigns."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
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


def _status_table(status: dict, wide: bool = False) -> Table:
    """The generation table: 80 columns at most (``wide``: every count and timing)."""
    from flows.live import status_table

    return status_table(status, wide=wide)


def cmd_run(args: argparse.Namespace) -> int:
    """Run or resume the campaign (holding its committee lock, like the deployments);
    a live display on a terminal (``flows.live``), plain progress log lines otherwise;
    Prefect's own log lines and the libraries' INFO lines only with ``-v``.

    With ``PREFECT_API_URL`` set, refuses (exit 2) when the campaign slug's deployments on
    that server belong to another campaign database (``flows.identity``): it would share
    their committee lock and overwrite their artifacts."""
    from flows.active_learning import active_learning, preflight
    from flows.tasks import task_runner_for
    from flows.campaign import open_campaign
    from flows.identity import check_if_server
    from flows.interrupt import stop_on_ctrl_c
    from flows.progress import terminal_progress

    check_if_server(args.config)
    ctx = open_campaign(args.config, new_committee=args.new_committee)
    preflight(ctx)
    flow = active_learning.with_options(task_runner=task_runner_for(ctx.config))
    if not args.verbose:  # for the rest of the process: Prefect's lines at exit too
        from flows.live import quiet_console_logs

        quiet_console_logs()
    def say(line: str) -> None:  # the live display stops first: the cursor comes back
        display.close()
        errors.print(f"[bold yellow]{escape(line)}[/]", highlight=False)

    # Ctrl-C: one line on what was kept, exit 130 within a second (flows.interrupt)
    with terminal_progress(console, verbose=args.verbose) as display, stop_on_ctrl_c(
            ctx, say, cleanup=lambda: _checkpoint(ctx.config.campaign.database_url)):
        summary = flow(config_path=str(ctx.config_path), max_new_generations=args.generations,
                       extend=args.generations is not None)
    console.print_json(json.dumps(summary))
    return cmd_status(argparse.Namespace(config=args.config, json=False, wide=False))


def _say_notes(ctx) -> None:
    """One line per way the config differs from the campaign a read-only command shows."""
    for note in ctx.notes:
        errors.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def cmd_status(args: argparse.Namespace) -> int:
    from flows.campaign import open_campaign
    from flows.status import campaign_status
    from flows.storage.records import reading

    ctx = open_campaign(args.config, create=False)
    _say_notes(ctx)
    with reading(ctx.engine) as session:
        status = campaign_status(session, ctx.campaign_id, ctx.work_dir)
    latest = status["latest_committee"]
    if latest and not (Path(latest).is_dir() and any(Path(latest).iterdir())):
        errors.print(f"[bold red]warning:[/] the latest committee's checkpoint {escape(latest)} is missing; "
                     "`alflow run` cannot resume the campaign until it is restored", highlight=False)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        console.print(_status_table(status, wide=args.wide))
        if status["latest_committee"]:
            console.print(f"latest committee: {status['latest_committee']}")
        if status["stop_reason"]:
            console.print(f"stopped: {status['stop_reason']}")
        if ctx.config.loop.max_labels:
            asked = status["labels"] + status["failed_labels"] + status["pending_labels"]
            console.print(f"label budget: {asked} of {ctx.config.loop.max_labels} spent ([loop] max_labels)",
                          markup=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``alflow export CONFIG [--format F] [--output PATH] [--force]``: the labelled frames
    (extended XYZ, ASE database) or the labels table (CSV), read from the database opened
    read-only.

    Refuses (exit 2, nothing written): a database that fails SQLite's integrity check, an
    existing output without ``--force``, a folder, and (even with ``--force``) the
    campaign's own config or database files. The output is written to a temporary file in
    its folder and renamed into place when complete: a failed export leaves an earlier
    file as it was and nothing half-written."""
    from flows.campaign import open_campaign
    from flows.storage.backup import check_integrity, check_output
    from flows.storage.export import export_ase_db, export_csv, export_extxyz
    from flows.storage.records import reading

    ctx = open_campaign(args.config, create=False)
    _say_notes(ctx)
    if args.format == "mace-model":
        return _export_mace_models(ctx, args)
    suffix = {"extxyz": ".extxyz", "ase-db": ".db", "csv": ".csv"}[args.format]
    output = Path(args.output) if args.output else ctx.work_dir / f"{ctx.name}-labelled{suffix}"
    protected = _campaign_files(ctx.config_path, ctx.config.campaign.database_url)
    check_output(output, overwrite=args.force, protected=protected)
    check_integrity(ctx.engine, f"the database of campaign {ctx.name!r} ({ctx.engine.url.database})")
    kwargs = {"overwrite": args.force, "protected": protected}
    with reading(ctx.engine) as session:
        if args.format == "extxyz":
            n = export_extxyz(session, ctx.campaign_id, output, **kwargs)
        elif args.format == "ase-db":
            n = export_ase_db(session, ctx.campaign_id, output, **kwargs)
        else:
            n = export_csv(session, "labels", ctx.campaign_id, output, **kwargs)
    console.print(f"wrote {n} rows to {output}")
    return 0


def _export_mace_models(ctx, args: argparse.Namespace) -> int:
    """``--format mace-model``: each member of the latest committee as a standard MACE
    model file (``member_K.model``) in the folder ``--output`` (default
    ``<work_dir>/<campaign>-mace-models``); an existing folder with files is refused
    without ``--force``."""
    from flows.config import ConfigError
    from flows.steps.training import load_latest

    latest = load_latest(ctx)
    if latest is None:
        raise ConfigError(ctx.config_path, [("committee", "the campaign has no committee yet; run it first")])
    committee_id, committee = latest
    from nnp_core.models.mace import MACE, write_mace_models

    if not isinstance(committee.model, MACE):
        raise ConfigError(ctx.config_path, [("committee", (
            f"the latest committee ({committee_id}) is {committee.architecture!r}; --format mace-model needs "
            f"[committee] architecture = \"mace\" or \"mace-shallow\""))])

    folder = Path(args.output) if args.output else ctx.work_dir / f"{ctx.name}-mace-models"
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not args.force)):
        raise ConfigError(ctx.config_path, [("export", f"{folder} exists and is not an empty folder; "
                                                       f"give another --output, or --force to replace its models")])
    if args.force and folder.is_dir():
        for member in folder.glob("member_*.model"):
            member.unlink()
    paths = write_mace_models(committee.model, folder)
    console.print(f"wrote {len(paths)} MACE model file(s) of committee {committee_id} to {folder} "
                  f"(mace.calculators.MACECalculator(model_paths=...))")
    return 0


def _campaign_files(config_path: Path, database_url: str) -> list[Path]:
    """The files no output may ever be written onto: the config, and a SQLite database
    with its companions (-wal, -shm, -journal)."""
    from flows.storage.backup import sidecar_files, sqlite_file

    database = sqlite_file(database_url)
    return [Path(config_path), *([database, *sidecar_files(database)] if database is not None else [])]


def cmd_backup(args: argparse.Namespace) -> int:
    """``alflow backup CONFIG DEST [--force]``: a consistent copy of the campaign's SQLite
    database (SQLite's online backup API: safe while a run is writing), written to a
    temporary file beside ``DEST``, checked with ``PRAGMA integrity_check`` and renamed
    onto ``DEST``. Refuses (exit 2, nothing written) an existing ``DEST`` without
    ``--force``, the campaign's own files, a damaged source, and non-SQLite databases
    (back those up with the database's own tools, e.g. pg_dump)."""
    from flows.config import load_config
    from flows.storage.backup import backup_database

    config_path = Path(args.config).resolve()
    config = load_config(config_path)
    result = backup_database(config.campaign.database_url, Path(args.destination), overwrite=args.force,
                             protected=[config_path])
    console.print(f"backed up {result.source} to {result.destination}: {result.pages} pages, "
                  f"{result.bytes} bytes, integrity_check ok")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.campaign import open_campaign
    from flows.report import write_report
    from flows.storage.backup import OutputError

    ctx = open_campaign(args.config, create=False)
    out_dir = Path(args.output) if args.output else ctx.work_dir / "report"
    try:
        path = write_report(ctx, out_dir)
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise OutputError(f"cannot write the report to {out_dir}: {exc.strerror or exc} "
                          f"(--output DIR writes it elsewhere)") from None
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
    from flows.retraining import plan_retrain
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
    announce_labels(ctx.name, ctx.campaign_id, count, ctx.identity)
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
    add_init_arguments(sub.add_parser(
        "init", help="write a commented, validated campaign TOML for a molecule (a structure file or an "
                     "ASE molecule name), with a measured cost estimate"))
    run = sub.add_parser("run", help="run or resume a campaign")
    run.add_argument("config")
    run.add_argument("--generations", type=_non_negative_int, default=None,
                     help="run this many more generations (0 or more), even if the campaign had stopped")
    run.add_argument("--new-committee", action="store_true",
                     help="accept changed [committee] settings: the next training starts a new committee from scratch")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="also show Prefect's own log lines and the libraries' INFO lines")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="per-generation table of a campaign")
    status.add_argument("config")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wide", action="store_true", help="every count and timing (wider than 80 columns)")
    status.set_defaults(func=cmd_status)
    export = sub.add_parser("export", help="export labelled frames")
    export.add_argument("config")
    export.add_argument("--format", choices=["extxyz", "ase-db", "csv", "mace-model"], default="extxyz",
                        help="labelled frames (extxyz, ase-db), the labels table (csv), or the latest MACE "
                             "committee's members as MACE model files (mace-model; --output is a folder)")
    export.add_argument("--output", default=None,
                        help="file to write (default: <work_dir>/<campaign>-labelled.<ext>)")
    export.add_argument("--force", action="store_true", help="replace an existing output file")
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
    backup = sub.add_parser("backup", help="a consistent, checked copy of the campaign's SQLite database "
                                           "(safe while a run is writing)")
    backup.add_argument("config")
    backup.add_argument("destination", metavar="DEST", help="the copy's file path")
    backup.add_argument("--force", action="store_true", help="replace an existing DEST")
    backup.set_defaults(func=cmd_backup)
    add_md_arguments(sub.add_parser(
        "md", help="production MD with the campaign's latest committee: an extended XYZ trajectory with its "
                   "uncertainty (--feed-back: uncertain frames become candidates of the next generation)"))
    add_spectrum_arguments(sub.add_parser(
        "spectrum", help="the IR spectrum of the campaign's latest committee (dipole MD, with the committee's band "
                         "and harmonic lines): CSV and PNG in the report folder, stored in the database"))
    add_subcommands(sub)  # alflow deploy / alflow retrain
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (0 or more), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


# The parser is built from this module alone: the commands import prefect, torch and
# the database layer (flows.storage) when they run, so ``alflow --help`` and ``alflow CMD --help`` stay fast.

def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``alflow deploy`` (also ``deploy/serve.py``; re-exported by
    ``flows.deployments``); runs ``flows.serving.cmd_deploy``."""
    parser.add_argument("config")
    parser.add_argument("--cron", default=None, help="al-cycle schedule, e.g. '0 */6 * * *'")
    parser.add_argument("--timezone", default=None, help="time zone of the cron schedule (default UTC)")
    parser.add_argument("--generations", type=int, default=None, help="generations per al-cycle run")
    parser.add_argument("--retrain-min-labels", type=int, default=None,
                        help="N: a triggered retrain trains once N labels are new to the committee")
    parser.add_argument("--retrain-events", type=int, default=None,
                        help="alflow.labels.added events that start a retrain run (default 1)")
    parser.add_argument("--retrain-within-s", type=float, default=None, help="window for --retrain-events > 1, s")
    parser.add_argument("--no-retrain-trigger", action="store_true", help="no event trigger on retrain")
    parser.add_argument("--pool", default=None,
                        help="register on this work pool (created as type process if missing) and exit")
    parser.add_argument("--limit", type=int, default=None, help="most flow runs served at once")
    parser.set_defaults(func=_deploy)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``alflow deploy`` and ``alflow retrain`` (``flows.serving``) on the
    CLI's subparsers (re-exported by ``flows.deployments``)."""
    add_deploy_arguments(subparsers.add_parser(
        "deploy", help="serve (or register on a work pool) the al-cycle, retrain and label-backlog "
                       "deployments of a campaign"))
    retrain_cmd = subparsers.add_parser("retrain", help="retrain the committee on all labels now")
    retrain_cmd.add_argument("config")
    retrain_cmd.add_argument("--min-new-labels", type=int, default=0,
                             help="skip unless at least this many labels are new to the committee")
    retrain_cmd.set_defaults(func=_retrain)


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``alflow init`` (``flows.init``)."""
    parser.add_argument("structure", metavar="STRUCTURE",
                        help="a structure file ase.io.read reads (.xyz, .pdb, .cif, ...) or an ase.build.molecule "
                             "name (e.g. H2O, CH3CH2OH)")
    parser.add_argument("--method", required=True, help="HF or a DFT functional, e.g. PBE, PBE0, B3LYP")
    parser.add_argument("--basis", required=True, help="a basis PySCF knows, e.g. def2-SVP, 6-31G*, cc-pVDZ")
    parser.add_argument("--name", default=None, help="campaign name (default: the file's stem or the molecule name)")
    parser.add_argument("--charge", type=int, default=0, help="total charge, e (default 0)")
    parser.add_argument("--multiplicity", type=_positive_int, default=1, help="spin multiplicity 2S+1 (default 1)")
    parser.add_argument("--output", default=None, help="the TOML file to write (default: <name>.toml here)")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    parser.add_argument("--no-estimate", action="store_true",
                        help="skip timing one reference calculation (the cost estimate)")
    parser.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    from flows.init import cmd_init

    return cmd_init(args, console)


def _run(args: argparse.Namespace) -> int:
    return _writing(args, cmd_run)


def add_md_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``alflow md`` (``flows.production``); defaults from the campaign's [explore]."""
    parser.add_argument("config")
    parser.add_argument("--temperature", type=float, default=None, metavar="K",
                        help="thermostat (NVE: initial) temperature, K (default: the first [explore] temperature)")
    parser.add_argument("--ps", type=float, default=1.0, help="length of the run, ps (default 1)")
    parser.add_argument("--timestep", type=float, default=None, metavar="FS",
                        help="timestep, fs (default: [explore] timestep_fs)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="independent replicas, run together in one batch (default 1)")
    parser.add_argument("--thermostat", choices=("langevin", "nve"), default="langevin",
                        help="langevin (BAOAB, default) or nve (velocity Verlet, no friction)")
    parser.add_argument("--friction", type=float, default=None, metavar="PER_FS",
                        help="Langevin friction, 1/fs (default: [explore] friction_per_fs)")
    parser.add_argument("--seed", type=int, default=0, help="replica r draws its velocities and noise from seed+r")
    parser.add_argument("--interval", type=int, default=None, metavar="N",
                        help="record every N steps (default: [explore] record_interval_steps)")
    parser.add_argument("--start", default=None, metavar="FILE",
                        help="start from this structure (its last frame; default: the campaign's reference geometry)")
    parser.add_argument("--output", default=None, metavar="PATH",
                        help="extended XYZ to write (default: <work_dir>/<campaign>-md.extxyz)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--feed-back", action="store_true",
                        help="store the frames with max_force_dev >= trust_lo as candidates of the next generation "
                             "(the next alflow run labels them)")
    parser.set_defaults(func=_md)


def _md(args: argparse.Namespace) -> int:
    return _writing(args, cmd_md) if args.feed_back else cmd_md(args)


def cmd_md(args: argparse.Namespace) -> int:
    """``alflow md CONFIG``: production MD with the latest committee (``flows.production``).
    A bad option is one line and exit 2, before anything runs; without ``--feed-back`` the
    database is only read."""
    from flows.production import UNCERTAINTY_MEANING, MDArgumentError, ProductionSettings, run_production

    try:
        settings = ProductionSettings(
            ps=args.ps, temperature_K=args.temperature, timestep_fs=args.timestep, replicas=args.replicas,
            thermostat=args.thermostat, friction_per_fs=args.friction, seed=args.seed,
            interval_steps=args.interval, start=None if args.start is None else Path(args.start))
        run = run_production(args.config, settings, output=None if args.output is None else Path(args.output),
                             force=args.force, feed_back=args.feed_back)
    except MDArgumentError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    console.print(escape(run.summary()), highlight=False, soft_wrap=True)
    for line in run.warnings():
        errors.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)
    if (line := run.feed_back_line()) is not None:
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print(escape(UNCERTAINTY_MEANING), highlight=False, soft_wrap=True)
    return 0


def add_spectrum_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``alflow spectrum`` (``flows.spectrum``); checked by ``SpectrumSettings.check``."""
    parser.add_argument("config")
    parser.add_argument("--temperature", type=float, default=300.0, metavar="K",
                        help="temperature of the Langevin equilibration and the NVE runs, K (default 300)")
    parser.add_argument("--replicas", type=int, default=8, metavar="R",
                        help="independent replicas, run together in one batch (default 8)")
    parser.add_argument("--ps", type=float, default=20.0, metavar="PS",
                        help="NVE production per replica, ps (default 20; the resolution is 1/length)")
    parser.add_argument("--equilibration-ps", type=float, default=2.0, metavar="PS",
                        help="Langevin equilibration before it, ps (default 2)")
    parser.add_argument("--production-friction", type=float, default=0.0, metavar="GAMMA",
                        help="keep a weak Langevin thermostat (friction GAMMA, 1/fs) on during the production, "
                             "so each replica redraws its mode energies every 1/GAMMA fs (lines broadened by "
                             "GAMMA/(2 pi c)); default 0: NVE")
    parser.add_argument("--timestep", type=float, default=0.5, metavar="FS", help="timestep, fs (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="replica r draws its velocities and noise from seed+r")
    parser.add_argument("--window", default="hann", metavar="hann|gaussian|none",
                        help="window on the dipole-derivative autocorrelation (default hann)")
    parser.add_argument("--correction", default="harmonic", metavar="harmonic|none",
                        help="quantum correction factor of the classical lineshape (default harmonic)")
    parser.add_argument("--correlation-ps", type=float, default=2.0, metavar="PS",
                        help="use the autocorrelation up to this lag: the lines' width, 1/PS "
                             "(default 2 ps: 16.7 cm-1); at most --ps")
    parser.add_argument("--zero-padding", type=int, default=4, metavar="F",
                        help="zero-pad the correlation to F times its length: a finer grid (default 4)")
    parser.add_argument("--max-wavenumber", type=float, default=4000.0, metavar="CM1",
                        help="upper end of the spectrum, cm-1 (default 4000)")
    parser.add_argument("--reference-harmonic", action="store_true",
                        help="also the reference backend's harmonic IR at the committee's minimum (a reference "
                             "Hessian: minutes for a small molecule at DFT)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="folder for ir-spectrum-N.csv/.png and ir-harmonic-N.csv (default <work_dir>/report)")
    parser.set_defaults(func=_spectrum)


def _spectrum(args: argparse.Namespace) -> int:
    return _writing(args, cmd_spectrum)


def cmd_spectrum(args: argparse.Namespace) -> int:
    """``alflow spectrum CONFIG``: the IR spectrum of the latest committee (``flows.spectrum``).
    A bad option or a committee without a dipole head is one line and exit 2, before
    anything runs; the database is written once, at the end."""
    from flows.progress import terminal_progress
    from flows.spectrum import BAND_MEANING, SpectrumError, SpectrumSettings, run_spectrum

    try:
        settings = SpectrumSettings(
            temperature_K=args.temperature, replicas=args.replicas, ps=args.ps,
            equilibration_ps=args.equilibration_ps, timestep_fs=args.timestep, seed=args.seed,
            production_friction_per_fs=args.production_friction,
            window=args.window, correction=args.correction, zero_padding=args.zero_padding,
            correlation_ps=args.correlation_ps, max_wavenumber_cm1=args.max_wavenumber,
            reference_harmonic=args.reference_harmonic)
        settings.check()
        with terminal_progress(console):
            run = run_spectrum(args.config, settings, output=None if args.output is None else Path(args.output))
    except SpectrumError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    for line in run.summary_lines():
        console.print(escape(line), highlight=False, soft_wrap=True)
    for line in run.warnings():
        errors.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)
    console.print(escape(BAND_MEANING), highlight=False, soft_wrap=True)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from flows.serving import cmd_deploy

    return _writing(args, cmd_deploy)


def _retrain(args: argparse.Namespace) -> int:
    from flows.serving import cmd_retrain
    from flows.identity import refusing_foreign_deployments

    return _writing(args, refusing_foreign_deployments(cmd_retrain))


def _writing(args: argparse.Namespace, command: Callable[[argparse.Namespace], int]) -> int:
    """Run a command that writes to the campaign database (run, deploy, retrain).

    Before: refuse (exit 2, the file untouched) an existing SQLite file that is not a
    database, is truncated or damaged (``PRAGMA quick_check``), or holds another
    application's tables (``flows.storage.backup.check_before_writing``).
    After, also when the command failed: checkpoint the write-ahead log into the main
    file (``flows.storage.engine.checkpoint``), so the ``.db`` file alone holds the data
    (a plain copy of it is a complete copy)."""
    from flows.config import load_config
    from flows.storage.backup import check_before_writing

    config = load_config(args.config, writable=True)
    check_before_writing(config.campaign.database_url)
    try:
        return command(args)
    finally:
        _checkpoint(config.campaign.database_url)


def _checkpoint(database_url: str) -> None:
    """``checkpoint`` an existing, writable SQLite campaign database. A checkpoint kept
    from completing by other connections is a warning; an error is ignored (the
    command's own outcome tells what is wrong with the file)."""
    from flows.storage.backup import sqlite_file
    from flows.storage.engine import checkpoint_file

    path = sqlite_file(database_url)
    if path is None or not path.is_file() or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return
    try:
        done = checkpoint_file(path)
    except Exception:  # noqa: BLE001 (never hide the command's own outcome)
        return
    if not done:
        errors.print(f"[yellow]warning:[/] {escape(str(path))}: other connections kept the write-ahead log from "
                     f"being checkpointed; {escape(str(path))}-wal holds recent data (copy the database with "
                     f"alflow backup, not cp)", highlight=False)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: a bad input is one red line on stderr and exit 2, never a
    traceback (also ``deploy/serve.py``)."""
    from flows.config import ConfigError
    from flows.identity import NoPrefectServer
    from flows.runner import CampaignBusy
    from flows.storage import LevelOfTheoryMismatch
    from flows.storage.backup import OutputError, damage, damaged_error, unwritable_error

    for name in LIBRARY_LOGGERS:  # shown through Prefect's handlers (PREFECT_LOGGING_EXTRA_LOGGERS)
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return args.func(args)
    except (ConfigError, LevelOfTheoryMismatch, LookupError, FileNotFoundError, NoPrefectServer,
            CampaignBusy, OutputError) as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    except Exception as exc:  # a damaged or read-only database found mid-command: one line
        refusal = (damaged_error("the campaign database", exc) if damage(exc)
                   else unwritable_error("the campaign database", exc))
        if refusal is None:
            raise
        errors.print(f"[bold red]error:[/] {escape(str(refusal))}", highlight=False)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
