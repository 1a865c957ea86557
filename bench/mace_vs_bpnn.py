"""Benchmark: a MACE committee (mace-torch members, ``[committee] architecture = "mace"``)
against the BPNN committee of ``examples/ethanol.toml``, trained by alflow's trainer on
exactly the same random labels of the cached ethanol PBE/def2-SVP pool, scored on its
``test.extxyz``: force and energy MAE, how well ``max_force_dev`` ranks the true errors
(Spearman), and training time.

Both use the example's ``[train]`` settings (same epochs, batch, learning rate, early
stopping, per-member bootstrap splits and seeds); MACE has the settings the issue
measured a single model with (32 channels, max_L 1, r_max 5 Å, correlation 3, float64)
and 2 interactions.

    .venv/bin/python -m bench.mace_vs_bpnn [--labels 50 100] [--members 2] [--epochs N] [--no-write]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench._report import command_line, machine_line, markdown_table, write_section
from bench.data_efficiency import MACE_COMMITTEE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "ethanol-pbe-def2svp"
MACE = MACE_COMMITTEE


def _read(name: str) -> list:
    import ase.io

    return ase.io.read(DATA / name, index=":")


def _train_and_score(architecture: dict, frames: list, test: list, members: int, epochs: int | None,
                     seed: int) -> list:
    from flows.config import CommitteeSection, load_config
    from flows.steps.training import evaluation_metrics
    from nnp_core.training import train_committee

    config = load_config(ROOT / "examples" / "ethanol.toml")
    committee_cfg = CommitteeSection.model_validate({**config.committee.model_dump(), "members": members, **architecture})
    train_cfg = replace(config.train_config(), seed=seed, **({"max_epochs": epochs} if epochs else {}))
    start = time.perf_counter()
    committee, report = train_committee(frames, train_cfg, n_members=members,
                                        architecture=committee_cfg.architecture,
                                        model_hparams=committee_cfg.network_hparams())
    wall = time.perf_counter() - start
    metrics = evaluation_metrics(committee, test)
    epochs_run = sum(m.epochs_run for m in report.members) / len(report.members)
    return [committee_cfg.architecture, len(frames), members, round(epochs_run), 1000 * metrics["force_mae_eV_A"],
            1000 * metrics["energy_mae_eV_atom"], metrics["force_dev_spearman"], wall]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[50])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the example's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    rows = []
    for n in args.labels:
        frames = [pool[i] for i in np.random.default_rng(args.seed).choice(len(pool), n, replace=False)]
        for architecture in ({"architecture": "bpnn"}, MACE):
            rows.append(_train_and_score(architecture, frames, test, args.members, args.epochs, args.seed))
            print(rows[-1], flush=True)
    table = markdown_table(["committee", "labels", "members", "epochs (mean)", "test F MAE (meV/Å)",
                            "test E MAE (meV/atom)", "Spearman(max_force_dev, error)", "training (s)"], rows)
    command = command_line("bench.mace_vs_bpnn", argv)
    text = "\n".join([
        "## MACE committee vs BPNN committee on the same labels (ethanol PBE/def2-SVP)", "", command, "",
        machine_line(), "", table, "",
        f"Random draw (seed {args.seed}) from `bench/data/ethanol-pbe-def2svp/pool.extxyz`, scored on its "
        f"`test.extxyz` ({len(test)} frames). Both trained by alflow's trainer with the `[train]` settings of "
        "`examples/ethanol.toml`" + (f", at most {args.epochs} epochs" if args.epochs else "") + "; MACE: "
        "32 channels, max_L 1, r_max 5 Å, correlation 3, 2 interactions, float64 (mace-torch 0.3.16 modules).",
    ])
    print(text)
    if not args.no_write:
        write_section("mace-vs-bpnn", text)
    return text


if __name__ == "__main__":
    main()
