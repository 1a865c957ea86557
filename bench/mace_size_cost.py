"""Benchmark (issue 18): which MACE size pays for itself on 2 cores?

A MACE committee's generation costs 6-29x the QM it follows on this machine with
``mace_run_train``'s small model (32 channels, max_L 1, correlation 3;
``mace-generation-cost``, ``warm-start-budget``), and capping the epochs loses the accuracy
that made MACE worth having. The other lever is the model: the hyperparameters a
``mace_run_train`` user knows (``max_L``, ``correlation``, ``num_channels``) set the cost of
every forward and double backward. For each size, in one run on the same labels:

1. the cost of one training epoch (2 float32 members, ``--labels`` frames) with 1 and with
   ``--threads`` torch threads (a campaign's training has the machine to itself between
   exploration and labelling, so it gets every core);
2. the committee trained from scratch on ``--labels`` random pool labels with the al-mace
   campaigns' recipe (lr 1e-2, EMA 0.99, at most ``--epochs`` epochs, ``--threads``
   threads), scored on ``test.extxyz``: force and energy MAE, Spearman(max_force_dev, error),
   coverage of the calibrated 95% interval;
3. a campaign generation: that committee warm-started on ``--new`` more labels (the al-mace
   campaigns' 25 per generation), timed, against the QM time of those labels measured in the
   same run (alflow's PySCF backend at the example's PBE/def2-SVP, ``--threads`` threads).

    .venv/bin/python -m bench.mace_size_cost [--labels 100] [--new 25] [--epochs 100]
        [--threads 2] [--sizes default L0 c2 L0-c2] [--seed 0] [--no-write]

Writes section ``mace-size-cost`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np

from bench._report import command_line, machine_line, markdown_table, write_section
from bench.data_efficiency import MACE_CAMPAIGN
from bench.mace_vs_bpnn import ROOT, _read
from bench.training_recipe import HELD_OUT, _scores

#: MACE sizes: overrides of the al-mace campaigns' committee (32 channels, max_L 1,
#: correlation 3, 2 interactions, r_max 5 Å)
SIZES = {"default": {}, "L0": {"max_L": 0}, "c2": {"correlation": 2}, "L0-c2": {"max_L": 0, "correlation": 2},
         "L0-c2-16ch": {"max_L": 0, "correlation": 2, "num_channels": 16}}


def _configs(size: dict, seed: int, epochs: int):
    from flows.config import CommitteeSection, load_config

    config = load_config(ROOT / "examples" / "ethanol.toml")
    committee = CommitteeSection.model_validate({**config.committee.model_dump(), **MACE_CAMPAIGN["committee"],
                                                 **size})
    train = replace(config.train_config(), seed=seed, dtype=committee.dtype,
                    **{**MACE_CAMPAIGN["train"], "max_epochs": epochs})
    return committee, train


def _train(frames: list, committee_cfg, train_cfg, initial=None):
    from nnp_core.training import train_committee

    start = time.perf_counter()
    if initial is None:
        committee, report = train_committee(frames, train_cfg, n_members=committee_cfg.members,
                                            architecture=committee_cfg.architecture,
                                            model_hparams=committee_cfg.network_hparams())
    else:
        committee, report = train_committee(frames, train_cfg, initial=initial)
    wall = time.perf_counter() - start
    return committee, wall, float(np.mean([m.epochs_run for m in report.members]))


def _epoch_seconds(frames: list, committee_cfg, train_cfg, threads: int, epochs: int = 3) -> float:
    """Seconds per epoch from scratch with ``threads`` torch threads: the difference between
    ``epochs`` + 1 epochs and 1 epoch, so set-up (normalisation, batches) is left out."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _train(frames[:2], committee_cfg, replace(train_cfg, max_epochs=1))  # first calls: warm-up
        one = _train(frames, committee_cfg, replace(train_cfg, max_epochs=1))[1]
        more = _train(frames, committee_cfg, replace(train_cfg, max_epochs=epochs + 1))[1]
    finally:
        torch.set_num_threads(previous)
    return (more - one) / epochs


