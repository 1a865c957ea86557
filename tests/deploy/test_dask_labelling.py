"""Labelling through prefect-dask on a ``distributed.LocalCluster`` (2 worker processes)
gives the same labels as the thread runner, and the cluster recipe's Slurm job script."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.campaign import open_campaign
from flows.config import load_config
from flows.deployments import label_backlog
from flows.storage import LabelRow, LabelStatus
from tests.deploy.helpers import REPO, PrefectServer, add_pending_frames, write_deploy_campaign

pytest.importorskip("prefect_dask")
pytestmark = pytest.mark.timeout(600)

# one frame per task in both: a fresh SCF guess per frame, so the two runs compute alike
THREAD_EXECUTION = """[execution]
task_runner = "thread"
max_workers = 2
label_batch_size = 1
"""
DASK_EXECUTION = """[execution]
task_runner = "dask"
dask_cluster_class = "distributed.LocalCluster"
label_batch_size = 1

[execution.cluster_kwargs]
n_workers = 2
processes = true
threads_per_worker = 1
dashboard_address = ":0"
"""


def _labels(config: Path) -> dict[int, LabelRow]:
    ctx = open_campaign(config, create=False)
    with Session(ctx.engine) as session:
        rows = session.execute(select(LabelRow.structure_id, LabelRow).order_by(LabelRow.structure_id)).all()
        session.expunge_all()
    return dict(rows)


def test_dask_labels_equal_thread_labels(prefect_server: PrefectServer, tmp_path: Path) -> None:
    thread = write_deploy_campaign(tmp_path, "labels-thread", execution=THREAD_EXECUTION)
    dask = write_deploy_campaign(tmp_path, "labels-dask", execution=DASK_EXECUTION)
    for config in (thread, dask):
        assert len(add_pending_frames(config, 4, seed=7)) == 4
        with prefect_server.settings():  # the Dask workers get this API URL with each task
            assert label_backlog(config_path=str(config)) == {"done": 4, "failed": 0}
    by_thread, by_dask = _labels(thread), _labels(dask)
    assert len(by_dask) == 4
    for structure_id, label in by_dask.items():
        reference = by_thread[structure_id]
        assert label.status == reference.status == LabelStatus.DONE
        assert label.energy_eV == pytest.approx(reference.energy_eV, abs=1e-7)  # eV
        np.testing.assert_allclose(label.forces_eV_A, reference.forces_eV_A, atol=1e-6)  # eV/Å
    # labelled in the Dask worker processes, not in this one
    def pids(labels: dict[int, LabelRow]) -> set[int]:
        return {int(label.worker.split(":")[1]) for label in labels.values()}  # worker = host:pid:tag

    assert os.getpid() not in pids(by_dask) and pids(by_thread) == {os.getpid()}


def test_slurm_recipe_makes_a_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster recipe's ``cluster_kwargs`` are valid ``SLURMCluster`` arguments
    (nothing is submitted: no workers are asked for)."""
    jobqueue = pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)  # its log_directory is relative to where the flow runs
    config = load_config(REPO / "deploy" / "slurm" / "water-slurm.toml")
    assert config.execution.dask_cluster_class == "dask_jobqueue.SLURMCluster"
    kwargs = {**config.execution.cluster_kwargs, "n_workers": 0}
    with jobqueue.SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    assert "distributed.cli.dask_worker" in script and "--nthreads 1 " in script  # one SCF at a time...
    assert f"#SBATCH --cpus-per-task={kwargs['job_cpu']}" in script  # ...on all the job's CPUs
    assert "export OMP_NUM_THREADS=8" in script
