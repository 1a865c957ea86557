"""Which campaign a Prefect deployment belongs to, beyond its name.

Deployment names (``al-cycle/<slug>``), the committee lock (``alflow-<slug>-committee``),
artifact keys and the ``alflow.campaign.<slug>`` event resource all derive from the
campaign name's slug alone, so two configs with the same ``[campaign] name`` but
different databases would silently share them. A campaign's *identity* is a short
stable hash of its database (the URL without driver, user name, password or query;
SQLite paths absolute, symlinks resolved) and its name; ``build_deployments`` tags each
deployment ``alflow-db:<identity>``, and ``alflow deploy``, ``alflow run``, ``alflow
retrain`` and ``alflow labels-added`` refuse (``DeploymentConflict``, a ``ConfigError``:
exit 2 from the CLI) when the slug's deployments on the server carry another identity.

Deployments without such a tag (registered by an older alflow or by ``prefect deploy``
from ``deploy/prefect.yaml``) cannot be told apart and are not refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.config import CampaignConfig, ConfigError, load_config
from flows.dashboard import campaign_slug
from flows.storage.engine import database_identity

#: the flows deployed once per campaign (``flows.deployments``), deployment name = slug
DEPLOYED_FLOWS = ("al-cycle", "retrain", "label-backlog")
TAG_PREFIX = "alflow-db:"


class DeploymentConflict(ConfigError):
    """The campaign's deployments on the Prefect server belong to another campaign
    database (same slug); a ``ConfigError`` on ``campaign.name``, so one line, exit 2."""


class NoPrefectServer(RuntimeError):
    """``PREFECT_API_URL`` is not set, or the server it names does not answer."""


def campaign_identity(config: CampaignConfig) -> str:
    """12 hex digits of SHA-256 over the campaign's database identity and its name."""
    text = f"{database_identity(config.campaign.database_url)}\n{config.campaign.name}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def identity_tag(config: CampaignConfig) -> str:
    """The deployment tag ``alflow-db:<identity>``."""
    return f"{TAG_PREFIX}{campaign_identity(config)}"


def require_prefect_server(why: str) -> str:
    """``PREFECT_API_URL`` (environment or Prefect profile); ``NoPrefectServer`` if unset."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise NoPrefectServer(
            f"PREFECT_API_URL is not set: {why}; point it at the server your deployments are on, e.g. "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api (or prefect config set PREFECT_API_URL=...)")
    return str(url)


def deployed(campaign_name: str, client: Any) -> dict[str, Any]:
    """The campaign slug's deployments on the server, by ``flow/slug`` name."""
    from prefect.exceptions import ObjectNotFound

    found = {}
    for flow_name in DEPLOYED_FLOWS:
        name = f"{flow_name}/{campaign_slug(campaign_name)}"
        try:
            found[name] = client.read_deployment_by_name(name)
        except ObjectNotFound:
            continue
    return found


def foreign_deployments(config: CampaignConfig, client: Any) -> dict[str, Any]:
    """The slug's deployments tagged with another campaign identity, by name."""
    mine = identity_tag(config)
    return {name: deployment for name, deployment in deployed(config.campaign.name, client).items()
            if any(tag.startswith(TAG_PREFIX) and tag != mine for tag in deployment.tags or [])}


def check_deployed_identity(config_path: str | Path, config: CampaignConfig, client: Any = None) -> None:
    """Raise ``DeploymentConflict`` if the campaign slug's deployments on the server belong
    to another database (or another campaign name with the same slug). ``client``: a sync
    Prefect client; by default one for the current settings (``NoPrefectServer`` if the
    server does not answer)."""
    if client is None:
        import httpx
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL

        try:
            with get_client(sync_client=True) as own:
                return check_deployed_identity(config_path, config, own)
        except httpx.HTTPError as exc:
            raise NoPrefectServer(f"cannot reach the Prefect server at {PREFECT_API_URL.value() or '(ephemeral)'}: "
                                  f"{exc.__class__.__name__}: {exc}") from None
    foreign = foreign_deployments(config, client)
    if not foreign:
        return
    slug = campaign_slug(config.campaign.name)
    others = sorted({str((d.parameters or {}).get("config_path", "?")) for d in foreign.values()})
    their_tags = sorted({tag for d in foreign.values() for tag in d.tags or [] if tag.startswith(TAG_PREFIX)})
    delete = "; ".join(f"prefect deployment delete '{name}'" for name in sorted(foreign))
    raise DeploymentConflict(config_path, [("campaign.name", (
        f"the Prefect deployments of campaign slug {slug!r} ({', '.join(sorted(foreign))}) belong to another "
        f"campaign database (config_path {', '.join(others)}; {', '.join(their_tags)}, this config "
        f"{identity_tag(config)}), and would share their committee lock and artifacts; rename [campaign] name, "
        f"or delete the old ones: {delete}"))])


def check_if_server(config_path: str | Path) -> None:
    """``check_deployed_identity`` when Prefect runs as a server (``PREFECT_API_URL`` set;
    the ephemeral in-process server holds no deployments worth guarding)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        check_deployed_identity(config_path, load_config(config_path))


def refusing_foreign_deployments(command: Callable[[Any], int]) -> Callable[[Any], int]:
    """A CLI command (``args.config``) that first runs ``check_if_server``: a campaign must
    not take the committee lock of, or overwrite the artifacts of, another database's
    campaign with the same slug."""
    def checked(args: Any) -> int:
        check_if_server(args.config)
        return command(args)

    checked.__doc__, checked.__name__ = command.__doc__, command.__name__
    return checked
