"""Never train on, or report, a non-finite number.

- :func:`check_step`: a non-finite loss or gradient norm stops training (:class:`Diverged`, naming
  the epoch and step) before the optimiser applies it.
- :func:`refuse_non_finite`: a cache array holding NaN / Inf is refused when it is loaded, naming
  the rows.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from erc.errors import UserError


CHUNK = 1 << 24  # values checked at a time


class Diverged(UserError):
    """Training produced a non-finite loss, gradient or prediction; the run has no result."""


def grad_norm(parameters: Iterable[torch.nn.Parameter], clip: float) -> torch.Tensor:
    """The total gradient L2 norm (a 0-d tensor; no host sync), clipping to ``clip`` first when
    ``clip > 0`` (``clip_grad_norm_``, which returns the norm before clipping)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def check_step(loss: torch.Tensor, norm: torch.Tensor, epoch: int, step: int, steps: int) -> None:
    """Raise :class:`Diverged` when ``loss`` or the gradient ``norm`` (0-d tensors) is not finite.
    One host sync for both."""
    ok = torch.isfinite(loss.detach()) & torch.isfinite(norm.detach().to(loss.device))
    if bool(ok):
        return
    what = "loss" if not bool(torch.isfinite(loss.detach())) else "gradient"
    value = float(loss.detach()) if what == "loss" else float(norm.detach())
    raise Diverged(f"training diverged: non-finite {what} ({value}) at epoch {epoch}, step {step} of {steps}")


def check_predictions(probs: np.ndarray, split: str, epoch: int) -> None:
    """Raise :class:`Diverged` when a split's predicted probabilities ``[n, C]`` hold NaN / Inf
    (the weights became non-finite in the last step of an epoch)."""
    if not np.isfinite(probs).all():
        raise Diverged(f"training diverged: non-finite {split} predictions after epoch {epoch}")


def bad_rows(values: np.ndarray | torch.Tensor, offsets: np.ndarray | None = None) -> np.ndarray:
    """Rows (``[k]`` int, sorted) whose values hold NaN or Inf. ``values``: ``[N, ...]`` one row per
    utterance, or with ``offsets [N + 1]`` ragged frames ``[sum T, F]`` mapped back to utterances."""
    arr = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    flat = arr.reshape(arr.shape[0], -1)
    step = max(1, CHUNK // max(1, flat.shape[1]))  # bounded temporary memory on large frame arrays
    found = [np.flatnonzero(~np.isfinite(flat[i:i + step]).all(axis=1)) + i for i in range(0, len(flat), step)]
    bad = np.concatenate(found)
    if not len(bad):
        return np.zeros(0, dtype=np.int64)
    if offsets is not None:
        bad = np.unique(np.searchsorted(np.asarray(offsets), bad, side="right") - 1)
    return bad.astype(np.int64)


def refuse_non_finite(values: np.ndarray | torch.Tensor, what: str, ids: Sequence[str],
                      offsets: np.ndarray | None = None) -> None:
    """UserError naming the utterances (up to 5 and the count) whose ``values`` hold NaN / Inf;
    ``what`` names the array, e.g. ``"features/demo.h5 audio/mel pooled"``."""
    bad = bad_rows(values, offsets)
    if len(bad):
        shown = ", ".join(str(ids[i]) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise UserError(f"{what} holds NaN or Inf in {len(bad)} utterance(s) ({shown}); "
                        "run `erc cache verify` and re-extract that group (erc extract --force)")
