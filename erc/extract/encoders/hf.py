"""Shared by the Hugging Face text and audio encoders: weight resolution (local path or HF cache,
never the network unless asked), layer selection and mask-aware pooling."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from erc.errors import UserError, WeightsMissing
from erc.extract.encoders.base import Encoder

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5")


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a model's files are: ``path`` (a folder, or the model id when it will be downloaded),
    ``source`` ("local", "hf-cache" or "download") and the snapshot commit when known."""

    model: str
    path: str
    source: str
    commit: str = ""


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(any(folder.glob(p)) for p in WEIGHT_FILES)


def resolve_weights(model: str, *, modality: str, flag: str, revision: str = "",
                    download: bool = False) -> ResolvedWeights:
    """Find ``model`` as a local folder, else in the Hugging Face cache; with ``download`` defer to
    ``from_pretrained``. Raises :class:`WeightsMissing` (one line) when it is not available."""
    if not model:
        raise UserError(f"{modality} encoder: no model given; pass --{flag} <model id or local folder>")
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        if not _has_weights(local):
            raise WeightsMissing(f"{modality} encoder '{model}': the folder has no config.json and weights "
                                 f"file; pass a folder saved with save_pretrained: --{flag} /path/to/model")
        return ResolvedWeights(model, str(local.resolve()), "local")
    cached = _from_hf_cache(model, revision)
    if cached is not None:
        return ResolvedWeights(model, str(cached), "hf-cache", cached.name)
    if download:
        return ResolvedWeights(model, model, "download", revision)
    short = model.rstrip("/").split("/")[-1]
    raise WeightsMissing(
        f"{modality} encoder '{model}': weights not found in the Hugging Face cache (~/.cache/huggingface) "
        f"or as a local path; download them on a machine with internet (`huggingface-cli download {model}`) "
        f"and copy the cache, or pass a local folder: --{flag} /path/to/{short} (or --set {flag}.download=true)")


def _from_hf_cache(model: str, revision: str) -> Path | None:
    """The snapshot folder of ``model`` in the HF cache when it holds a config and weights."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json", revision=revision or None)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply "not in the cache"
        return None
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if _has_weights(folder) else None


def parse_layers(spec: str) -> list[int] | None:
    """``"last"`` -> None (the last hidden state); ``"last4"`` -> [-4, -3, -2, -1]; ``"-1,-2"`` or
    ``"12"`` -> those indices into ``hidden_states`` (0 is the embedding output)."""
    spec = spec.strip().lower()
    if spec in ("", "last"):
        return None
    if spec.startswith("last") and spec[4:].isdigit():
        k = int(spec[4:])
        return list(range(-k, 0))
    try:
        return [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"layers must be 'last', 'lastK' or a comma list of indices; got {spec!r}") from None


def select_layers(hidden_states: tuple[torch.Tensor, ...], layers: list[int] | None) -> torch.Tensor:
    """``[B, T, D]``: the last hidden state, or the mean of the chosen ``hidden_states``."""
    if layers is None:
        return hidden_states[-1]
    n = len(hidden_states)
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise UserError(f"layer index {bad[0]} out of range: the model has {n} hidden states (0..{n - 1})")
    if len(layers) == 1:
        return hidden_states[layers[0]]
    return torch.stack([hidden_states[i] for i in layers]).mean(0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of ``x [..., B, T, D]`` where ``mask [B, T]`` is true; -> ``[..., B, D]`` float32."""
    m = mask.to(torch.float32).unsqueeze(-1)
    return (x.float() * m).sum(-2) / m.sum(-2).clamp_min(1.0)


def to_device(x: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Host -> ``device``: on CUDA through pinned (page-locked) memory with a non-blocking copy,
    so the host goes on (decoding, queuing kernels) while the copy runs; on CPU unchanged."""
    if torch.device(device).type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def autocast(device: str, fp16: bool) -> torch.autocast:
    """fp16 autocast on CUDA when asked; a disabled context otherwise."""
    dev = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev, dtype=torch.float16, enabled=fp16 and dev == "cuda")


class HFWeights:
    """Mixin for encoders whose config names a Hugging Face model (``model``, ``revision``,
    ``download``): resolves the weights once, checks them cheaply, and gives the
    ``from_pretrained`` keyword arguments (local files only unless downloading is allowed)."""

    modality: str
    config: Any
    _weights: ResolvedWeights | None = None  # resolved on first use
    model: Any = None  # the loaded model (``load``)

    def model_id(self) -> str:
        return self.config.model

    def resolve(self) -> ResolvedWeights:
        if self._weights is None:
            self._weights = resolve_weights(self.model_id(), modality=self.modality, flag=self.modality,
                                            revision=self.config.revision, download=self.config.download)
        return self._weights

    def check(self) -> None:
        self.resolve()

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """Around ``from_pretrained``: an ``OSError`` (offline with ``download=true``, an ``HF_HOME``
        that is not a writable folder, a damaged model folder) or a ``SafetensorError`` (a damaged
        weights file) becomes one line naming the model."""
        from safetensors import SafetensorError  # a damaged weights file (transformers' own dependency)

        try:
            yield
        except (OSError, SafetensorError) as e:
            text = str(e).strip()
            first = text.splitlines()[0] if text else ""
            home = os.environ.get("HF_HOME") or "~/.cache/huggingface"
            raise UserError(f"{self.modality} encoder '{self.model_id()}': the model cannot be loaded "
                            f"({type(e).__name__}: {first}); with --set {self.modality}.download=true the "
                            f"hub must be reachable and HF_HOME ({home}) a writable folder; or pass a local "
                            "folder saved with save_pretrained") from None

    @property
    def dim(self) -> int:
        """Hidden size of the loaded model (0 before ``load``)."""
        return int(getattr(self, "_dim", 0))

    @property
    def frame_dim(self) -> int | None:
        return self.dim if self.config.keep_frames else None

    def weights_provenance(self) -> dict[str, Any]:
        """Model id, resolved path, where the weights came from, and their revision."""
        w = self.resolve()
        return {"model": self.model_id(), "model_path": w.path, "weights_source": w.source,
                "revision": self.config.revision or w.commit, "commit": w.commit}

    def pretrained_kwargs(self) -> dict[str, Any]:
        w = self.resolve()
        kw: dict[str, Any] = {"local_files_only": w.source != "download"}
        if w.source == "download" and self.config.revision:
            kw["revision"] = self.config.revision
        return kw


class HFLayerEncoder(HFWeights, Encoder):
    """An encoder on a Hugging Face model that pools one chosen representation: ``config.layers``
    (parsed, so checked, when the encoder is built; None = the last hidden state)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._layers = parse_layers(config.layers)
