"""Video encoders: sampled frames -> face crops (:mod:`erc.extract.encoders.faces`) ->
handcrafted descriptors (no weights) or a timm CNN / Swin per frame (VisExtNet-style mean)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from erc.config import Positive
from erc.errors import UserError, WeightsMissing
from erc.corpus import Utterance
from erc.extract.encoders.base import Encoded, Encoder, EncoderConfig
from erc.extract.encoders.faces import descriptor_dim, face_crops, face_descriptors
from erc.extract.encoders.hf import autocast, to_device

WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class FaceStats:
    """Thread-safe count of frames seen / frames with a detected face (for provenance)."""

    def __init__(self) -> None:
        self.frames = 0
        self.faces = 0
        self._lock = threading.Lock()

    def add(self, frames: int, faces: int) -> None:
        with self._lock:
            self.frames += frames
            self.faces += faces

    def as_dict(self) -> dict[str, Any]:
        return {"frames_seen": self.frames, "frames_with_face": self.faces}


@dataclass
class FaceDescriptorConfig(EncoderConfig):
    """``frames`` sampled per utterance, face crops resized to ``size`` (a multiple of 8)."""

    frames: Positive = 20
    size: Positive = 64


class FaceDescriptorEncoder(Encoder):
    """frames ``[T, F]`` = HOG + uniform LBP + grey histogram of each face crop (computed in
    ``prepare``); pooled ``[F]`` = mean over frames. No weights."""

    modality = "video"
    Config = FaceDescriptorConfig
    config: FaceDescriptorConfig

    def __init__(self, config: FaceDescriptorConfig) -> None:
        super().__init__(config)
        if config.size < 16 or config.size % 8:
            raise UserError(f"faces encoder: size must be a multiple of 8 and >= 16, got {config.size}")
        self.stats = FaceStats()

    def load(self, device: str, fp16: bool = False) -> None:
        self.device = device

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> np.ndarray:
        crops = face_crops(dialogue[position], self.config.frames, self.config.size)
        self.stats.add(len(crops.crops), crops.found)
        return face_descriptors(crops.crops)

    def encode(self, items: list[np.ndarray]) -> list[Encoded]:
        return [Encoded(f.mean(0).astype(np.float32), f) for f in items]

    @property
    def dim(self) -> int:
        return descriptor_dim(self.config.size)

    @property
    def frame_dim(self) -> int | None:
        return self.dim

    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {"model": "haar-face + hog/lbp/grey-histogram", "frames": c.frames, "size": c.size,
                "face_detector": "opencv haarcascade_frontalface_default", "pooling": "mean over frames",
                **self.stats.as_dict()}


class PixelNorm:
    """Per-channel normalisation of uint8 RGB face crops, as a model's preprocessing expects:
    ``mean`` / ``std`` are on the 0-1 scale (3 values each)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: str) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 ``[N, S, S, 3]`` -> float32 ``[N, 3, S, S]`` on the stats' device."""
        x = to_device(torch.from_numpy(crops), self.mean.device)
        return (x.permute(0, 3, 1, 2).float() - self.mean) / self.std


def split_per_item(y: torch.Tensor, items: list[np.ndarray], keep_frames: bool = True) -> list[Encoded]:
    """The outputs ``[sum T, D]`` of all items' frames -> one :class:`Encoded` per item: pooled
    ``[D]`` = mean over its ``T`` frames (float32), frames ``[T, D]`` float16 (or None)."""
    y = y.float().cpu()
    return [Encoded(part.mean(0).numpy(), part.to(torch.float16).numpy() if keep_frames else None)
            for part in torch.split(y, [len(x) for x in items])]


def import_timm() -> Any:
    """timm (with timm.data / timm.models), or a one-line UserError when it is missing or cannot
    load (timm imports torchvision, whose PyPI wheels load only beside PyPI's CUDA torch)."""
    try:
        import timm
        import timm.data
        import timm.models
    except (ImportError, OSError, RuntimeError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"video encoder 'cnn' needs timm and a torchvision that loads beside this torch ({why}); "
            "install them with pip install -e '.[vision]', or use the 'hf-video' encoder "
            "(transformers image models, no torchvision)") from exc
    return timm


@dataclass
class CNNVideoConfig(EncoderConfig):
    """``model``: a timm model name. ``weights``: a local .pth/.safetensors file or a folder holding
    one; empty -> timm's pretrained weights from the Hugging Face cache (local only unless
    ``download``). ``output``: "logits" (VisExtNet-style 1000-d) or "features" (pre-logits).
    ``random_init``: build without weights -- for tests and benchmarks only."""

    model: str = "resnet50"
    weights: str = ""
    frames: Positive = 20
    size: Positive = 224
    output: Literal["logits", "features"] = "logits"
    download: bool = False
    random_init: bool = False
    batch_size: Positive = 8


