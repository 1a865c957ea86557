"""Which torch device a committee trains and runs on.

Committees are kept, saved and compared on the CPU; a GPU is a place to evaluate or
train them. Training moves the model and the prepared batches to the device and brings
the trained members back; MD moves the committee once and sends positions there every
step (the integrator stays in numpy on the host, as ASE's does with a GPU calculator).

Device names are torch's: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``"auto"`` is ``"cuda"``
where torch sees a CUDA device and ``"cpu"`` elsewhere.
"""

from __future__ import annotations

import re

import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(name: str) -> str:
    """``name`` if it is a device this machine has (see the module docstring), else a
    one-line ValueError saying why."""
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: torch sees no CUDA device on this machine "
                             f"(torch {torch.__version__}); use 'cpu', or 'auto' to take a GPU only where there is one")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device for a setting (None: the CPU), with its index where it is a GPU."""
    if name is None:
        return torch.device("cpu")
    if isinstance(name, torch.device):
        name = str(name)
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # as a tensor's .device says it
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` with every tensor on ``device`` (the same dict if it is already there)."""
    if all(value.device == device for value in batch.values()):
        return batch
    return {key: value.to(device) for key, value in batch.items()}
