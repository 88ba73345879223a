"""The video frame pipeline shared by the video encoders: sample frames, find the face with
OpenCV's bundled Haar cascade, crop it; plus handcrafted face descriptors (HOG, uniform LBP,
grey-level histogram) for the weight-free encoder."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from erc.errors import MediaMissing
from erc.corpus import Utterance
from erc.extract.media import load_video_frames

_local = threading.local()
DETECT_SIDE = 320  # detect on frames scaled to this longest side


def _cascade() -> cv2.CascadeClassifier:
    """One classifier per thread (detectMultiScale is not safe to share across threads)."""
    clf = getattr(_local, "cascade", None)
    if clf is None:
        clf = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if clf.empty():
            raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml could not be loaded")
        _local.cascade = clf
    return clf


@dataclass
class FaceCrops:
    """``crops [T, size, size, 3]`` uint8 RGB face crops; ``found``: frames with a detected face."""

    crops: np.ndarray
    found: int


def detect_face(frame: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest frontal face in an RGB frame ``[H, W, 3]`` as ``(x, y, w, h)``, or None."""
    h, w = frame.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    min_side = max(12, int(min(grey.shape) * 0.1))
    boxes = _cascade().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side))
    if len(boxes) == 0:
        return None
    x, y, bw, bh = max(boxes, key=lambda b: int(b[2]) * int(b[3]))
    return int(x / scale), int(y / scale), int(bw / scale), int(bh / scale)


def square_box(box: tuple[int, int, int, int] | None, h: int, w: int, expand: float = 1.3) -> tuple[int, int, int, int]:
    """A square ``(x0, y0, x1, y1)`` inside the frame: the face box grown by ``expand``, or the
    centre square when ``box`` is None."""
    if box is None:
        side = min(h, w)
        cx, cy = w / 2, h / 2
    else:
        x, y, bw, bh = box
        side = min(max(bw, bh) * expand, h, w)
        cx, cy = x + bw / 2, y + bh / 2
    half = side / 2
    x0 = int(round(min(max(cx - half, 0), w - side)))
    y0 = int(round(min(max(cy - half, 0), h - side)))
    s = int(round(side))
    return x0, y0, x0 + s, y0 + s


def face_crops(utt: Utterance, n: int, size: int) -> FaceCrops:
    """Sample ``n`` frames of the utterance's video segment and crop the face in each.

    A frame with no detection borrows the box of the nearest frame that has one; with no
    detection at all the centre square is used. -> ``[T, size, size, 3]`` uint8 RGB.
    """
    if utt.video is None:
        raise MediaMissing("no video path")
    frames = load_video_frames(utt.video, n, *utt.segment("video"), utt.video_region)  # [T, H, W, 3]
    t, h, w = frames.shape[:3]
    boxes = [detect_face(f) for f in frames]
    hits = [i for i, b in enumerate(boxes) if b is not None]
    crops = np.empty((t, size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        box = boxes[i]
        if box is None and hits:
            box = boxes[min(hits, key=lambda j: abs(j - i))]
        x0, y0, x1, y1 = square_box(box, h, w)
        crops[i] = cv2.resize(frame[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
    return FaceCrops(crops, len(hits))


def whole_frames(utt: Utterance, n: int, size: int) -> FaceCrops:
    """Sample ``n`` frames of the utterance's video segment, each whole frame (the speaker's half
    where ``video_region`` says so) resized to ``size`` x ``size`` (no face detection: ``found``
    0) -> ``[T, size, size, 3]`` uint8 RGB."""
    if utt.video is None:
        raise MediaMissing("no video path")
    frames = load_video_frames(utt.video, n, *utt.segment("video"), utt.video_region)  # [T, H, W, 3]
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return FaceCrops(out, 0)


# --------------------------------------------------------------------------------- descriptors

def _uniform_lut() -> np.ndarray:
    """Map the 256 8-bit LBP codes to 59 bins: 58 uniform patterns + 1 for the rest."""
    lut = np.full(256, 58, np.int64)
    k = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            lut[code] = k
            k += 1
    return lut


_LUT = _uniform_lut()
LBP_BINS = 59
LBP_GRID = 2
GREY_BINS = 16


def lbp_histograms(grey: np.ndarray, grid: int = LBP_GRID) -> np.ndarray:
    """Uniform LBP (8 neighbours, radius 1) histograms of ``grey [T, S, S]`` on a ``grid x grid``
    layout, each normalised -> ``[T, grid * grid * 59]``."""
    g = grey.astype(np.int16)
    c = g[:, 1:-1, 1:-1]
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    code = np.zeros(c.shape, np.int64)
    s = g.shape[1]
    for bit, (dy, dx) in enumerate(offsets):
        nb = g[:, 1 + dy:s - 1 + dy, 1 + dx:s - 1 + dx]
        code |= (nb >= c).astype(np.int64) << bit
    bins = _LUT[code]  # [T, S-2, S-2]
    t, hh, ww = bins.shape
    cell_y = np.minimum(np.arange(hh) * grid // hh, grid - 1)
    cell_x = np.minimum(np.arange(ww) * grid // ww, grid - 1)
    cell = cell_y[:, None] * grid + cell_x[None, :]  # [S-2, S-2]
    idx = (np.arange(t)[:, None, None] * grid * grid + cell[None]) * LBP_BINS + bins
    hist = np.bincount(idx.ravel(), minlength=t * grid * grid * LBP_BINS).reshape(t, grid * grid, LBP_BINS)
    hist = hist / np.maximum(hist.sum(-1, keepdims=True), 1)
    return hist.reshape(t, -1).astype(np.float32)


def hog_features(grey: np.ndarray) -> np.ndarray:
    """HOG of ``grey [T, S, S]`` (S divisible by 8: 8x8 cells, 2x2-cell blocks, 9 bins) -> ``[T, F]``."""
    s = grey.shape[1]
    cell = s // 8
    hog = cv2.HOGDescriptor((8 * cell, 8 * cell), (2 * cell, 2 * cell), (2 * cell, 2 * cell), (cell, cell), 9)
    return np.stack([hog.compute(np.ascontiguousarray(g[: 8 * cell, : 8 * cell])).reshape(-1) for g in grey])


def face_descriptors(crops: np.ndarray) -> np.ndarray:
    """Per-frame descriptor ``[T, F]`` float32 of RGB crops ``[T, S, S, 3]``: HOG, uniform-LBP
    histograms on a 2x2 grid and a 16-bin grey-level histogram."""
    grey = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in crops])  # [T, S, S]
    grey_hist = np.stack([np.bincount(g.ravel() // (256 // GREY_BINS), minlength=GREY_BINS) for g in grey])
    grey_hist = grey_hist / max(grey.shape[1] * grey.shape[2], 1)
    return np.concatenate([hog_features(grey), lbp_histograms(grey), grey_hist], axis=1).astype(np.float32)


def descriptor_dim(size: int) -> int:
    """Length of :func:`face_descriptors` for crops of side ``size``."""
    return 4 * 4 * 4 * 9 + LBP_GRID * LBP_GRID * LBP_BINS + GREY_BINS
