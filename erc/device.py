"""The one device rule of every command (``erc extract``, ``train-head``, ``ablate``, ``predict``)
and of the Python API: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.

``auto`` is the first CUDA device when torch sees one, else the CPU. ``cuda`` is the current CUDA
device (under ``torchrun``, each rank's own GPU); ``cuda:N`` is GPU N. A device the machine does
not have is one :class:`~erc.errors.UserError` line, the same for ``cuda`` and ``cuda:N``.
"""

from __future__ import annotations

import re

from erc.errors import UserError

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto: CUDA when there is one)."


def check_device_name(name: str, flag: str = "--device") -> str:
    """``name`` when it is one of the accepted forms (no look at the machine), else UserError."""
    if not DEVICE_PATTERN.fullmatch(str(name)):
        raise UserError(f"{flag} must be auto, cpu, cuda or cuda:N; got {name!r}")
    return str(name)


def resolve_device(name: str, flag: str = "--device") -> str:
    """The device ``name`` means on this machine: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    UserError (one line) for a malformed name, for CUDA asked for where torch sees none (the same
    line for ``cuda`` and ``cuda:N``), and for a GPU index the machine does not have."""
    import torch

    name = check_device_name(name, flag)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if not torch.cuda.is_available():
        raise UserError(f"{flag} asks for a CUDA GPU, but torch sees none here; use {flag} cpu or auto")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(f"{flag} {name}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return name


def is_cuda(device: str) -> bool:
    """Whether a resolved device name is a CUDA device (``cuda`` or ``cuda:N``)."""
    return str(device).startswith("cuda")
