"""``alflow init``: a commented, validated campaign file from a molecule name or a
structure file, with a measured cost estimate; refusals are one line, exit 2, no file.

Real PySCF at HF/STO-3G (water, methanol: well under a second per label)."""

from __future__ import annotations

import re
from pathlib import Path

import ase.io
import pytest
from ase.build import molecule

import flows.active_learning  # noqa: F401  (Prefect sets up its log handlers now, not inside capsys)
from flows.active_learning import active_learning
from flows.cli import main
from flows.config import load_config
from flows.init import choose_defaults

TINY = ["--method", "HF", "--basis", "sto-3g"]


#: what a test changes in a generated campaign to make it run in seconds (fewer members,
#: steps, epochs and frames)
SHRINK = [("members = 4", "members = 2"), ("hidden_layers = [64, 64]", "hidden_layers = [16]"),
          ("steps = 2000", "steps = 60"), ("record_interval_steps = 10", "record_interval_steps = 5"),
          ("max_epochs = 400", "max_epochs = 40"),
          ("early_stopping_patience_epochs = 50", "early_stopping_patience_epochs = 20"),
          ("initial_samples = 12", "initial_samples = 6"),
          ("initial_md_interval_steps = 100", "initial_md_interval_steps = 10"),
          ("max_selected_per_generation = 8", "max_selected_per_generation = 3"),
          ("max_generations = 10", "max_generations = 1")]


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting exit 2; return its one error line (no traceback anywhere)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    return lines[0]


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _estimate(text: str) -> tuple[float, int, float]:
    """Seconds per label, labels at most and QM hours from the file's header comment."""
    seconds = re.search(r"energy \+ forces of the starting structure: ([\d.]+) s", text)
    labels = re.search(r"labels at most: .* = (\d+) labels", text)
    hours = re.search(r"QM time at most: ([\d.e+-]+) h", text)
    assert seconds and labels and hours, text[:1500]
    return float(seconds.group(1)), int(labels.group(1)), float(hours.group(1))


