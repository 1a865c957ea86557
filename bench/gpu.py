"""Benchmark: alflow's MACE committees on a GPU (``[train] device``, ``[explore] device``),
against the same work on the same machine's CPU cores and against ASE + mace-torch's
``MACECalculator`` on the same GPU.

1. One active-learning generation's training (issue 18's "training time per generation
   vs the generation's QM time"), as ``bench.mace_generation_cost`` does it: 4 members
   trained from scratch on ``--labels`` random labels of the cached ethanol pool, then
   warm-started on those plus ``--new`` more, the ``[train]`` settings of
   ``examples/ethanol.toml`` with at most ``--epochs`` epochs; scored on
   ``test.extxyz``. On the GPU in full; on the host's CPU cores (all of them) only
   ``--cpu-epochs`` epochs of the warm start, for the time per epoch.
2. MD: ``nnp_core.md.run_md`` with the committee on the GPU at R replicas, against ASE
   Langevin with ``MACECalculator(model_paths=[M files], device="cuda")`` (every member
   every step, one replica), as ``bench.mace_md_throughput`` does on the CPU.

The GPU machine has neither PySCF nor Prefect: this script needs only ``nnp_core``, ASE
and mace-torch, and takes the QM time per label from the caller (``--qm-seconds``, what
``bench.mace_generation_cost`` measured on the 2-core machine).

    python -m bench.gpu [--epochs 150] [--batch-sizes 8 64] [--qm-seconds 7.0] [--replicas 1 4 16 64] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

from bench._report import command_line, machine_line, markdown_table, write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "ethanol-pbe-def2svp"
HELD_OUT = 30  # the pool's last frames (bench.training_recipe): not drawn
#: bench.data_efficiency.MACE_COMMITTEE (not imported: it pulls in alflow's flows)
MACE = {"cutoff_A": 5.0, "num_channels": 32, "max_L": 1, "correlation": 3, "num_interactions": 2}
COMMITTEES = {"mace float64": ("mace", "float64"), "mace float32": ("mace", "float32"),
              "mace-shallow float32": ("mace-shallow", "float32")}


def _read(name: str) -> list:
    import ase.io

    return ase.io.read(DATA / name, index=":")


def _train_config(dtype: str, epochs: int, seed: int, device: str, batch_size: int | None = None):
    """The example's ``[train]`` with these changes (``batch_size``: frames per batch;
    None keeps the example's)."""
    from nnp_core.train_config import TrainConfig

    with open(ROOT / "examples" / "ethanol.toml", "rb") as handle:
        settings = tomllib.load(handle)["train"]
    if batch_size is not None:
        settings["batch_size_frames"] = batch_size
    return TrainConfig(**{**settings, "max_epochs": epochs, "seed": seed, "dtype": dtype, "device": device})


def _scores(committee, test: list) -> tuple[float, float]:
    """Test force MAE (meV/Å) of the mean and Spearman(max_force_dev, largest atom error)."""
    from scipy.stats import spearmanr

    prediction = committee.predict(test)
    error = prediction.forces_mean - np.concatenate([a.get_forces() for a in test])
    atom = np.linalg.norm(error, axis=1)
    largest = np.array([atom[s].max() for s in prediction.frame_slices()])
    return 1000 * float(np.abs(error).mean()), float(spearmanr(prediction.max_force_dev, largest).statistic)



def _generation(name: str, previous: list, current: list, test: list, epochs: int, cpu_epochs: int,
                seed: int, device: str, batch_size: int | None = None) -> list:
    from nnp_core.training import train_committee

    architecture, dtype = COMMITTEES[name]
    config = _train_config(dtype, epochs, seed, device, batch_size)
    start = time.perf_counter()
    first, first_report = train_committee(previous, config, n_members=4, architecture=architecture,
                                          model_hparams=MACE)
    scratch_s = time.perf_counter() - start
    start = time.perf_counter()
    warm, warm_report = train_committee(current, config, initial=first)
    warm_s = time.perf_counter() - start
    warm_epochs = warm_report.members[0].epochs_run
    cpu_config = _train_config(dtype, cpu_epochs, seed, "cpu", batch_size)
    start = time.perf_counter()
    train_committee(current, cpu_config, initial=first)
    cpu_epoch_s = (time.perf_counter() - start) / cpu_epochs
    before, after = _scores(first, test), _scores(warm, test)
    return [name, config.batch_size_frames, first_report.members[0].epochs_run, scratch_s, *before, warm_epochs, warm_s, *after,
            warm_s / warm_epochs, cpu_epoch_s, cpu_epoch_s / (warm_s / warm_epochs)]


