"""Two campaigns with one name but different databases never share deployments: each
deployment carries its campaign's identity (``alflow-db:<hash>`` of database and name), and
``alflow deploy`` / ``run`` / ``retrain`` / ``labels-added`` refuse another database's slug."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.campaign import open_campaign
from flows.cli import main
from flows.config import load_config
from flows.deployments import DeploySettings, build_deployments
from flows.identity import DEPLOYED_FLOWS, campaign_identity, database_identity, identity_tag
from tests.deploy.helpers import PrefectServer, write_deploy_campaign

pytestmark = pytest.mark.timeout(300)
NAME = "twin-water"
POOL = "alflow-identity-pool"


def test_database_identity_ignores_secrets_drivers_and_path_spellings(tmp_path: Path) -> None:
    pg = "postgresql+psycopg://alice:s3cret@DB.example.org:5432/alflow?sslmode=require"
    assert database_identity(pg) == "postgresql://db.example.org:5432/alflow"
    assert database_identity("postgresql+asyncpg://bob:other@db.example.org:5432/alflow") == database_identity(pg)
    assert database_identity("postgresql://db.example.org:5432/other") != database_identity(pg)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert database_identity(f"sqlite:///{tmp_path}/link/../real/alflow.db") == \
        database_identity(f"sqlite:///{tmp_path}/link/alflow.db") == f"sqlite:///{(tmp_path / 'real').resolve()}/alflow.db"


def test_identity_is_the_database_and_the_name(tmp_path: Path) -> None:
    first = write_deploy_campaign(_mkdir(tmp_path, "a"), NAME)
    second = write_deploy_campaign(_mkdir(tmp_path, "b"), NAME)
    a, b = load_config(first), load_config(second)
    assert campaign_identity(a) == campaign_identity(load_config(first))  # stable
    assert len(campaign_identity(a)) == 12 and campaign_identity(a) != campaign_identity(b)  # another database
    same_db = _same_database_copy(first, tmp_path / "elsewhere" / "copy.toml")
    assert campaign_identity(load_config(same_db)) == campaign_identity(a)
    renamed = tmp_path / "c.toml"
    renamed.write_text(same_db.read_text().replace(f'name = "{NAME}"', 'name = "twin_water"', 1))
    assert campaign_identity(load_config(renamed)) != campaign_identity(a)  # same slug, other campaign


def test_build_deployments_tags_each_deployment(tmp_path: Path) -> None:
    ctx = open_campaign(write_deploy_campaign(tmp_path, NAME))
    deployments = build_deployments(ctx, DeploySettings())
    assert [d.flow_name for d in deployments] == list(DEPLOYED_FLOWS)
    assert all(identity_tag(ctx.config) in d.tags for d in deployments)


def test_a_second_database_with_the_same_name_is_refused(
        prefect_server: PrefectServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = write_deploy_campaign(_mkdir(tmp_path, "a"), NAME)
    second = write_deploy_campaign(_mkdir(tmp_path, "b"), NAME)
    with prefect_server.settings(), prefect_server.client() as client:
        assert main(["deploy", str(first), "--pool", POOL, "--cron", "0 4 * * *"]) == 0
        before = {name: client.read_deployment_by_name(f"{name}/{NAME}") for name in DEPLOYED_FLOWS}
        tag = identity_tag(load_config(first))
        assert all(tag in d.tags for d in before.values())
        capsys.readouterr()

        assert main(["deploy", str(second), "--pool", f"{POOL}-b", "--cron", "0 5 * * *"]) == 2
        message = _one_line_error(capsys)
        assert f"slug '{NAME}'" in message and str(first) in message and str(second) in message
        assert "rename [campaign] name" in message and f"prefect deployment delete 'al-cycle/{NAME}'" in message
        for name, old in before.items():  # nothing changed on the server
            now = client.read_deployment_by_name(f"{name}/{NAME}")
            assert (now.updated, now.tags, now.parameters) == (old.updated, old.tags, old.parameters)
        assert [s.schedule.cron for s in before["al-cycle"].schedules] == ["0 4 * * *"]
        assert not any(pool.name == f"{POOL}-b" for pool in client.read_work_pools())
        assert not (second.parent / "runs").exists()  # refused before creating the campaign database

        # the other commands that would share the slug's lock, artifacts or trigger refuse too
        open_campaign(second)
        for command in (["run", str(second), "--generations", "0"], ["retrain", str(second)],
                        ["labels-added", str(second), "--count", "1"]):
            assert main(command) == 2, command
            assert f"slug '{NAME}'" in _one_line_error(capsys)

        # the same campaign deploys again, from its own config or from another path to its database
        assert main(["deploy", str(first), "--pool", POOL]) == 0
        copy = _same_database_copy(first, tmp_path / "elsewhere" / "copy.toml")
        assert main(["deploy", str(copy), "--pool", POOL]) == 0
        cycle = client.read_deployment_by_name(f"al-cycle/{NAME}")
        assert cycle.parameters["config_path"] == str(copy) and tag in cycle.tags


def _mkdir(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _same_database_copy(config: Path, path: Path) -> Path:
    """``config`` at ``path``, its work folder and database (relative in the original) absolute."""
    path.parent.mkdir(parents=True, exist_ok=True)
    campaign = load_config(config).campaign
    text = config.read_text().replace(
        "[campaign]\n", f"[campaign]\nwork_dir = \"{campaign.work_dir}\"\n"
                        f"database_url = \"{campaign.database_url}\"\n", 1)
    path.write_text(text)
    return path


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err

