"""Force training: the descriptors' analytic product vs autograd's double backward.

Same frames, same committee, same settings, two ways of getting the force loss's weight
gradient (``nnp_core``'s autograd, or :mod:`bench._analytic_training`); reports ms per
epoch per frame and checks that both ways end at the same committee.

    .venv/bin/python -m bench.training_speed [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import time
import numpy as np
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from bench._analytic_training import train_committee_analytic
from bench._report import machine_line, markdown_table, write_section
from nnp_core.sampling import random_displacements
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee


def ethanol_frames(n: int) -> list:
    frames = random_displacements(molecule("CH3CH2OH"), stddev_A=0.08, n_samples=n, seed=0)
    for frame in frames:
        frame.calc = EMT()
        energy, forces = frame.get_potential_energy(), frame.get_forces()
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    return frames


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    n_frames, epochs = (16, 2) if args.quick else (64, 6)
    frames = ethanol_frames(n_frames)
    hparams = {"hidden_layers": [64, 64], "descriptor": {"cutoff_A": 5.2, "angular_cutoff_A": 3.5}}
    rows = []
    for members in (1, 4):
        times, predictions = {}, {}
        for analytic in (True, False, True, False):  # interleaved, best of two
            config = TrainConfig(max_epochs=epochs, batch_size_frames=8, seed=0,
                                 early_stopping_patience_epochs=epochs + 1)
            start = time.perf_counter()
            if analytic:
                committee = train_committee_analytic(frames, config, n_members=members, model_hparams=hparams)
            else:
                committee, _ = train_committee(frames, config, n_members=members, model_hparams=hparams)
            wall = (time.perf_counter() - start) / epochs / n_frames * 1000
            times[analytic] = min(times.get(analytic, np.inf), wall)
            predictions[analytic] = committee.predict(frames[:4]).member_forces
        agree = float(np.abs(predictions[True] - predictions[False]).max())
        rows.append([members, times[False], times[True], times[False] / times[True], agree])
    table = markdown_table(["members M", "autograd ms/frame/epoch", "analytic ms/frame/epoch", "speed-up",
                            "max |ΔF| between the two committees, eV/Å"], rows)
    text = "\n".join([
        "## Force training: analytic descriptor product vs autograd", "",
        "`.venv/bin/python -m bench.training_speed`" + (" --quick" if args.quick else ""), "",
        machine_line(), "",
        f"Ethanol, {n_frames} EMT-labelled frames, [64, 64] networks, batches of 8 frames, {epochs} epochs, "
        "best of two interleaved runs per way. Both ways train the same committee (last column).", "",
        table,
    ])
    if not args.no_write:
        write_section("training-speed", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
