"""NaN / Inf in what an encoder reads or writes: such an utterance is stored as failed
(``failed: non-finite input`` / ``failed: non-finite output``), never as ``ok`` features that
training would refuse and a re-extraction would only store again."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from erc.features.schema import Encoded

INPUT = "failed: non-finite input"
OUTPUT = "failed: non-finite output"


def non_finite(value: Any) -> bool:
    """Whether ``value`` holds a NaN or Inf anywhere: arrays, tensors, floats, and the lists,
    tuples, dicts and dataclasses (e.g. :class:`Encoded`) that hold them."""
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not bool(np.isfinite(value).all())
    if isinstance(value, torch.Tensor):
        return (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all())
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (str, bytes, int)) or value is None:
        return False
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(non_finite(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(non_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


def check_output(encoded: Encoded | None) -> bool:
    """True when an encoder's output for one utterance is usable (all finite)."""
    return encoded is not None and not non_finite(encoded)
