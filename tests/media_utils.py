"""Test helpers: write small real media files (wav with soundfile, mp4 with PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf


def tone(seconds: float, sr: int = 16000, freq: float = 440.0) -> np.ndarray:
    """A float32 sine ``[S]``."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, wav: np.ndarray, sr: int = 16000) -> Path:
    sf.write(str(path), wav, sr)
    return path


def counter_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """``[n, h, w, 3]`` frames (n <= 50) whose left half has grey level ``10 + 4 * i`` and whose
    right half is white, so tests can tell which frame was decoded and which half was cropped."""
    frames = np.full((n, h, w, 3), 250, np.uint8)
    for i in range(n):
        frames[i, :, : w // 2] = 10 + i * 4
    return frames


def frame_index(frames: np.ndarray) -> np.ndarray:
    """Inverse of :func:`counter_frames` on decoded frames ``[T, H, W, 3]``: the index of each."""
    w = frames.shape[2]
    level = frames[:, :, : w // 4].reshape(len(frames), -1).mean(1)
    return np.round((level - 10) / 4).astype(int)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10, audio: np.ndarray | None = None,
              sr: int = 16000) -> Path:
    """Encode ``frames [N, H, W, 3]`` (H, W even) as H.264 (mpeg4 in an .avi, like IEMOCAP) and an
    optional mono ``audio`` as AAC."""
    avi = str(path).endswith(".avi")
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4" if avi else "libx264", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"qscale": "2"} if avi else {"crf": "10", "preset": "ultrafast"}
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=sr)
            as_.layout = "mono"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if as_ is not None and audio is not None:
            step = 1024
            for i in range(0, len(audio), step):
                chunk = audio[i:i + step].astype(np.float32)[None, :]
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate = sr
                af.pts = i
                for pkt in as_.encode(af):
                    out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)
    return path


def face_frame(h: int = 240, w: int = 320, cx: int = 160, cy: int = 120, s: int = 60) -> np.ndarray:
    """An RGB frame ``[h, w, 3]`` with a cartoon frontal face (skin ellipse, eyes, brows, nose,
    mouth) centred at (cx, cy) with half-height ``s``: OpenCV's Haar cascade detects it."""
    import cv2

    img = np.full((h, w, 3), 90, np.uint8)
    cv2.ellipse(img, (cx, cy), (int(s * 0.8), s), 0, 0, 360, (225, 190, 160), -1)
    for dx in (-1, 1):
        cv2.ellipse(img, (cx + dx * int(s * 0.33), cy - int(s * 0.2)), (int(s * 0.16), int(s * 0.09)),
                    0, 0, 360, (40, 30, 30), -1)
        cv2.line(img, (cx + dx * int(s * 0.15), cy - int(s * 0.42)), (cx + dx * int(s * 0.5), cy - int(s * 0.42)),
                 (60, 40, 30), int(s * 0.06) + 1)
    cv2.line(img, (cx, cy - int(s * 0.1)), (cx, cy + int(s * 0.2)), (170, 130, 110), 3)
    cv2.ellipse(img, (cx, cy + int(s * 0.45)), (int(s * 0.3), int(s * 0.1)), 0, 0, 360, (120, 50, 50), -1)
    return cv2.GaussianBlur(img, (5, 5), 0)
