"""Video encoder on Hugging Face image models (ResNet, Swin, ViT, ConvNeXt ... by id or local
folder): sampled frames -> face crops (or whole frames) -> the model on each. Needs neither timm
nor torchvision, so it runs wherever transformers does (a CPU-only torch included)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch

from erc.config import NonNegative, Positive
from erc.errors import UserError
from erc.corpus import Utterance
from erc.extract.encoders.base import Encoded, Encoder, EncoderConfig
from erc.extract.encoders.faces import face_crops, whole_frames
from erc.extract.encoders.hf import HFWeights, ResolvedWeights, autocast
from erc.extract.encoders.video import FaceStats, PixelNorm, split_per_item

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class HFVideoConfig(EncoderConfig):
    """``model``: HF id or local folder of an image model. ``output``: "features" (the backbone's
    pooled output; Swin per frame for DeepMSI) or "logits" (its classification head, e.g.
    microsoft/resnet-50's 1000 ImageNet classes, VisExtNet-style). ``size``: side of the face crop
    fed to the model (0: the model's ``image_size``, else 224). ``frames`` sampled per utterance.
    ``download``: allow fetching from the hub (otherwise local only). ``tokens``: keep each frame's
    patch tokens (the backbone's last hidden state: Swin's 7 x 7 grid of its last stage, a CNN's
    last feature map flattened, a ViT's tokens with its CLS first) in place of one vector per frame,
    as DeepMSI-MER's per-frame compression needs: ``frames [T * K, D]``, frame-major (rows
    ``t*K .. t*K + K - 1`` are frame t), with the group attribute ``frame_tokens = K``; ``pooled``
    is unchanged (the mean over frames of each frame's pooled output). ``crop``: what each frame
    shows the model: ``"face"`` (the detected face, square, grown 1.3 x), ``"frame"`` (the whole
    frame, resized to a square), or ``"auto"`` (the default): whole frames with ``tokens=true``
    (DeepMSI-MER's token path: its VSC compresses whole frames' Swin tokens precisely to drop the
    background, so a face crop would remove beforehand what the compression is there to remove),
    face crops otherwise."""

    model: str = ""
    output: Literal["features", "logits"] = "features"
    frames: Positive = 20
    size: NonNegative = 0
    revision: str = ""
    download: bool = False
    keep_frames: bool = True
    tokens: bool = False
    crop: Literal["auto", "face", "frame"] = "auto"
    batch_size: Positive = 8


class HFVideoEncoder(HFWeights, Encoder):
    """frames ``[T, D]`` = the model's output for each of ``T = frames`` face crops (float16), or
    with ``tokens`` ``[T * K, D]``, the K patch tokens of each frame; pooled ``[D]`` = the mean
    over frames of each frame's pooled output (float32)."""

    modality = "video"
    Config = HFVideoConfig
    config: HFVideoConfig

    def __init__(self, config: HFVideoConfig) -> None:
        super().__init__(config)
        if config.output not in ("features", "logits"):
            raise UserError(f"video encoder: output must be 'features' or 'logits', got {config.output!r}")
        if config.frames < 1:
            raise UserError(f"video encoder: frames must be >= 1, got {config.frames}")
        if config.tokens and config.output != "features":
            raise UserError("video encoder: tokens=true keeps the backbone's patch tokens; it needs output=features")
        if config.crop not in ("auto", "face", "frame"):
            raise UserError(f"video encoder: crop must be auto, face or frame, got {config.crop!r}")
        self.crop = config.crop if config.crop != "auto" else ("frame" if config.tokens else "face")
        self._weights: ResolvedWeights | None = None
        self.stats = FaceStats()
        self.model: Any = None
        self.size = config.size
        self.normalisation = ""
        self._dim = 0
        self._tokens = 1

    def load(self, device: str, fp16: bool = False) -> None:
        from transformers import AutoModel, AutoModelForImageClassification

        c = self.config
        w, kw = self.resolve(), self.pretrained_kwargs()
        cls = AutoModelForImageClassification if c.output == "logits" else AutoModel
        try:
            with self.loading():
                model, info = cls.from_pretrained(w.path, output_loading_info=True, **kw)
        except (ValueError, KeyError) as exc:  # e.g. a text model, or no classification head class
            raise UserError(f"video encoder '{c.model}': not an image model with "
                            f"{'a classification head' if c.output == 'logits' else 'a backbone'}: "
                            f"{str(exc).splitlines()[0]}") from exc
        if info.get("missing_keys"):
            missing = info["missing_keys"]
            raise UserError(f"video encoder '{c.model}': the weights lack {len(missing)} of the model's "
                            f"tensors (e.g. {missing[0]}); with output=logits the checkpoint must hold a "
                            "classification head")
        image_size = getattr(model.config, "image_size", None)
        if isinstance(image_size, (list, tuple)):
            image_size = image_size[-1]
        self.size = c.size or int(image_size or 224)
        mean, std = self._normalisation(w.path, kw)
        self.norm = PixelNorm(mean, std, device)
        self.model = model.to(device).eval()
        self.device, self.fp16 = device, bool(fp16 and device.startswith("cuda"))
        probe = np.zeros((1, self.size, self.size, 3), np.uint8)
        pooled, tokens = self._forward(probe)
        self._dim = int(pooled.shape[1])
        if tokens is not None:
            if tokens.shape[2] != self._dim:
                raise UserError(f"video encoder '{c.model}': its tokens are {tokens.shape[2]}-d but its pooled "
                                f"output is {self._dim}-d; tokens=true needs a backbone whose output pools its tokens")
            self._tokens = int(tokens.shape[1])

    def _normalisation(self, path: str, kw: dict[str, Any]) -> tuple[Sequence[float], Sequence[float]]:
        """The image processor's mean / std, or ImageNet's when the model ships no processor."""
        from transformers import AutoImageProcessor

        try:
            proc = AutoImageProcessor.from_pretrained(path, use_fast=False, **kw)
            mean, std = proc.image_mean, proc.image_std
            self.normalisation = "image processor"
        except (OSError, ValueError, AttributeError):
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            self.normalisation = "imagenet (no preprocessor_config.json)"
        return mean, std

    def _forward(self, crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 RGB ``[N, S, S, 3]`` -> float32 ``[N, D]`` on the CPU, and with ``tokens`` the
        patch tokens ``[N, K, D]`` (else None)."""
        with torch.inference_mode(), autocast(self.device, self.fp16):
            out = self.model(pixel_values=self.norm(crops))
            tokens = None
            if self.config.tokens:
                h = out.last_hidden_state.float()
                tokens = (h.flatten(2).transpose(1, 2) if h.dim() == 4 else h).cpu()  # CNN [N, C, H, W] -> [N, HW, C]
            if self.config.output == "logits":
                y = out.logits
            elif getattr(out, "pooler_output", None) is not None:
                y = out.pooler_output  # ResNet / ConvNeXt: [N, C, 1, 1]; Swin / ViT: [N, D]
            else:
                y = out.last_hidden_state.float().mean(1)
            return y.flatten(1).float().cpu(), tokens

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> np.ndarray:
        """Face crops or whole frames (``crop``) ``[frames, size, size, 3]`` uint8 RGB."""
        take = whole_frames if self.crop == "frame" else face_crops
        crops = take(dialogue[position], self.config.frames, self.size or 224)
        self.stats.add(len(crops.crops), crops.found)
        return crops.crops

    def encode(self, items: list[np.ndarray]) -> list[Encoded]:
        """All frames of the batch in one forward pass ``[sum T, 3, S, S]``, split back per item."""
        pooled, tokens = self._forward(np.concatenate(items))
        out = split_per_item(pooled, items, self.config.keep_frames and tokens is None)
        if tokens is not None and self.config.keep_frames:
            for enc, part in zip(out, torch.split(tokens, [len(x) for x in items])):
                enc.frames = part.reshape(-1, part.shape[-1]).to(torch.float16).numpy()  # [T * K, D], frame-major
        return out

    @property
    def frame_tokens(self) -> int:
        return self._tokens

    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {**self.weights_provenance(), "output": c.output, "frames": c.frames, "size": self.size,
                "frame_rows": f"{self._tokens} patch tokens per frame" if c.tokens else "one vector per frame",
                "normalisation": self.normalisation,
                "crop": "whole frame" if self.crop == "frame" else "face",
                "face_detector": "none (whole frames)" if self.crop == "frame" else "opencv haarcascade_frontalface_default",
                "pooling": "mean over frames",
                **self.stats.as_dict()}
