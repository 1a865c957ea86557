"""Where one generation's wall time goes: MD, QM, training, and everything else.

Runs the water example's generation 0 once, then generation 1 two ways on copies of that
database: (a) through the Prefect flow (ephemeral server already started, so Prefect's
one-time start is excluded) and (b) calling the same step functions directly, without
Prefect. "Everything else" = the generation's wall time minus the MD, QM and training
time that the steps record themselves. The ways alternate (P D D P ...) so that a load
change on a shared machine hits both, and the table shows that both did the same work
(identical explored frames, labels and training epochs).

    .venv/bin/python -m bench.loop_overhead [--quick] [--rounds N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from bench._report import machine_line, markdown_table, write_section  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "water.toml"


def _prepare(folder: Path, quick: bool) -> Path:
    # One labelling worker: frames are then labelled in id order both ways, so each SCF
    # starts from the same previous-frame guess and both ways compute identical labels
    # (with two workers, which frame follows which is down to timing).
    text = EXAMPLE.read_text().replace("max_workers = 2", "max_workers = 1")
    if quick:
        text = (text.replace("steps = 400", "steps = 40").replace("max_epochs = 600", "max_epochs = 5")
                .replace("initial_samples = 12", "initial_samples = 4"))
    config = folder / "water.toml"
    config.write_text(text)
    return config


def _generation_times(config: Path, index: int) -> dict[str, float]:
    """The step times generation ``index`` recorded (its step marks), and what it did (``work``)."""
    from flows.campaign import open_campaign
    from flows.storage import done_steps, generation_committee, generations, reading
    from flows.storage.overview import structure_hashes

    ctx = open_campaign(config, create=False)
    with reading(ctx.engine) as session:
        (g,) = generations(session, ctx.campaign_id, first=index, last=index)
        steps = done_steps(session, g.id)
        frames = structure_hashes(session, g.id)
        committee = generation_committee(session, g.id)
        epochs = sum(m["epochs_run"] for m in committee.member_reports or [])
        work = (g.replica_steps, g.labels_done or 0, epochs, hash(tuple(frames)))
        return {"md": steps.get("explore", 0.0), "qm": steps.get("label", 0.0), "train": steps.get("train", 0.0),
                "steps_total": sum(steps.values()), "work": work}


def _direct_generation(config: Path, index: int) -> None:
    """Generation ``index`` through the product's pipeline (step order and marks), each
    step's library function called in this process instead of as a Prefect task."""
    from flows.campaign import open_campaign
    from flows.pipeline import plain_steps, run_generation

    ctx = open_campaign(config)
    run_generation(ctx, index, plain_steps(ctx))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="loop overhead benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="P D (D P) rounds; the table shows their mean")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    from prefect.testing.utilities import prefect_test_harness

    from flows.active_learning import active_learning
    from flows.tasks import _context

    ways = ("prefect flow", "direct calls")
    runs: dict[str, list[list[float]]] = {way: [] for way in ways}
    work: dict[str, set] = {way: set() for way in ways}
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
        base = Path(tmp) / "base"
        base.mkdir()
        config = _prepare(base, args.quick)
        active_learning(config_path=str(config), max_new_generations=0)  # generation 0
        for round_ in range(args.rounds):
            for way in (ways if round_ % 2 == 0 else ways[::-1]):
                folder = Path(tmp) / f"{way.replace(' ', '-')}-{round_}"
                shutil.copytree(base, folder)
                copy = folder / "water.toml"
                _context.cache_clear()
                start = time.perf_counter()
                if way == "prefect flow":
                    active_learning(config_path=str(copy), max_new_generations=1)
                else:
                    _direct_generation(copy, 1)
                wall = time.perf_counter() - start
                t = _generation_times(copy, 1)
                work[way].add(t["work"])
                other = wall - t["md"] - t["qm"] - t["train"]
                runs[way].append([wall, t["md"], t["qm"], t["train"], other, 100 * other / wall])
    rows = [[way, len(runs[way]), *[sum(column) / len(column) for column in zip(*runs[way])]] for way in ways]
    (steps, labels, epochs, _), *_ = work["prefect flow"]
    same = len(work["prefect flow"] | work["direct calls"]) == 1
    table = markdown_table(
        ["generation 1 via", "runs", "wall s", "MD s", "QM s", "training s", "everything else s", "else %"], rows)
    verdict = ("target (everything else <= 5% of the generation, Prefect's start excluded): "
               + ("met" if rows[0][-1] <= 5 else "missed") + f" ({rows[0][-1]:.1f}% through Prefect)")
    text = "\n".join([
        "## Loop overhead (one generation of examples/water.toml)", "",
        "`.venv/bin/python -m bench.loop_overhead`" + (" --quick" if args.quick else ""), "",
        machine_line(), "", table, "", verdict, "",
        f"Work per run: {steps} replica MD steps, {labels} labels, {epochs} training epochs (all members); "
        + ("identical explored frames, labels and epochs in every run." if same
           else "**the runs did different work** (see `work` in the script): the comparison is not fair."), "",
        "\"Everything else\" is selection, evaluation, database writes, artifacts and task "
        "orchestration. The Prefect row runs on an already started server; each of its runs is "
        "one flow run (creation, committee lock, final artifacts included). Ways alternate "
        "(P D D P ...), and the rows are means.",
    ])
    if args.no_write:
        print(text)
    else:
        write_section("loop-overhead", text)
        print(text)
    return text


if __name__ == "__main__":
    main()
