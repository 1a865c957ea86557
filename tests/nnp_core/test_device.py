"""Committees on a torch device: the setting's checks everywhere, and, where torch sees
a CUDA device, that a GPU gives the host's numbers (evaluation, training, MD,
checkpoints). CI has no GPU: the CUDA tests run on a GPU machine
(``pytest tests/nnp_core/test_device.py``; docs/benchmarks.md, ``gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from nnp_core.committee import Committee, load_committee
from nnp_core.device import check_device, resolve_device
from nnp_core.md import MDConfig, Replica, run_md
from nnp_core.models import build_model
from nnp_core.train_config import TrainConfig
from nnp_core.training import train_committee

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA device")
MACE_SMALL = dict(cutoff_A=4.0, num_channels=8, max_L=1, correlation=2, num_interactions=2,
                  radial_MLP=[16, 16], readout_hidden=4)


@pytest.mark.parametrize("bad", ["gpu", "cuda0", "CUDA", "cuda:", "mps", ""])
def test_a_device_name_torch_does_not_know_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got") as caught:
        check_device(bad)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="invalid TrainConfig field.*device"):
        TrainConfig(device=bad)


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA device")
def test_without_a_gpu_cuda_is_refused_and_auto_is_the_cpu() -> None:
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{name}': torch sees no CUDA device on this machine"):
            check_device(name)
    assert resolve_device("auto") == torch.device("cpu")
    committee = Committee.create("bpnn", n_members=2, elements=["H", "O"])
    assert committee.to("auto") is committee and committee.device == torch.device("cpu")


def test_a_cuda_index_past_the_last_gpu_is_refused() -> None:
    with pytest.raises(ValueError, match="device 'cuda:99'"):
        check_device("cuda:99")


def test_training_on_auto_without_a_gpu_is_training_on_the_cpu(ethanol_emt_frames) -> None:
    if CUDA:
        pytest.skip("auto is the GPU here")
    config = TrainConfig(max_epochs=3, batch_size_frames=8)
    first, _ = train_committee(ethanol_emt_frames[:20], config, n_members=2)
    second, _ = train_committee(ethanol_emt_frames[:20], TrainConfig(max_epochs=3, batch_size_frames=8,
                                                                      device="auto"), n_members=2)
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------- on a GPU
def _committees() -> dict[str, Committee]:
    bpnn = Committee.create("bpnn", n_members=3, seed=2, elements=["H", "C", "O"])
    out = {"bpnn": bpnn}
    try:
        import mace  # noqa: F401
    except ImportError:
        return out
    out["mace"] = Committee(build_model("mace", n_members=3, seed=1, elements=[1, 6, 8], **MACE_SMALL))
    out["mace-shallow"] = Committee(build_model("mace-shallow", n_members=3, seed=1, elements=[1, 6, 8],
                                                **MACE_SMALL))
    return out


@needs_cuda
@pytest.mark.parametrize("architecture", ["bpnn", "mace", "mace-shallow"])
def test_a_committee_on_the_gpu_predicts_what_it_predicts_on_the_cpu(architecture: str, tmp_path) -> None:
    committees = _committees()
    if architecture not in committees:
        pytest.skip("mace-torch is not installed")
    host = committees[architecture]
    gpu = host.to("cuda")
    assert gpu.device.type == "cuda" and host.device.type == "cpu" and gpu.to("cuda") is gpu
    frames = [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH3OH")]
    for seed, atoms in enumerate(frames):
        atoms.rattle(0.05, seed=seed)
    a, b = host.predict(frames), gpu.predict(frames)
    np.testing.assert_allclose(b.member_energies, a.member_energies, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.member_forces, a.member_forces, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.max_force_dev, a.max_force_dev, rtol=0, atol=1e-9)
    np.testing.assert_allclose(gpu.fingerprints(frames), host.fingerprints(frames), rtol=0, atol=1e-9)
    loaded = load_committee(gpu.save(tmp_path / "c"))  # saved from the GPU, loaded on the host
    assert loaded.device.type == "cpu"
    np.testing.assert_allclose(loaded.predict(frames).member_forces, a.member_forces, rtol=0, atol=1e-9)


@needs_cuda
@pytest.mark.parametrize("architecture", ["bpnn", "mace"])
def test_training_on_the_gpu_follows_the_cpus_steps(architecture: str, ethanol_emt_frames) -> None:
    """The same epochs on either device: the members agree to float64 summation-order
    noise (the GPU's scatter-adds sum in another order), and come back to the host."""
    if architecture == "mace":
        pytest.importorskip("mace")
    hparams = MACE_SMALL if architecture == "mace" else {}
    frames = ethanol_emt_frames[:24]
    results = {}
    for device in ("cpu", "cuda"):
        config = TrainConfig(max_epochs=4, batch_size_frames=8, device=device)
        committee, report = train_committee(frames, config, n_members=2, architecture=architecture,
                                            model_hparams=hparams)
        assert committee.device.type == "cpu"
        warm, _ = train_committee(frames, config, initial=committee)  # a warm start on the device too
        assert warm.device.type == "cpu"
        results[device] = (committee.predict(frames), warm.predict(frames), report)
    (cpu, cpu_warm, cpu_report), (gpu, gpu_warm, gpu_report) = results["cpu"], results["cuda"]
    assert cpu_report.members[0].epochs_run == gpu_report.members[0].epochs_run == 4
    np.testing.assert_allclose(gpu.member_forces, cpu.member_forces, rtol=0, atol=1e-7)
    np.testing.assert_allclose(gpu_warm.member_energies, cpu_warm.member_energies, rtol=0, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("architecture", ["bpnn", "mace"])
def test_md_on_the_gpu_follows_the_cpu_trajectory(architecture: str) -> None:
    committees = _committees()
    if architecture not in committees:
        pytest.skip("mace-torch is not installed")
    host = committees[architecture]
    config = MDConfig(timestep_fs=0.5, n_steps=40, record_interval_steps=10)
    runs = {}
    for name, committee in (("cpu", host), ("cuda", host.to("cuda"))):
        replicas = [Replica(molecule("CH3CH2OH"), temperature_K=300.0, seed=s) for s in range(3)]
        runs[name] = run_md(committee, replicas, config=config)
    for a, b in zip(runs["cpu"].frames, runs["cuda"].frames):
        assert (a.replica, a.step) == (b.replica, b.step)
        np.testing.assert_allclose(b.positions_A, a.positions_A, rtol=0, atol=1e-8)
        np.testing.assert_allclose(b.max_force_dev, a.max_force_dev, rtol=0, atol=1e-8)
