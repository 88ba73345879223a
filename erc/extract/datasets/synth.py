"""Write small, real media files (wav, mp4, avi) and draw synthetic faces.

Used by the built-in demo corpus and by the tests, so that every decoding path of the pipeline
runs on genuine containers (PyAV for mp4/avi, soundfile for wav) without any download.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf

EXPRESSIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")


def write_wav(path: str | Path, samples: np.ndarray, sr: int = 16000) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit PCM wav file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


def _even(frames: np.ndarray) -> np.ndarray:
    """Crop frames to even height and width (yuv420p needs both even)."""
    t, h, w, _ = frames.shape
    return frames[:, : h - h % 2, : w - w % 2]


def _write_container(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sr: int,
                     codec: str, fmt: str | None) -> Path:
    """Encode ``frames`` [T, H, W, 3] RGB uint8 (and optional mono ``audio``) into one container."""
    frames = _even(np.ascontiguousarray(frames, dtype=np.uint8))
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be [T>0, H, W, 3] uint8, got {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=fmt) as container:
        vstream = container.add_stream(codec, rate=fps)
        vstream.width = int(frames.shape[2])
        vstream.height = int(frames.shape[1])
        vstream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            vstream.bit_rate = 400_000
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sr)
            astream.layout = "mono"
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            _encode_audio(container, astream, np.asarray(audio, dtype=np.float32), sr)
    return path


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream,
                  samples: np.ndarray, sr: int) -> None:
    """Encode mono float samples with ``stream`` (aac wants fixed-size frames of 1024)."""
    samples = np.clip(samples.reshape(-1), -1.0, 1.0).astype(np.float32)
    chunk = 1024
    pts = 0
    for i in range(0, len(samples), chunk):
        piece = samples[i: i + chunk]
        frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = sr
        frame.pts = pts
        frame.time_base = Fraction(1, sr)
        pts += len(piece)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8, audio: np.ndarray | None = None,
              sr: int = 16000, codec: str = "mpeg4") -> Path:
    """Write an mp4 clip: ``frames`` [T, H, W, 3] RGB uint8 at ``fps``, optional mono aac audio."""
    return _write_container(Path(path), frames, fps, audio, sr, codec, "mp4")


def write_avi(path: str | Path, frames: np.ndarray, fps: int = 8, audio: np.ndarray | None = None,
              sr: int = 16000) -> Path:
    """Write an avi file with an mpeg4 (DivX-like) video stream, like IEMOCAP's dialog videos."""
    return _write_container(Path(path), frames, fps, audio, sr, "mpeg4", "avi")


def tone(freq: float, seconds: float, sr: int = 16000, amplitude: float = 0.3,
         tempo: float = 0.0, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """A sine tone with a soft fade, optional amplitude modulation at ``tempo`` Hz and white noise."""
    n = max(1, int(round(seconds * sr)))
    t = np.arange(n, dtype=np.float32) / sr
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    if tempo > 0:
        wave *= 0.5 + 0.5 * np.sin(2 * np.pi * tempo * t) ** 2
    fade = min(n // 2, int(0.02 * sr))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        wave = wave + noise * rng.standard_normal(n).astype(np.float32)
    return wave.astype(np.float32)


def draw_face(expression: str, size: int = 64, rng: np.random.Generator | None = None,
              background: tuple[int, int, int] | None = None) -> np.ndarray:
    """Draw a cartoon face [size, size, 3] RGB uint8 whose mouth and brows show ``expression``.

    neutral: flat mouth; joy: smile; sadness: frown with sagging brows; anger: frown with
    slanted-in brows; surprise / fear: open round mouth, raised brows; disgust: wavy mouth.
    ``rng`` adds a little jitter (position, skin tone, background) so frames are not identical.
    """
    rng = rng or np.random.default_rng(0)
    s = size / 64.0
    bg = background or tuple(int(v) for v in rng.integers(20, 90, 3))
    img = np.full((size, size, 3), bg, dtype=np.uint8)
    cx = int(size / 2 + rng.integers(-2, 3) * s)
    cy = int(size / 2 + rng.integers(-2, 3) * s)
    skin = tuple(int(v) for v in np.array([225, 190, 160]) + rng.integers(-20, 21, 3))
    cv2.ellipse(img, (cx, cy), (int(22 * s), int(28 * s)), 0, 0, 360, skin, -1)
    dark = (30, 30, 30)
    eye_y = cy - int(8 * s)
    for side in (-1, 1):
        ex = cx + side * int(9 * s)
        cv2.circle(img, (ex, eye_y), max(1, int(3 * s)), dark, -1)
        _brow(img, expression, ex, eye_y, side, s, dark)
    _mouth(img, expression, cx, cy + int(12 * s), s, dark)
    return img


def _brow(img: np.ndarray, expression: str, ex: int, ey: int, side: int, s: float,
          color: tuple[int, int, int]) -> None:
    """Draw one eyebrow above the eye at (ex, ey); ``side`` is -1 (left) or +1 (right)."""
    half = int(5 * s)
    base = ey - int(6 * s)
    inner, outer = base, base
    if expression == "anger":
        inner, outer = base + int(3 * s), base - int(2 * s)
    elif expression == "sadness":
        inner, outer = base - int(3 * s), base + int(2 * s)
    elif expression in ("surprise", "fear"):
        inner = outer = base - int(4 * s)
    thick = max(1, int(2 * s))
    cv2.line(img, (ex - side * half, inner), (ex + side * half, outer), color, thick)


def _mouth(img: np.ndarray, expression: str, mx: int, my: int, s: float,
           color: tuple[int, int, int]) -> None:
    """Draw the mouth centred at (mx, my)."""
    w = int(10 * s)
    thick = max(1, int(2 * s))
    if expression == "joy":
        cv2.ellipse(img, (mx, my - int(2 * s)), (w, int(6 * s)), 0, 10, 170, color, thick)
    elif expression in ("sadness", "anger"):
        cv2.ellipse(img, (mx, my + int(5 * s)), (w, int(5 * s)), 0, 190, 350, color, thick)
    elif expression in ("surprise", "fear"):
        cv2.ellipse(img, (mx, my), (int(5 * s), int(7 * s)), 0, 0, 360, color, -1)
    elif expression == "disgust":
        pts = np.array([[mx - w + i * w // 2, my + (int(2 * s) if i % 2 else -int(2 * s))]
                        for i in range(5)], dtype=np.int32)
        cv2.polylines(img, [pts], False, color, thick)
    else:
        cv2.line(img, (mx - w, my), (mx + w, my), color, thick)
