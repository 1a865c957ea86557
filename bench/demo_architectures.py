"""Benchmark (issue 18): the ethanol demo driven by its BPNN committee and by a MACE committee.

``examples/ethanol.toml`` is the campaign with 4 BPNN members; ``make demo`` runs
``examples/ethanol-mace.toml``, the same campaign driven by 2 small MACE members (mace-torch,
max_L 0, correlation 2, float32, MACE's lr 1e-2 + EMA recipe, adaptive trust_lo, half the MD
steps, warm starts capped at 80 epochs). Each is run here the way ``make
demo`` runs it: ``alflow run CONFIG`` in a fresh work folder (a copy of the config, only
``[campaign] work_dir`` changed), its own throw-away Prefect server, ``--threads`` cores,
one campaign after the other. For each:

- the wall time of the whole run and the campaign's own step timings (MD, QM, training),
- the labels it paid for, generation by generation,
- each generation's committee on ``test.extxyz`` (150 cached PBE/def2-SVP frames at
  300/600 K and along the torsions): force and energy MAE, Spearman(max_force_dev, error).

    .venv/bin/python -m bench.demo_architectures [--configs examples/ethanol.toml
        examples/ethanol-mace.toml] [--threads 2] [--keep DIR] [--no-write]

Writes section ``demo-architectures`` of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from bench._report import command_line, machine_line, markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "bench" / "data" / "ethanol-pbe-def2svp" / "test.extxyz"
CONFIGS = ["examples/ethanol.toml", "examples/ethanol-mace.toml"]


def campaign_copy(config: Path, folder: Path) -> Path:
    """``config`` as it is, but for ``[campaign] work_dir`` (``folder``/run); written to
    ``folder``/campaign.toml."""
    from bench.data_efficiency import to_toml

    data = tomllib.loads(config.read_text())
    data["campaign"] = {**data["campaign"], "work_dir": str(folder / "run")}
    data["campaign"].pop("database_url", None)  # the default: SQLite in the work folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "campaign.toml"
    path.write_text(to_toml(data))
    return path


def run_demo(config: Path, threads: int) -> tuple[float, int]:
    """``alflow run config`` as ``make demo`` runs it; (wall seconds, exit code). Its
    output goes to ``run.log`` beside the config."""
    alflow = Path(sys.executable).with_name("alflow")
    command = [str(alflow)] if alflow.exists() else [sys.executable, "-m", "flows.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.setdefault("PREFECT_HOME", str(config.parent / "prefect"))
    start = time.perf_counter()
    with open(config.with_name("run.log"), "w") as log:
        code = subprocess.call([*command, "run", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env,
                               stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, code


def campaign_rows(config: Path, test: list) -> tuple[list[list], dict]:
    """Per generation: labels so far, its steps' wall times and its committee's test
    scores; and the campaign's totals."""
    from bench.data_efficiency import campaign_frames
    from flows.campaign import open_campaign
    from flows.status import timing_rows
    from flows.steps.training import evaluation_metrics
    from flows.storage import reading

    labelled, committees = campaign_frames(config)
    test_elements = {int(z) for a in test for z in a.numbers}
    ctx = open_campaign(config, create=False)
    with reading(ctx.engine) as session:
        timings = {row["generation"]: row for row in timing_rows(session, ctx.campaign_id)}
    rows, totals = [], {"MD (s)": 0.0, "QM (s)": 0.0, "training (s)": 0.0}
    for generation in sorted(timings):
        row = timings[generation]
        for key in totals:
            totals[key] += row[key] or 0.0
        n_labels = sum(1 for a in labelled if a.info.get("generation", 0) <= generation)
        committee = committees.get(generation)
        scored = committee is not None and test_elements <= set(committee.elements)  # not for another molecule
        scores = evaluation_metrics(committee, test) if scored else None
        rows.append([generation, n_labels, row["MD (s)"], row["QM (s)"], row["training (s)"],
                     "" if scores is None else round(1000 * scores["force_mae_eV_A"], 1),
                     "" if scores is None else round(1000 * scores["energy_mae_eV_atom"], 1),
                     "" if scores is None or scores["force_dev_spearman"] is None
                     else round(scores["force_dev_spearman"], 2)])
    totals["labels"] = len(labelled)
    return rows, totals


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="campaign files, run one after the other")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each run (make demo's: 2)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the runs in this folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1 (got {args.threads})")
    configs = [Path(c) if Path(c).is_absolute() else ROOT / c for c in args.configs]
    from flows.config import ConfigError, load_config

    for config in configs:
        if not config.is_file():
            parser.error(f"--configs: {config} is not a file")
        try:
            load_config(config)
        except ConfigError as error:
            parser.error(f"--configs: {' '.join(str(error).split())}")
    if args.keep is not None and args.keep.exists() and not args.keep.is_dir():
        parser.error(f"--keep: {args.keep} is not a folder")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep: {args.keep} is not empty (this script never overwrites a folder's contents)")
    import ase.io

    test = ase.io.read(TEST, index=":")
    base = args.keep or Path(tempfile.mkdtemp(prefix="alflow-demos-"))
    parts = ["## The ethanol demo with a BPNN and with a MACE committee (issue 18)", "",
             command_line("bench.demo_architectures", argv), "", machine_line(), ""]
    summary = []
    try:
        for config in configs:
            copy = campaign_copy(config, base / config.stem)
            wall, code = run_demo(copy, args.threads)
            print(f"{config.name}: exit {code} after {wall:.0f} s", flush=True)
            if code != 0:  # nothing to score: say why, in one line, and write nothing
                lines = [line for line in copy.with_name("run.log").read_text().splitlines() if line.strip()]
                raise SystemExit(f"bench.demo_architectures: {config.name}: alflow run exited {code}"
                                 + (f": {lines[-1].strip()}" if lines else ""))
            rows, totals = campaign_rows(copy, test)
            for row in rows:
                print(config.name, row, flush=True)
            final = rows[-1] if rows else [""] * 8
            steps = totals["MD (s)"] + totals["QM (s)"] + totals["training (s)"]
            summary.append([config.name, code, round(wall), totals["labels"], len(rows), round(totals["MD (s)"]),
                            round(totals["QM (s)"]), round(totals["training (s)"]), round(wall - steps),
                            final[5], final[6], final[7]])
            parts += [f"### `{config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}`", "",
                      markdown_table(["generation", "labels", "MD (s)", "QM (s)", "training (s)",
                                      "test F MAE (meV/Å)", "test E MAE (meV/atom)", "Spearman"], rows), ""]
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    parts[6:6] = [markdown_table(["campaign", "exit", "wall (s)", "labels", "generations", "MD (s)", "QM (s)",
                                  "training (s)", "other (s)", "final test F MAE (meV/Å)", "E MAE (meV/atom)",
                                  "Spearman"],
                                 summary), "",
                  f"Each run is `alflow run` on a copy of the campaign file (only `work_dir` changed), "
                  f"OMP_NUM_THREADS={args.threads}, one after the other on this machine; the step times are the "
                  "campaign's own (`alflow status`; other: the Prefect server's start, generation 0's xTB "
                  "sampling and optimisation, the flow's own overhead), the test scores those of each "
                  "generation's committee on `bench/data/ethanol-pbe-def2svp/test.extxyz` (150 frames).", ""]
    text = "\n".join(parts)
    print(text)
    if not args.no_write:
        write_section("demo-architectures", text)
    return text


if __name__ == "__main__":
    main()
