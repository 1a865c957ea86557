"""Benchmark (issue 18): how many epochs does a generation's warm start need?

A MACE campaign's training step costs 4-6x the QM it follows on 2 cores
(``mace-generation-cost``, ``mace-campaign``), because every generation trains its
committee for up to ``max_epochs`` (100) from the previous one. This replays a finished
campaign's generations with a smaller cap on the warm starts (``[train]
warm_start_max_epochs``, and ``warm_start_learning_rate``): the campaign's own generation-0 committee, then for each later
generation a warm start from the replay's previous committee on exactly the training
frames the campaign had after that generation (same settings, same seed). Each replayed
committee and the campaign's own are scored on ``test.extxyz``: force MAE, Spearman
(max_force_dev, error), coverage of the nominal 95% interval calibrated on the pool's last
30 frames; the training wall time against the campaign's measured label step.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.warm_start_budget \\
        --campaign bench/data/ethanol-pbe-def2svp/al-mace-seed0/campaign.toml --budgets 10 20@1e-3
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench._report import machine_line, markdown_table, write_section
from bench.mace_vs_bpnn import ROOT, _read
from bench.training_recipe import HELD_OUT, _scores

DEFAULT_CAMPAIGN = ROOT / "bench" / "data" / "ethanol-pbe-def2svp" / "al-mace-seed0" / "campaign.toml"


def campaign_generations(config_path: Path) -> tuple[object, dict[int, list], dict[int, object], dict[int, dict]]:
    """The campaign's config, its training frames after each generation (cumulative), each
    generation's own committee, and each generation's step seconds (``StepMark``) and its
    committee's training wall time."""
    from flows.campaign import open_campaign
    from flows.steps.training import TRAINING_SOURCES
    from flows.storage import committees as committee_rows
    from flows.storage import labelled_atoms, reading
    from flows.storage.overview import generation_overviews, own_committee_checkpoints
    from nnp_core.committee import load_committee

    ctx = open_campaign(config_path, create=False)
    with reading(ctx.engine) as session:
        frames = labelled_atoms(session, ctx.campaign_id, sources=TRAINING_SOURCES)
        checkpoints = own_committee_checkpoints(session, ctx.campaign_id)
        overviews = generation_overviews(session, ctx.campaign_id)
        steps = {o.generation.index: dict(o.steps) for o in overviews}
        index_of = {o.generation.id: o.generation.index for o in overviews}
        for row in committee_rows(session, ctx.campaign_id):  # a generation's own: its first
            steps[index_of[row.generation_id]].setdefault("training_wall_s", row.training_wall_s)
    cumulative = {g: [a for a in frames if a.info.get("generation", 0) <= g] for g in checkpoints}
    committees = {g: load_committee(ctx.resolve(path)) for g, path in checkpoints.items()}
    return ctx.config, cumulative, committees, steps


def parse_budget(text: str) -> tuple[int, float | None, int | None]:
    """``"E"``, ``"E@LR"`` or ``"E@LR/N"``: warm starts of at most E epochs (at learning
    rate LR), every Nth one from the first a long one (``long_warm_start_every``)."""
    head, _, every = text.partition("/")
    epochs, _, lr = head.partition("@")
    try:
        budget = int(epochs), (float(lr) if lr else None), (int(every) if every else None)
    except ValueError:
        raise ValueError(repr(text)) from None
    if budget[0] < 1 or (budget[1] is not None and budget[1] <= 0) or (budget[2] is not None and budget[2] < 1):
        raise ValueError(repr(text))
    return budget