class CNNVideoEncoder(Encoder):
    """frames ``[T, D]`` = the CNN's output for each face crop (float16); pooled ``[D]`` = mean."""

    modality = "video"
    Config = CNNVideoConfig
    config: CNNVideoConfig

    def __init__(self, config: CNNVideoConfig) -> None:
        super().__init__(config)
        self.stats = FaceStats()
        self.model: Any = None
        self._file: str | None = None
        self._dim = 0

    # ------------------------------------------------------------------ weights
    def _hub_id(self) -> str:
        timm = import_timm()
        cfg = timm.models.get_pretrained_cfg(self.config.model)
        return str(getattr(cfg, "hf_hub_id", "") or "") if cfg is not None else ""

    def _missing(self, why: str) -> WeightsMissing:
        hub = self._hub_id() or f"timm/{self.config.model}"
        return WeightsMissing(
            f"video encoder '{self.config.model}': {why}; pass a local file with --set video.weights=/path/to/file "
            f"(.pth/.safetensors), or populate the Hugging Face cache (`huggingface-cli download {hub}`), "
            f"or allow downloading with --set video.download=true")

    def resolve_file(self) -> str | None:
        """The weights file to load, or None when timm should download (or random_init)."""
        c = self.config
        if c.random_init:
            return None
        if self._file is not None:
            return self._file
        if c.weights:
            p = Path(c.weights).expanduser()
            if p.is_file():
                self._file = str(p)
            elif p.is_dir():
                found = [p / n for n in WEIGHT_NAMES if (p / n).is_file()]
                found += sorted(f for f in p.iterdir() if f.suffix in WEIGHT_SUFFIXES)
                if not found:
                    raise self._missing(f"no weights file in folder {c.weights}")
                self._file = str(found[0])
            else:
                raise self._missing(f"weights {c.weights} not found")
            return self._file
        hub = self._hub_id()
        if hub:
            try:
                from huggingface_hub import try_to_load_from_cache

                for name in WEIGHT_NAMES[:2]:
                    hit = try_to_load_from_cache(hub, name)
                    if isinstance(hit, str):
                        self._file = hit
                        return hit
            except Exception:  # noqa: BLE001
                pass
        if c.download:
            return None
        raise self._missing("weights not found in the Hugging Face cache (~/.cache/huggingface)")

    def check(self) -> None:
        timm = import_timm()
        if not timm.is_model(self.config.model):
            raise UserError(f"video encoder: unknown timm model {self.config.model!r}")
        self.resolve_file()

    def load(self, device: str, fp16: bool = False) -> None:
        timm = import_timm()
        c = self.config
        file = self.resolve_file()
        pretrained = file is None and not c.random_init  # download allowed
        default = timm.models.get_pretrained_cfg(c.model)
        default_size = default.input_size[-1] if default is not None else c.size
        try:  # transformers (Swin, ViT) fix their input size at build time
            kw = {"img_size": c.size} if c.size != default_size else {}
            model = timm.create_model(c.model, pretrained=pretrained, **kw)
        except TypeError:  # a CNN: any size works
            model = timm.create_model(c.model, pretrained=pretrained)
        if file is not None:
            try:
                timm.models.load_checkpoint(model, file, strict=True)
            except Exception as exc:  # noqa: BLE001
                raise UserError(f"video encoder '{c.model}': cannot load {file}: {str(exc).splitlines()[0]}") from exc
        cfg = timm.data.resolve_model_data_config(model)
        self.norm = PixelNorm(cfg["mean"], cfg["std"], device)
        self.model = model.to(device).eval()
        self.device, self.fp16 = device, bool(fp16 and device.startswith("cuda"))
        self._dim = int(model.num_classes if c.output == "logits" else model.num_features)

    # ------------------------------------------------------------------ forward
    def prepare(self, dialogue: Sequence[Utterance], position: int) -> np.ndarray:
        """Face crops ``[T, size, size, 3]`` uint8 RGB."""
        crops = face_crops(dialogue[position], self.config.frames, self.config.size)
        self.stats.add(len(crops.crops), crops.found)
        return crops.crops

    def encode(self, items: list[np.ndarray]) -> list[Encoded]:
        """All frames of the batch in one forward pass ``[sum T, 3, S, S]``, split back per item."""
        with torch.inference_mode(), autocast(self.device, self.fp16):
            x = self.norm(np.concatenate(items))
            if self.config.output == "logits":
                y = self.model(x)
            else:
                y = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            return split_per_item(y, items)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def frame_dim(self) -> int | None:
        return self._dim

    def provenance(self) -> dict[str, Any]:
        c = self.config
        file = None if c.random_init else self.resolve_file()
        return {"model": c.model, "weights": file or ("random-init" if c.random_init else "timm download"),
                "hf_hub_id": self._hub_id(), "frames": c.frames, "size": c.size, "output": c.output,
                "face_detector": "opencv haarcascade_frontalface_default", "pooling": "mean over frames",
                **self.stats.as_dict()}