def test_init_from_a_molecule_name_writes_a_commented_valid_campaign(tmp_path, capsys) -> None:
    output = tmp_path / "water.toml"
    assert main(["init", "H2O", *TINY, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output}" in printed and f"alflow run {output}" in printed
    assert sorted(tmp_path.iterdir()) == [output]  # the molecule stays a name: no structure file

    config = load_config(output)
    assert config.system.molecule == "H2O" and config.system.structure_file is None
    assert (config.reference.method, config.reference.basis) == ("HF", "sto-3g")
    assert config.committee.cutoff_A == 5.0 and config.committee.members == 4  # H and O: rows 1-2
    assert config.explore.replicas == 4 and config.explore.temperatures_K == [300, 400, 500, 600]
    assert config.loop.initial_samples == 12  # 3 degrees of freedom + 3, at least 12
    assert config.select.trust_lo_eV_A < 0.20 < config.select.trust_hi_eV_A < 0.50  # below ethanol's (9 atoms)

    text = output.read_text()
    for section in ("[campaign]", "[system]", "[reference]", "[committee]", "[explore]", "[select]",
                    "[train]", "[loop]", "[loop.convergence]", "[execution]"):
        assert f"{section}\n#" in text, section  # each section starts by saying what it does
    seconds, labels, hours = _estimate(text)
    assert seconds > 0 and hours > 0
    defaults = choose_defaults(molecule("H2O"))
    assert labels == 1 + 12 + 2 + defaults.max_generations * defaults.max_selected_per_generation
    # the seconds are printed to 0.01 s and the hours to 3 digits: both roundings add up
    assert hours == pytest.approx(labels * seconds / 3600, rel=0, abs=labels * 0.005 / 3600 + 0.005 * hours)
    assert f"at most {labels} labels" in printed


def test_init_from_a_structure_file_writes_it_beside_the_config(tmp_path, capsys) -> None:
    source = tmp_path / "in" / "methanol.xyz"
    source.parent.mkdir()
    ase.io.write(source, molecule("CH3OH"))
    output = tmp_path / "campaign" / "methanol.toml"
    assert main(["init", str(source), *TINY, "--output", str(output)]) == 0
    capsys.readouterr()
    copy = output.with_suffix(".xyz")
    assert sorted(output.parent.iterdir()) == [output, copy]

    config = load_config(output)
    assert config.campaign.name == "methanol" and config.system.structure_file == copy
    assert 'structure_file = "methanol.xyz"' in output.read_text()  # relative: the folder moves as one
    assert config.system.atoms().get_chemical_formula() == "CH4O"
    assert config.committee.cutoff_A == 5.0 and config.explore.temperatures_K == [300, 400, 500, 600]
    assert config.loop.initial_samples == 15  # 3 x 6 - 6 = 12 degrees of freedom + 3
    seconds, _, hours = _estimate(output.read_text())
    assert seconds > 0 and hours > 0


def test_the_cutoff_grows_with_the_heaviest_element(tmp_path, capsys) -> None:
    """A third-row element (Cl) widens the cutoff; a file in the config's own folder is
    referenced as is; --no-estimate measures nothing but still counts the labels."""
    source = tmp_path / "chloromethane.pdb"
    ase.io.write(source, molecule("CH3Cl"))
    assert main(["init", str(source), "--method", "PBE", "--basis", "def2-SVP", "--no-estimate"]
                + ["--output", str(tmp_path / "cm.toml")]) == 0
    capsys.readouterr()
    config = load_config(tmp_path / "cm.toml")
    assert config.committee.cutoff_A == 5.5 and config.system.structure_file == source
    assert sorted(tmp_path.iterdir()) == [source, tmp_path / "cm.toml"]
    text = (tmp_path / "cm.toml").read_text()
    assert "not measured (alflow init --no-estimate)" in text and "labels" in text
    assert choose_defaults(molecule("CH3CH2OH")).trust_lo_eV_A == 0.20  # the anchor: ethanol's window


def _iodomethane(folder: Path) -> Path:
    atoms = molecule("CH3Cl")
    atoms[1].symbol = "I"
    path = folder / "iodomethane.xyz"
    ase.io.write(path, atoms)
    return path


REFUSALS = [
    (lambda tmp: ["init", "H2Oo", *TINY], ["unknown ASE molecule 'H2Oo'", "did you mean 'H2O'"]),
    (lambda tmp: ["init", str(tmp / "missing.xyz"), *TINY], ["no such structure file"]),
    (lambda tmp: ["init", str(_iodomethane(tmp)), "--method", "HF", "--basis", "6-31G*"],
     ["basis 6-31G* has no functions for I"]),
    (lambda tmp: ["init", "CH3", *TINY], ["9 electrons", "--multiplicity 2"]),
    (lambda tmp: ["init", "H2O", "--method", "PBEX", "--basis", "sto-3g"], ["unknown method 'PBEX'"]),
]


@pytest.mark.parametrize(("argv", "words"), REFUSALS, ids=["unknown-name", "missing-file", "basis-element",
                                                           "odd-electrons", "unknown-method"])
def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys, argv, words) -> None:
    argv = argv(tmp_path) + ["--output", str(tmp_path / "out" / "campaign.toml")]
    before = _files(tmp_path)
    line = _refused(capsys, argv)
    assert all(word in line for word in words), line
    assert _files(tmp_path) == before and not (tmp_path / "out").exists()


def test_an_existing_file_is_kept_without_force(tmp_path, capsys) -> None:
    output = tmp_path / "water.toml"
    output.write_text("# my own notes\n")
    line = _refused(capsys, ["init", "H2O", *TINY, "--output", str(output)])
    assert "exists" in line and "--force" in line
    assert output.read_text() == "# my own notes\n" and sorted(tmp_path.iterdir()) == [output]
    assert main(["init", "H2O", *TINY, "--output", str(output), "--force", "--no-estimate"]) == 0
    assert load_config(output).system.molecule == "H2O"


def test_an_initialised_campaign_runs(prefect_harness, tmp_path, capsys) -> None:
    """The generated water campaign, only shrunk (fewer members, steps, epochs and frames),
    runs a generation end to end."""
    output = tmp_path / "water.toml"
    assert main(["init", "H2O", *TINY, "--output", str(output), "--no-estimate"]) == 0
    capsys.readouterr()
    text = output.read_text()
    for old, new in SHRINK:
        assert old in text, old
        text = text.replace(old, new)
    output.write_text(text)
    summary = active_learning(config_path=str(output))
    assert summary["labels"] >= 7 + 1  # reference geometry + 6 initial + 1 validation
    assert main(["status", str(output), "--json"]) == 0
    assert '"stop_reason": "generation limit 1 reached"' in capsys.readouterr().out
