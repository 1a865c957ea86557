"""Benchmark: training recipes on the same labels — does an exponential moving average of
the weights (``[train] ema_decay``, mace_run_train's ``--ema``) or MACE's own learning
rate (``--lr 0.01``) buy accuracy per label and per CPU-second?

Each recipe is the example's ``[train]`` (``examples/ethanol.toml``) with a few fields
changed; each committee is trained from scratch on the same random labels of the cached
ethanol PBE/def2-SVP pool and scored on its ``test.extxyz``: force MAE, energy MAE,
Spearman(max_force_dev, error), coverage of the nominal 95% interval calibrated on 30
held-out pool frames, epochs and wall time.

    .venv/bin/python -m bench.training_recipe --committee mace-float32 --labels 50 --members 2 --epochs 150
    .venv/bin/python -m bench.training_recipe --committee bpnn --labels 50 100 --seeds 0 1 2
    .venv/bin/python -m bench.training_recipe --labels 153 --recipes "lr 1e-2 + ema" --epochs 150 \
        --campaign bench/data/ethanol-pbe-def2svp/al-mace-seed0/campaign.toml   # an AL campaign's labels
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench._report import command_line, machine_line, markdown_table, write_section
from bench.mace_vs_bpnn import MACE, ROOT, _read

COMMITTEES = {"bpnn": {"architecture": "bpnn"}, "mace-float64": {**MACE, "dtype": "float64"},
              "mace-float32": {**MACE, "dtype": "float32"},
              "mace-shallow-float32": {**MACE, "architecture": "mace-shallow", "dtype": "float32"}}
RECIPES = {"example": {}, "ema": {"ema_decay": 0.99}, "lr 1e-2": {"learning_rate": 1e-2},
           "lr 1e-2 + ema": {"learning_rate": 1e-2, "ema_decay": 0.99},
           # mace_run_train --swa: the last quarter of the epochs on energy-heavy weights at lr 1e-3
           "lr 1e-2 + ema + stage two": {"learning_rate": 1e-2, "ema_decay": 0.99, "stage_two_share": 0.25},
           "ema + stage two": {"ema_decay": 0.99, "stage_two_share": 0.25}}
HELD_OUT = 30  # the pool's last frames: calibration only


def _scores(committee, test: list, held_out: list) -> dict[str, float]:
    """Test force MAE (meV/Å), Spearman(max_force_dev, error), and the coverage of the
    nominal 95% interval calibrated on ``held_out``."""
    from bench.data_efficiency import COVERAGE_FACTOR
    from bench.learning_report import uncertainty_metrics
    from flows.steps.training import evaluation_metrics

    metrics = evaluation_metrics(committee, test)
    coverage = uncertainty_metrics(committee, test, COVERAGE_FACTOR, held_out)
    return {"force_mae": 1000 * metrics["force_mae_eV_A"], "spearman": metrics["force_dev_spearman"],
            "coverage": coverage["coverage_heldout"], "energy_mae": 1000 * metrics["energy_mae_eV_atom"]}


def _train_and_score(settings: dict, recipe: dict, frames: list, test: list, held_out: list, members: int,
                     epochs: int | None, seed: int) -> dict:
    from flows.config import CommitteeSection, load_config
    from nnp_core.training import train_committee

    config = load_config(ROOT / "examples" / "ethanol.toml")
    committee_cfg = CommitteeSection.model_validate({**config.committee.model_dump(), "members": members, **settings})
    share = recipe.get("stage_two_share", 0.0)  # stage two: this share of the epochs, as the cap sets them
    train_cfg = replace(config.train_config(), seed=seed, dtype=committee_cfg.dtype,
                        **{k: v for k, v in recipe.items() if k != "stage_two_share"},
                        **({"max_epochs": epochs} if epochs else {}))
    train_cfg = replace(train_cfg, stage_two_epochs=int(train_cfg.max_epochs * share))
    start = time.perf_counter()
    committee, report = train_committee(frames, train_cfg, n_members=members, architecture=committee_cfg.architecture,
                                        model_hparams=committee_cfg.network_hparams())
    wall = time.perf_counter() - start
    return {"epochs": float(np.mean([m.epochs_run for m in report.members])),
            "best_epoch": float(np.mean([m.best_epoch for m in report.members])),
            **_scores(committee, test, held_out), "wall_s": wall}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--committee", choices=sorted(COMMITTEES), default="mace-float32")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--labels", type=int, nargs="+", default=[50])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the example's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--campaign", type=Path, metavar="TOML",
                        help="train on the first N labels of this campaign (e.g. a bench.data_efficiency "
                             "campaign) instead of random pool draws")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.campaign is not None and not args.campaign.with_name("alflow.db").is_file():
        parser.error(f"--campaign: no campaign database next to {args.campaign}")
    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    held_out, pool = pool[-HELD_OUT:], pool[:-HELD_OUT]
    if args.campaign is not None:
        from bench.data_efficiency import campaign_frames

        campaign = campaign_frames(args.campaign)[0]
    rows = []
    for n in args.labels:
        for name in args.recipes:
            points = []
            for seed in args.seeds:
                frames = (campaign[:n] if args.campaign is not None else
                          [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:n]])
                points.append(_train_and_score(COMMITTEES[args.committee], RECIPES[name], frames, test, held_out,
                                               args.members, args.epochs, seed))
                print(n, name, seed, points[-1], flush=True)

            def column(key: str, points=points) -> list[float]:
                return [p[key] for p in points]

            rows.append([n, name, round(np.mean(column("epochs"))), round(np.mean(column("best_epoch"))),
                         _mean_std(column("force_mae")), _mean_std(column("energy_mae")),
                         round(float(np.mean(column("spearman"))), 3), round(float(np.mean(column("coverage"))), 3),
                         round(float(np.mean(column("wall_s"))))])
    table = markdown_table(["labels", "recipe", "epochs", "best epoch", "test F MAE (meV/Å)", "test E MAE (meV/atom)",
                            "Spearman", "95% coverage", "training (s)"], rows)
    recipes = "; ".join(f"{name}: {RECIPES[name] or 'the example'}" for name in args.recipes)
    command = command_line("bench.training_recipe", argv)
    text = "\n".join([
        f"## Training recipes on the same labels: {args.committee} committee of {args.members} (ethanol)", "",
        command, "", machine_line(), "", table, "",
        f"Recipes ({recipes}) change the `[train]` settings of `examples/ethanol.toml` (lr 3e-3 with plateau "
        "halving, early stopping after 50 epochs)" + (f", at most {args.epochs} epochs" if args.epochs else "")
        + (f". The first N labels of the campaign `{args.campaign}`" if args.campaign is not None else
           f". Random draws (seeds {args.seeds}) from `pool.extxyz` without its last {HELD_OUT} frames")
        + f"; the pool's last {HELD_OUT} frames calibrate the coverage; test set `test.extxyz` ({len(test)} frames); "
        "mean ± std over seeds.",
    ])
    print(text)
    if not args.no_write:
        write_section(f"training-recipe-{args.committee}", text)
    return text


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
