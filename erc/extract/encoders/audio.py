"""Audio encoders: 80-bin log-mel frames (no weights) and Hugging Face speech models (WavLM,
wav2vec2, HuBERT) from a local folder or the HF cache."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from erc.config import NonNegativeFloat, Positive, PositiveFloat
from erc.errors import MediaError, MediaMissing
from erc.corpus import Utterance
from erc.extract.encoders.base import Encoded, Encoder, EncoderConfig
from erc.extract.encoders.hf import HFLayerEncoder, autocast, masked_mean, select_layers, to_device
from erc.extract.media import load_audio, media_duration


def _load_segment(utt: Utterance, sr: int, max_seconds: float) -> np.ndarray:
    """The utterance's mono waveform ``[S]`` at ``sr``, cut to its first ``max_seconds``."""
    if utt.audio is None:
        raise MediaMissing("no audio path")
    seg_start, seg_end = utt.segment("audio")
    start = seg_start or 0.0
    end = start + max_seconds if max_seconds > 0 else None
    if seg_end is not None:
        end = seg_end if end is None else min(end, seg_end)
    return load_audio(utt.audio, seg_start, end, sr=sr)


def _duration(utt: Utterance, max_seconds: float) -> float:
    try:
        d = media_duration(utt.audio, *utt.segment("audio"))
    except MediaError:
        return 0.0
    return min(d, max_seconds) if max_seconds > 0 else d


@dataclass
class MelConfig(EncoderConfig):
    """Log-mel spectrogram: ``n_mels`` bins, ``win_ms`` windows every ``hop_ms``; audio longer than
    ``max_seconds`` is cut (0: no limit)."""

    sample_rate: Positive = 16000
    n_mels: Positive = 80
    win_ms: PositiveFloat = 25.0
    hop_ms: PositiveFloat = 10.0
    max_seconds: NonNegativeFloat = 30.0


class MelEncoder(Encoder):
    """frames ``[T, n_mels]`` log-mel (float32, computed in ``prepare`` on worker threads);
    pooled ``[2 * n_mels]`` = concat(mean, std) over time."""

    modality = "audio"
    Config = MelConfig
    config: MelConfig

    def __init__(self, config: MelConfig) -> None:
        super().__init__(config)
        from transformers.audio_utils import mel_filter_bank

        c = config
        self.win = int(round(c.sample_rate * c.win_ms / 1000))
        self.hop = int(round(c.sample_rate * c.hop_ms / 1000))
        self.window = torch.hann_window(self.win)
        # [win // 2 + 1, n_mels]: triangular filters on the HTK mel scale, unnormalised
        self.filters = torch.from_numpy(mel_filter_bank(
            num_frequency_bins=self.win // 2 + 1, num_mel_filters=c.n_mels, min_frequency=0.0,
            max_frequency=c.sample_rate / 2, sampling_rate=c.sample_rate, norm=None,
            mel_scale="htk")).float()

    def load(self, device: str, fp16: bool = False) -> None:
        self.device = device  # the transform runs on CPU workers; nothing to load

    def sort_key(self, utt: Utterance) -> float:
        return _duration(utt, self.config.max_seconds)

    def log_mel(self, wav: np.ndarray) -> np.ndarray:
        """Log-mel ``[T, n_mels]`` float32 of a mono waveform ``[S]`` (``T = 1 + S // hop``):
        centred (reflect-padded) Hann windows, power spectrum, mel filters, ``ln(x + 1e-6)``."""
        if wav.size < self.win:
            wav = np.pad(wav, (0, self.win - wav.size))
        with torch.inference_mode():
            spec = torch.stft(torch.from_numpy(np.ascontiguousarray(wav, np.float32)), n_fft=self.win,
                              hop_length=self.hop, win_length=self.win, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)  # [F, T]
            power = spec.real.square() + spec.imag.square()
            return torch.log(power.T @ self.filters + 1e-6).contiguous().numpy()

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> np.ndarray:
        """Log-mel ``[T, n_mels]`` float32 of ``dialogue[position]``."""
        wav = _load_segment(dialogue[position], self.config.sample_rate, self.config.max_seconds)
        return self.log_mel(wav)

    def encode(self, items: list[np.ndarray]) -> list[Encoded]:
        out = []
        for frames in items:
            pooled = np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32)
            out.append(Encoded(pooled, frames))
        return out

    @property
    def dim(self) -> int:
        return 2 * self.config.n_mels

    @property
    def frame_dim(self) -> int | None:
        return self.config.n_mels

    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {"model": "log-mel", "sample_rate": c.sample_rate, "n_mels": c.n_mels, "win_ms": c.win_ms,
                "hop_ms": c.hop_ms, "max_seconds": c.max_seconds, "log": "ln(power + 1e-6)",
                "pooling": "concat(mean, std)"}


