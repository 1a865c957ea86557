"""Benchmark: what one active-learning generation costs on this machine with a MACE
committee, against the QM time of the labels it adds (issue 18's "training time per
generation vs the generation's QM time"), and whether float32 training keeps MACE's
accuracy and uncertainty.

For each committee (the example's BPNN, MACE in float64, MACE in float32; 4 members,
the example's ``[train]`` settings with at most ``--epochs`` epochs):

1. trained from scratch on ``--labels`` random labels of the cached ethanol pool (the
   previous generation's committee);
2. warm-started on those plus ``--new`` more (the example's ``max_selected_per_generation``
   is 12): the generation's training, timed;
3. both scored on ``test.extxyz``: force MAE, Spearman(max_force_dev, error), and the
   coverage of the nominal 95% force interval calibrated on 30 held-out pool frames.

The QM side is measured in the same run: ``--qm-frames`` of the new frames relabelled at
the example's level (PBE/def2-SVP, density fitting) by alflow's PySCF backend, one at a
time, so the ratio uses this machine's own time per label.

    .venv/bin/python -m bench.mace_generation_cost [--labels 50] [--new 12] [--epochs 150] [--no-write]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from bench._report import command_line, machine_line, markdown_table, write_section
from bench.mace_vs_bpnn import ROOT, _read
from bench.training_recipe import COMMITTEES as RECIPE_COMMITTEES, HELD_OUT, _scores

#: the recipe benchmark's committees, named as this table shows them
COMMITTEES = {"bpnn float64": RECIPE_COMMITTEES["bpnn"], "mace float64": RECIPE_COMMITTEES["mace-float64"],
              "mace float32": RECIPE_COMMITTEES["mace-float32"],
              "mace-shallow float32": RECIPE_COMMITTEES["mace-shallow-float32"]}


def _qm_seconds_per_label(frames: list) -> float:
    """Wall seconds per label of the example's reference on ``frames`` (alflow's backend)."""
    from flows.backends import make_backend
    from flows.config import load_config

    backend = make_backend(load_config(ROOT / "examples" / "ethanol.toml"))
    start = time.perf_counter()
    for atoms in frames:
        backend.label(atoms.copy())
    return (time.perf_counter() - start) / len(frames)


def _generation(settings: dict, previous: list, current: list, test: list, held_out: list,
                epochs: int, seed: int) -> dict[str, float]:
    from flows.config import CommitteeSection, load_config
    from nnp_core.training import train_committee

    config = load_config(ROOT / "examples" / "ethanol.toml")
    committee_cfg = CommitteeSection.model_validate({**config.committee.model_dump(), **settings})
    train_cfg = replace(config.train_config(), seed=seed, max_epochs=epochs, dtype=committee_cfg.dtype)
    start = time.perf_counter()
    first, first_report = train_committee(previous, train_cfg, n_members=committee_cfg.members,
                                          architecture=committee_cfg.architecture,
                                          model_hparams=committee_cfg.network_hparams())
    scratch_s = time.perf_counter() - start
    start = time.perf_counter()
    warm, warm_report = train_committee(current, train_cfg, initial=first)
    warm_s = time.perf_counter() - start
    before, after = _scores(first, test, held_out), _scores(warm, test, held_out)
    return {"scratch_s": scratch_s, "scratch_epochs": np.mean([m.epochs_run for m in first_report.members]),
            "warm_s": warm_s, "warm_epochs": np.mean([m.epochs_run for m in warm_report.members]),
            **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()}}


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=50, help="labels of the previous generation")
    parser.add_argument("--new", type=int, default=12, help="labels the generation adds")
    parser.add_argument("--epochs", type=int, default=150, help="cap on epochs, both trainings")
    parser.add_argument("--qm-frames", type=int, default=4, help="new frames relabelled to time the QM")
    parser.add_argument("--committees", nargs="+", choices=sorted(COMMITTEES), default=list(COMMITTEES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    held_out, pool = pool[-HELD_OUT:], pool[:-HELD_OUT]
    order = np.random.default_rng(args.seed).permutation(len(pool))
    current = [pool[i] for i in order[:args.labels + args.new]]
    previous = current[:args.labels]
    qm_s = _qm_seconds_per_label(current[args.labels:args.labels + args.qm_frames])
    print(f"QM: {qm_s:.1f} s per label", flush=True)
    rows = []
    for name in args.committees:
        r = _generation(COMMITTEES[name], previous, current, test, held_out, args.epochs, args.seed)
        rows.append([name, round(r["scratch_epochs"]), r["scratch_s"], r["before_force_mae"], r["before_spearman"],
                     r["before_coverage"], round(r["warm_epochs"]), r["warm_s"], r["after_force_mae"],
                     r["after_spearman"], r["after_coverage"], r["warm_s"] / (args.new * qm_s)])
        print(rows[-1], flush=True)
    table = markdown_table(
        ["committee (4 members)", f"epochs, {args.labels} labels from scratch", "training (s)", "test F MAE (meV/Å)",
         "Spearman", "95% coverage", f"epochs, warm start on {args.labels + args.new}", "generation training (s)",
         "test F MAE (meV/Å)", "Spearman", "95% coverage", f"training / QM of {args.new} labels"], rows)
    command = command_line("bench.mace_generation_cost", argv)
    text = "\n".join([
        "## One generation's cost: MACE committee training vs the QM it follows (ethanol)", "", command, "",
        machine_line(), "", table, "",
        f"QM: {qm_s:.1f} s per label (PBE/def2-SVP, density fitting, alflow's PySCF backend, {args.qm_frames} of "
        f"the new frames one after the other), so the generation's {args.new} labels cost {args.new * qm_s:.0f} s. "
        f"Random draw (seed {args.seed}) from `pool.extxyz` (its last {HELD_OUT} frames held out to calibrate the "
        f"coverage), scored on `test.extxyz` ({len(test)} frames). Training: the `[train]` settings of "
        f"`examples/ethanol.toml` (early stopping after 50 epochs without improvement) with at most {args.epochs} "
        "epochs; the warm start continues from the from-scratch committee as a campaign's next generation does. "
        "MACE: 32 channels, max_L 1, r_max 5 Å, correlation 3, 2 interactions (mace-torch 0.3.16 modules).",
    ])
    print(text)
    if not args.no_write:
        write_section("mace-generation-cost", text)
    return text


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
