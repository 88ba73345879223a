"""Mamba over a dialogue: a stack of selective-state-space layers on ``[B, L, D]`` with a mask.

Backend: the parameters always live in a transformers ``MambaMixer`` (pure PyTorch
``slow_forward``, runs anywhere). When ``mamba_ssm`` is importable and the input is on CUDA, the
same parameters are run through ``mamba_ssm.Mamba`` (its CUDA kernels): the two modules have
identical parameter names and shapes, so a checkpoint trained with one backend loads into the
other. ``backend`` reports what the last forward used ("mamba-ssm" or "torch").

Padding: Mamba is causal (left to right) so right padding never reaches a real position. The
optional backward direction flips each sequence *within its real length* (padding stays at the
end), runs a second mixer, and flips back.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer
from transformers.utils import logging as hf_logging


def mamba_ssm_available() -> bool:
    """True when the optional ``mamba_ssm`` package (CUDA kernels) imports."""
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def flip_within(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x [B, L, ...]`` inside its real length (``mask [B, L]``, right
    padded); padding positions stay in place. The operation is its own inverse."""
    B, L = mask.shape
    lengths = mask.long().sum(-1, keepdim=True)  # [B, 1]
    pos = torch.arange(L, device=x.device).expand(B, L)
    idx = torch.where(pos < lengths, lengths - 1 - pos, pos)  # [B, L]
    idx = idx.view(B, L, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def _init_dt(mixer: MambaMixer, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> None:
    """Mamba's time-step initialisation (transformers only applies it through its PreTrainedModel)."""
    std = mixer.time_step_rank ** -0.5
    nn.init.uniform_(mixer.dt_proj.weight, -std, std)
    dt = torch.exp(torch.rand(mixer.intermediate_size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    with torch.no_grad():
        mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def torch_mixer_forward(mixer: MambaMixer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The computation of ``MambaMixer.slow_forward`` (no cache), rewritten so that training on CPU
    is fast: the recurrence runs over time-unbound slices (``unbind``/``stack`` instead of
    indexing, whose backward would allocate a full-size gradient per step).

    x: ``[B, L, D]``, mask ``[B, L]`` -> ``[B, L, D]``.
    """
    L = x.shape[1]
    xz = mixer.in_proj(x).transpose(1, 2)  # [B, 2E, L]
    h, gate = xz.chunk(2, dim=1)
    m = mask.to(h.dtype).unsqueeze(1)
    h = mixer.act(mixer.conv1d(h * m)[..., :L]) * m  # causal depthwise conv, [B, E, L]
    params = mixer.x_proj(h.transpose(1, 2))  # [B, L, R + 2N]
    dt, Bm, Cm = torch.split(params, [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size], dim=-1)
    dt = nn.functional.softplus(mixer.dt_proj(dt))  # [B, L, E]
    A = -torch.exp(mixer.A_log.float())  # [E, N]
    u = h.transpose(1, 2)  # [B, L, E]
    # time-major, contiguous: every step of the recurrence reads a contiguous [B, E, N] slice
    dt_t = dt.transpose(0, 1).contiguous()  # [L, B, E]
    dA = torch.exp(dt_t.unsqueeze(-1) * A)  # [L, B, E, N]
    dBu = (dt_t * u.transpose(0, 1)).unsqueeze(-1) * Bm.transpose(0, 1).unsqueeze(2)  # [L, B, E, N]
    state = torch.zeros_like(dA[0])
    states = []
    for a_t, b_t in zip(dA.unbind(0), dBu.unbind(0)):
        state = a_t * state + b_t
        states.append(state)
    y = torch.matmul(torch.stack(states), Cm.transpose(0, 1).unsqueeze(-1)).squeeze(-1)  # [L, B, E]
    y = (y.transpose(0, 1) + u * mixer.D) * mixer.act(gate.transpose(1, 2))  # [B, L, E]
    return mixer.out_proj(y.to(x.dtype))


def _mixer(cfg: MambaConfig, layer_idx: int) -> MambaMixer:
    """A MambaMixer with Mamba's dt init, built without transformers' "fast path" warning (we pick
    the backend ourselves)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        mixer = MambaMixer(cfg, layer_idx=layer_idx)
    finally:
        hf_logging.set_verbosity(verbosity)
    _init_dt(mixer)
    return mixer


class MambaBlock(nn.Module):
    """One layer: ``x + Dropout(Mamba(x) [+ flip(Mamba_b(flip(x)))])`` then LayerNorm.

    ``forward(x [B, L, D], mask [B, L]) -> [B, L, D]``; padding outputs are zeroed.
    """

    def __init__(self, dim: int, state_size: int = 16, expand: int = 2, conv_kernel: int = 4,
                 bidirectional: bool = False, dropout: float = 0.1, layer_idx: int = 0) -> None:
        super().__init__()
        cfg = MambaConfig(hidden_size=dim, state_size=state_size, expand=expand, conv_kernel=conv_kernel,
                          num_hidden_layers=1, use_bias=False, use_conv_bias=True, use_mambapy=False)
        self.fwd = _mixer(cfg, layer_idx)
        self.bwd = _mixer(cfg, layer_idx) if bidirectional else None
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.shape = dict(d_model=dim, d_state=state_size, d_conv=conv_kernel, expand=expand)
        self._fast: dict[int, nn.Module] = {}  # id(mixer) -> mamba_ssm.Mamba sharing its parameters
        self.backend = "torch"

    def _mamba_ssm(self, mixer: MambaMixer) -> nn.Module:
        """A ``mamba_ssm.Mamba`` whose parameters *are* ``mixer``'s (kept out of the state dict)."""
        key = id(mixer)
        if key not in self._fast:
            from mamba_ssm import Mamba

            m = Mamba(**self.shape, device=mixer.A_log.device)
            for name in ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"):
                setattr(m, name, getattr(mixer, name))
            m.A_log, m.D = mixer.A_log, mixer.D
            self._fast[key] = m
        return self._fast[key]

    def _run(self, mixer: MambaMixer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and mamba_ssm_available():
            self.backend = "mamba-ssm"
            return self._mamba_ssm(mixer)(x)
        self.backend = "torch"
        # MambaMixer.forward may try to fetch kernels from the Hub; run the PyTorch path ourselves.
        return torch_mixer_forward(mixer, x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(x.dtype).unsqueeze(-1)
        x = x * m
        y = self._run(self.fwd, x, mask)
        if self.bwd is not None:
            y = y + flip_within(self._run(self.bwd, flip_within(x, mask), mask), mask)
        return self.norm(x + self.drop(y)) * m


class DialogueMamba(nn.Module):
    """A stack of ``layers`` :class:`MambaBlock` over ``[B, L, D]`` with mask ``[B, L]``.

    Mamba size (ours; the paper does not publish it): state 16, expand 2, conv kernel 4.
    """

    def __init__(self, dim: int, layers: int = 2, bidirectional: bool = False, dropout: float = 0.1,
                 state_size: int = 16, expand: int = 2, conv_kernel: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MambaBlock(dim, state_size, expand, conv_kernel, bidirectional, dropout, layer_idx=i)
            for i in range(layers)
        )

    @property
    def backend(self) -> str:
        """"mamba-ssm" or "torch": what the last forward ran (before any forward: what it would run
        on CPU, i.e. "torch")."""
        return self.blocks[0].backend if len(self.blocks) else "torch"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return x
