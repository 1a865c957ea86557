"""A newcomer's first hour, as the README tells it, in a fresh folder: ``alflow init``
for their molecule, ``alflow run``, ``alflow md`` with the potential, ``alflow export``."""

from __future__ import annotations

import ase.io
import numpy as np
from ase.build import molecule

from flows.cli import main
from tests.flows.test_init import SHRINK, TINY


def test_init_run_md_export_in_a_fresh_folder(prefect_harness, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    ase.io.write("water.xyz", molecule("H2O"))
    assert main(["init", "water.xyz", *TINY, "--output", "water.toml"]) == 0
    assert "labels" in capsys.readouterr().out  # the cost estimate: one reference calculation timed
    text = open("water.toml").read()
    for old, new in SHRINK:  # only to make it run in seconds
        text = text.replace(old, new)
    open("water.toml", "w").write(text)

    assert main(["run", "water.toml"]) == 0
    out = capsys.readouterr().out
    assert "generation limit 1 reached" in out
    assert max(len(line) for line in out.splitlines() if line.startswith(("│", "┃", "┏", "└"))) <= 80

    assert main(["md", "water.toml", "--ps", "0.02", "--interval", "4", "--output", "md.extxyz"]) == 0
    trajectory = ase.io.read("md.extxyz", index=":")
    assert len(trajectory) >= 2 and np.isfinite(trajectory[-1].get_forces()).all()
    assert "max_force_dev" in trajectory[-1].info

    assert main(["export", "water.toml", "--format", "extxyz", "--output", "labels.extxyz"]) == 0
    labels = ase.io.read("labels.extxyz", index=":")
    assert len(labels) >= 8 and all(np.isfinite(a.get_potential_energy()) for a in labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.extxyz", "md.extxyz", "runs", "water.toml",
                                                          "water.xyz"]