def _qm_seconds_per_label(frames: list, threads: int) -> float:
    from pyscf import lib

    from bench.mace_generation_cost import _qm_seconds_per_label as timed

    previous = lib.num_threads()
    lib.num_threads(threads)
    try:
        return timed(frames)
    finally:
        lib.num_threads(previous)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=100, help="labels the committee is trained on from scratch")
    parser.add_argument("--new", type=int, default=25, help="labels the generation adds (warm start)")
    parser.add_argument("--epochs", type=int, default=100, help="cap on epochs, both trainings")
    parser.add_argument("--threads", type=int, default=2, help="torch and PySCF threads of a campaign's steps")
    parser.add_argument("--qm-frames", type=int, default=3, help="new frames relabelled to time the QM")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["default", "L0", "c2", "L0-c2"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    for name in ("labels", "new", "epochs", "threads", "qm_frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.qm_frames > args.new:
        parser.error(f"--qm-frames ({args.qm_frames}) must not exceed --new ({args.new})")
    import torch

    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    held_out, pool = pool[-HELD_OUT:], pool[:-HELD_OUT]
    if args.labels + args.new > len(pool):
        parser.error(f"--labels + --new: the pool has {len(pool)} frames (got {args.labels + args.new})")
    order = np.random.default_rng(args.seed).permutation(len(pool))
    current = [pool[i] for i in order[:args.labels + args.new]]
    previous = current[:args.labels]
    qm_s = _qm_seconds_per_label(current[args.labels:args.labels + args.qm_frames], args.threads)
    print(f"QM: {qm_s:.1f} s per label on {args.threads} threads", flush=True)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.sizes:
        committee_cfg, train_cfg = _configs(SIZES[name], args.seed, args.epochs)
        hp = committee_cfg.network_hparams()
        label = (f"{name} ({hp['num_channels']} ch, max_L {hp['max_L']}, correlation {hp['correlation']})")
        per_epoch = {t: _epoch_seconds(previous, committee_cfg, train_cfg, t) for t in sorted({1, args.threads})}
        first, scratch_s, scratch_epochs = _train(previous, committee_cfg, train_cfg)
        before = _scores(first, test, held_out)
        warm, warm_s, warm_epochs = _train(current, committee_cfg, train_cfg, initial=first)
        after = _scores(warm, test, held_out)
        n_params = sum(p.numel() for p in first.model.parameters()) // committee_cfg.members
        rows.append([label, n_params, round(per_epoch[1], 2), round(per_epoch[args.threads], 2),
                     round(scratch_epochs), round(scratch_s), round(before["force_mae"], 1),
                     round(before["energy_mae"], 2), round(before["spearman"], 2), round(before["coverage"], 2),
                     round(warm_epochs), round(warm_s), round(after["force_mae"], 1), round(after["spearman"], 2),
                     round(warm_s / (args.new * qm_s), 2)])
        print(rows[-1], flush=True)
    threads = args.threads
    table = markdown_table(
        ["MACE size", "weights per member", "s/epoch, 1 thread", f"s/epoch, {threads} threads",
         f"epochs, {args.labels} labels from scratch", "training (s)", "test F MAE (meV/Å)", "test E MAE (meV/atom)",
         "Spearman", "95% coverage", f"epochs, warm start on {args.labels + args.new}", "generation training (s)",
         "test F MAE after (meV/Å)", "Spearman after", f"training / QM of {args.new} labels"], rows)
    command = command_line("bench.mace_size_cost", argv)
    text = "\n".join([
        "## A smaller MACE for 2 cores? Cost and accuracy per size (ethanol, issue 18)", "", command, "",
        machine_line(), "", table, "",
        f"Committees of 2 float32 MACE members (2 interactions, r_max 5 Å, mace-torch 0.3.16 modules) trained as "
        f"the al-mace campaigns train them (lr 1e-2, EMA 0.99, at most {args.epochs} epochs, the example's other "
        f"`[train]` settings), on {threads} torch threads: from scratch on {args.labels} random pool labels "
        f"(seed {args.seed}), then warm-started on {args.new} more as a campaign generation does. Seconds per "
        f"epoch on {args.labels} frames are the difference between a 4-epoch and a 1-epoch training after a "
        f"warm-up (set-up left out). QM: {qm_s:.1f} s per label (PBE/def2-SVP, density fitting, alflow's PySCF "
        f"backend, {threads} threads, {args.qm_frames} of the new frames), so the generation's {args.new} labels cost "
        f"{args.new * qm_s:.0f} s. Scores on `test.extxyz` ({len(test)} frames), coverage calibrated on the pool's "
        f"last {HELD_OUT} frames. OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.",
    ])
    print(text)
    if not args.no_write:
        write_section("mace-size-cost", text)
    return text


if __name__ == "__main__":
    main()