def _md_rows(architectures: list[str], members: int, replica_counts: list[int], steps: int, device: str) -> list:
    from bench.mace_md_throughput import _alflow_rate, _ase_rate, _committee
    from nnp_core.models.mace import write_mace_models

    committees = {name: _committee(members, name) for name in architectures}
    rows, ase_rates = [], {}
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(p) for p in write_mace_models(committees[architectures[0]].model, Path(folder) / "m")]
        for dtype in ("float64", "float32"):
            ase_rates[dtype] = _ase_rate(paths, steps, dtype, device)
    for name, committee in committees.items():
        for dtype in ("float64", "float32"):
            for where in dict.fromkeys((device, "cpu")):
                explorer = committee.astype(dtype).to(where)
                _alflow_rate(explorer, 1, 3)  # warm-up
                for replicas in replica_counts:
                    if where == "cpu" and replicas > 16:
                        continue
                    rate = _alflow_rate(explorer, replicas, steps)
                    rows.append([name, dtype, where, replicas, rate, ase_rates[dtype], rate / ase_rates[dtype]])
                    print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--new", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--cpu-epochs", type=int, default=2)
    parser.add_argument("--qm-seconds", type=float, default=7.0,
                        help="PBE/def2-SVP seconds per label (bench.mace_generation_cost, 2 cores)")
    parser.add_argument("--committees", nargs="*", choices=sorted(COMMITTEES), default=list(COMMITTEES))
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[],
                        help="frames per training batch, one row each (default: the example's)")
    parser.add_argument("--skip-md", action="store_true")
    parser.add_argument("--device", default="cuda", help="the GPU (cpu: a smoke test of this script)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA device (torch sees none)")
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "no GPU: smoke test"
    pool, test = _read("pool.extxyz"), _read("test.extxyz")
    pool = pool[:-HELD_OUT]
    order = np.random.default_rng(args.seed).permutation(len(pool))
    current = [pool[i] for i in order[:args.labels + args.new]]
    previous = current[:args.labels]
    train_rows = []
    for name in args.committees:
        for batch_size in args.batch_sizes or [None]:
            train_rows.append(_generation(name, previous, current, test, args.epochs, args.cpu_epochs, args.seed,
                                          args.device, batch_size))
            train_rows[-1].append(train_rows[-1][7] / (args.new * args.qm_seconds))
            print(train_rows[-1], flush=True)
    md_rows = [] if args.skip_md else _md_rows(["mace", "mace-shallow"], 4, args.replicas, args.steps, args.device)
    cpu_threads = torch.get_num_threads()
    parts = [
        f"## alflow's MACE committees on a GPU ({gpu}), issue 18", "", command_line("bench.gpu", argv), "",
        machine_line() + f"; {gpu}", "",
    ]
    if train_rows:
        parts += [
            markdown_table(["committee (4 members)", "frames per batch", f"epochs, {args.labels} labels from scratch", "GPU training (s)",
                            "test F MAE (meV/Å)", "Spearman", f"epochs, warm start on {args.labels + args.new}",
                            "GPU generation training (s)", "test F MAE (meV/Å)", "Spearman", "GPU s/epoch (warm)",
                            f"CPU s/epoch ({cpu_threads} threads)", "GPU speed-up per epoch",
                            f"GPU training / QM of {args.new} labels"], train_rows), "",
            f"The same draw, settings and cap as `mace-generation-cost` (seed {args.seed}, `[train]` of "
            f"`examples/ethanol.toml`, at most {args.epochs} epochs, early stopping after 50 without improvement); "
            f"`[train] device = \"cuda\"`. The CPU column times {args.cpu_epochs} epochs of the same warm start on "
            f"this machine's {cpu_threads} CPU threads. QM: {args.qm_seconds:g} s per PBE/def2-SVP label, what "
            f"`mace-generation-cost` measured on 2 cores (this machine has no PySCF), so the generation's "
            f"{args.new} labels cost {args.new * args.qm_seconds:.0f} s.", "",
        ]
    if md_rows:
        parts += [
            markdown_table(["alflow committee", "dtype", "device", "replicas R", "alflow replica-steps/s",
                            "ASE + MACECalculator on the GPU, replica-steps/s (same dtype)", "speed-up"], md_rows), "",
            f"Ethanol, 300 K, 0.5 fs, {args.steps} steps per run, 4 members (`bench.mace_md_throughput`'s "
            "committee: MACE 32 channels, max_L 1, correlation 3, 2 interactions, random weights); alflow's "
            "engine with the committee on the GPU (`[explore] device = \"cuda\"`) or on this machine's CPU "
            "threads, every member on scoring steps (every 10 steps); ASE Langevin with "
            "`MACECalculator(model_paths=[4 files], device=\"cuda\")`, one replica, every member every step.", "",
        ]
    text = "\n".join(parts)
    print(text)
    if not args.no_write:
        write_section("gpu", text)
    return text


if __name__ == "__main__":
    main()
