"""A tiny water campaign (HF/STO-3G, two short generations) for the flow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CAMPAIGN = """
[campaign]
name = "{name}"

[system]
molecule = "H2O"

[reference]
backend = "pyscf"
method = "HF"
basis = "sto-3g"
density_fit = false

[committee]
architecture = "bpnn"
members = 2
cutoff_A = 4.0
hidden_layers = [16]
features = 8
interactions = 1
radial_basis = 6

[explore]
replicas = 2
temperatures_K = [300, 600]
steps = 60
timestep_fs = 0.5
record_interval_steps = 5

[select]
trust_lo_eV_A = 0.02
trust_hi_eV_A = 3.0
max_selected_per_generation = 3

[train]
max_epochs = 40
batch_size_frames = 4
early_stopping_patience_epochs = 20

[loop]
initial_samples = {initial_samples}
initial_sampler = "normal_modes"
optimise_first = true
max_generations = 2
validation_fraction_frames = 0.34

[execution]
task_runner = "thread"
max_workers = 2
label_batch_size = 3
"""


def write_campaign(folder: Path, name: str = "tiny-water", initial_samples: int = 6,
                   architecture: str = "bpnn") -> Path:
    path = folder / f"{name}.toml"
    text = TINY_CAMPAIGN.format(name=name, initial_samples=initial_samples)
    path.write_text(text.replace('architecture = "bpnn"', f'architecture = "{architecture}"'))
    return path


@pytest.fixture()
def tiny_campaign(tmp_path: Path) -> Path:
    return write_campaign(tmp_path)