def replay(config, cumulative: dict[int, list], committees: dict[int, object],
           budget: tuple[int, float | None, int | None], test: list, held_out: list, chain: bool = True,
           steps: dict[int, dict] | None = None, log=print) -> dict[int, dict]:
    """Warm starts capped at ``budget`` (epochs, learning rate, long every N): with
    ``chain`` each from the replay's previous committee (a campaign with this budget, from
    the campaign's generation 0), otherwise each from the campaign's own previous
    committee (one generation's fine-tuning of a committee trained the long way). A long
    warm start from the campaign's own previous committee is the campaign's own
    generation (its committee and recorded training seconds from ``steps``)."""
    from nnp_core.training import train_committee

    train_cfg = replace(config.train_config(), warm_start_max_epochs=budget[0], warm_start_learning_rate=budget[1],
                        long_warm_start_every=budget[2])
    committee = committees[0]
    own_previous = True
    out = {}
    for generation in sorted(cumulative)[1:]:
        frames = cumulative[generation]
        if not chain:
            committee, own_previous = committees[generation - 1], True
        cfg = train_cfg.for_warm_start_number(generation)
        long = cfg.warm_start_max_epochs is None
        if long and own_previous and (steps or {}).get(generation, {}).get("training_wall_s"):
            committee = committees[generation]
            out[generation] = {"wall_s": steps[generation]["training_wall_s"], "epochs": float("nan"), "long": True,
                               **_scores(committee, test, held_out)}
            log(f"{budget}, generation {generation}: the campaign's own (long) warm start {out[generation]}")
            continue
        for atoms in frames:
            atoms.info["charge"] = config.system.charge
        start = time.perf_counter()
        committee, report = train_committee(
            frames, cfg, n_members=config.committee.members, architecture=config.committee.architecture,
            model_hparams=config.committee.network_hparams(), initial=committee)
        own_previous = False
        wall = time.perf_counter() - start
        out[generation] = {"wall_s": wall, "epochs": float(np.mean([m.epochs_run for m in report.members])),
                           "long": long, **_scores(committee, test, held_out)}
        log(f"{budget}, generation {generation}, {len(frames)} frames: {out[generation]}")
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", type=Path, default=DEFAULT_CAMPAIGN, metavar="TOML")
    parser.add_argument("--budgets", nargs="+", default=["20@1e-3", "40@1e-3"], metavar="E[@LR][/N]",
                        help="warm starts to replay: at most E epochs (warm_start_max_epochs), at learning "
                             "rate LR (warm_start_learning_rate; default the campaign's), every Nth from the "
                             "first uncapped (long_warm_start_every)")
    parser.add_argument("--one-step", action="store_true",
                        help="warm-start every generation from the campaign's own previous committee instead "
                             "of chaining the replay's (section warm-start-budget-one-step)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not args.campaign.with_name("alflow.db").is_file():
        parser.error(f"--campaign: no campaign database next to {args.campaign}")
    try:
        budgets = {text: parse_budget(text) for text in args.budgets}
    except ValueError as exc:
        parser.error(f"--budgets: {exc} is not E, E@LR or E@LR/N with E >= 1, LR > 0 and N >= 1")
    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    held_out = pool[-HELD_OUT:]
    config, cumulative, committees, steps = campaign_generations(args.campaign)
    own = {g: _scores(committees[g], test, held_out) for g in sorted(committees)}
    replays = {text: replay(config, cumulative, committees, budget, test, held_out, chain=not args.one_step,
                            steps=steps) for text, budget in budgets.items()}
    rows = []
    for generation in sorted(cumulative)[1:]:
        label_s = steps.get(generation, {}).get("label")
        row = [generation, len(cumulative[generation]), f"{own[generation]['force_mae']:.1f}",
               f"{own[generation]['spearman']:.2f}", f"{own[generation]['coverage']:.2f}",
               f"{steps.get(generation, {}).get('training_wall_s') or float('nan'):.0f}",
               "" if label_s is None else f"{label_s:.0f}"]
        for text in budgets:
            r = replays[text][generation]
            row += [f"{r['force_mae']:.1f}" + (" (long)" if r.get("long") and budgets[text][2] else ""),
                    f"{r['spearman']:.2f}", f"{r['coverage']:.2f}", f"{r['wall_s']:.0f}",
                    "" if label_s is None else f"{r['wall_s'] / label_s:.2f}"]
        rows.append(row)
    header = ["gen", "training frames", "campaign F MAE (meV/Å)", "Spearman", "95% coverage", "training (s)",
              "label step (s)"]
    for text, (epochs, lr, every) in budgets.items():
        header += [f"≤{epochs} ep.{'' if lr is None else f' at lr {lr:g}'}"
                   f"{'' if every is None else f', long every {every}'}: F MAE", "Spearman", "coverage",
                   "training (s)", "training / label step"]
    command = "`OMP_NUM_THREADS=1 .venv/bin/python -m bench.warm_start_budget " + " ".join(
        sys.argv[1:] if argv is None else argv) + "`"
    train = config.train
    text = "\n".join([
        "## Warm-start epochs per generation: a MACE campaign replayed (issue 18)"
        + (", one generation at a time" if args.one_step else ""), "", command, "",
        machine_line(), "", markdown_table(header, rows), "",
        f"Campaign `{args.campaign.relative_to(ROOT) if args.campaign.is_relative_to(ROOT) else args.campaign}` "
        f"({config.committee.architecture}, {config.committee.members} members, {config.committee.dtype}; lr "
        f"{train.learning_rate:g}, EMA {train.ema_decay:g}, max_epochs {train.max_epochs}). Its own committees "
        "trained each warm start for up to max_epochs; "
        + ("each replayed generation warm-starts from the campaign's own previous committee (one generation's "
           "fine-tuning of a committee trained the long way)" if args.one_step else
           "the replays start from its generation-0 committee and continue their own committees (a campaign "
           "run with the cap)")
        + ", every warm start capped at the given epochs, on the same training frames with the same settings. "
        "Training and label-step seconds of the campaign are as recorded in its database (1 torch thread, "
        "the machine shared with one other job); the replays ran the same way. Scores on `test.extxyz` "
        f"({len(test)} frames), coverage calibrated on the pool's last {HELD_OUT} frames.",
    ])
    print(text)
    if not args.no_write:
        alternated = any(every for _, _, every in budgets.values())
        write_section("warm-start-budget" + ("-one-step" if args.one_step else "-long-every" if alternated else ""),
                      text)
    return text


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
