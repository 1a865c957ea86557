"""Serve a campaign's Prefect deployments from this process (same as ``alflow deploy``).

    python deploy/serve.py examples/water.toml --cron "0 */6 * * *"

Runs until interrupted: creates or updates ``al-cycle/<campaign>`` (on the cron schedule),
``retrain/<campaign>`` (started by ``alflow.labels.added`` events) and
``label-backlog/<campaign>`` on the server at ``PREFECT_API_URL``, and executes their flow
runs in subprocesses. ``--pool NAME`` registers them on a work pool and exits instead.
"""

from __future__ import annotations

import argparse
import sys

import flows.cli  # noqa: F401  (first: sets alflow's Prefect environment defaults before prefect loads)
from flows.deployments import add_deploy_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/serve.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_deploy_arguments(parser)
    return flows.cli.run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
