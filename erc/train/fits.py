"""Whether a head the user sized with ``--set`` fits in this machine's memory, found before any
allocation: the head is built on PyTorch's ``meta`` device (shapes only, no storage) and its
parameters counted."""

from __future__ import annotations

import math
import os

import torch

from erc.errors import UserError
from erc.heads.base import HeadInputs
from erc.heads.registry import HeadSpec

BYTES_PER_PARAMETER = 16  # fp32 weight, its gradient and AdamW's two moments


def machine_memory() -> int:
    """Bytes of physical memory (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def parameter_count(spec: HeadSpec, inputs: HeadInputs) -> float | None:
    """The head's number of parameters, counted on the meta device (``inf`` when one tensor is too
    large for PyTorch to size); None when the head cannot be built there (e.g. it loads pre-trained
    weights from disk while it is built)."""
    try:
        with torch.device("meta"):
            head = spec.cls(spec.config, inputs)
    except UserError:
        raise
    except RuntimeError as e:
        return math.inf if "overflow" in str(e) else None  # a tensor past int64 bytes: too large anywhere
    except Exception:  # noqa: BLE001 - not buildable without storage: no estimate, build for real
        return None
    return sum(p.numel() for p in head.parameters())


def check_fits(spec: HeadSpec, inputs: HeadInputs, memory: int | None = None) -> None:
    """UserError, before anything is allocated, when training ``spec``'s head would need more than
    the machine's memory for its parameters alone (weights, gradients, optimiser state)."""
    memory = machine_memory() if memory is None else memory
    n = parameter_count(spec, inputs)
    if not memory or n is None or n * BYTES_PER_PARAMETER <= memory:
        return
    given = " ".join(f"{k}={v}" for k, v in spec.overrides.items()) or "its defaults"
    size = "more parameters than PyTorch can size" if math.isinf(n) else \
        f"{int(n):,} parameters need {n * BYTES_PER_PARAMETER / 2**30:.1f} GiB to train (weights, gradients, AdamW state)"
    raise UserError(f"{spec.name} with --set {given} does not fit: {size}; this machine has {memory / 2**30:.1f} GiB")