@dataclass
class HFAudioConfig(EncoderConfig):
    """``model``: HF id or local folder (WavLM / wav2vec2 / HuBERT). ``layers``: "last", "last4"
    or indices into hidden_states (0 = the CNN + projection output); pooled and frames use it.
    ``all_layers``: also keep every hidden state pooled -> ``[L+1, D]``. ``max_seconds``: cut
    longer audio. ``download``: allow fetching from the hub (otherwise local only)."""

    model: str = ""
    layers: str = "last"
    all_layers: bool = False
    max_seconds: NonNegativeFloat = 30.0
    sample_rate: Positive = 16000
    keep_frames: bool = True
    revision: str = ""
    download: bool = False
    batch_size: Positive = 8


class HFAudioEncoder(HFLayerEncoder):
    """Hugging Face speech encoder: pooled ``[D]`` = mean over the real (unpadded) frames of the
    chosen layer; frames ``[T_i, D]`` float16 (about 50 per second)."""

    modality = "audio"
    Config = HFAudioConfig
    config: HFAudioConfig

    extractor: Any = None  # loaded with the model

    def __init__(self, config: HFAudioConfig) -> None:
        super().__init__(config)
        self.sr = config.sample_rate  # the feature extractor's rate once loaded

    def load(self, device: str, fp16: bool = False) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        w, kw = self.resolve(), self.pretrained_kwargs()
        with self.loading():
            self.extractor = AutoFeatureExtractor.from_pretrained(w.path, **kw)
            self.sr = int(getattr(self.extractor, "sampling_rate", None) or self.config.sample_rate)
            self.model = AutoModel.from_pretrained(w.path, **kw).to(device).eval()
        self.device, self.fp16 = device, bool(fp16 and device.startswith("cuda"))
        self._dim = int(self.model.config.hidden_size)

    def sort_key(self, utt: Utterance) -> float:
        return _duration(utt, self.config.max_seconds)

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> np.ndarray:
        """Waveform ``[S]`` float32 at the model's sampling rate."""
        wav = _load_segment(dialogue[position], self.sr, self.config.max_seconds)
        min_len = 400  # one frame of the usual CNN front end (25 ms at 16 kHz)
        return np.pad(wav, (0, min_len - wav.size)) if wav.size < min_len else wav

    def _frame_lengths(self, samples: torch.Tensor, t_max: int) -> torch.Tensor:
        fn = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if fn is not None:
            return fn(samples).to(torch.long).clamp(1, t_max)
        ratio = t_max / float(samples.max())
        return torch.clamp((samples.float() * ratio).ceil().long(), 1, t_max)

    def encode(self, items: list[np.ndarray]) -> list[Encoded]:
        """Pad the batch (attention mask when the extractor returns one), one forward pass, then
        pool and trim each item to its real number of frames."""
        c = self.config
        feats = self.extractor(items, sampling_rate=self.sr, padding=True, return_tensors="pt")
        lengths = torch.tensor([len(x) for x in items])
        inputs = {k: to_device(v, self.device) for k, v in feats.items()
                  if k in ("input_values", "attention_mask", "input_features")}
        need_hidden = self._layers is not None or c.all_layers
        with torch.inference_mode(), autocast(self.device, self.fp16):
            out = self.model(**inputs, output_hidden_states=need_hidden)
            hidden = select_layers(out.hidden_states, self._layers) if need_hidden else out.last_hidden_state
            t_max = hidden.shape[1]
            n_frames = self._frame_lengths(lengths, t_max)
            mask = (torch.arange(t_max)[None, :] < n_frames[:, None]).to(hidden.device)
            pooled = masked_mean(hidden, mask).cpu().numpy()
            layers = None
            if c.all_layers:
                layers = masked_mean(torch.stack(out.hidden_states), mask).transpose(0, 1).cpu().numpy()
            frames = hidden.to(torch.float16).cpu().numpy() if c.keep_frames else None
        n = n_frames.tolist()
        return [Encoded(pooled[i].astype(np.float32), None if frames is None else frames[i, :n[i]],
                        None if layers is None else layers[i]) for i in range(len(items))]

    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {**self.weights_provenance(), "layers": c.layers,
                "all_layers": c.all_layers, "pooling": "mean over real frames", "sample_rate": self.sr,
                "max_seconds": c.max_seconds, "frame_rate_hz": self._frame_rate()}

    def _frame_rate(self) -> float:
        strides = getattr(getattr(self.model, "config", None), "conv_stride", None)
        return self.sr / math.prod(strides) if strides else 0.0
