"""Decode one utterance's audio or video segment.

``soundfile`` reads wav / flac (seeking to the segment); PyAV (``av``) decodes everything else
(mp4, avi, ...). Every function opens its own file handle, so they are safe to call from worker
threads. A missing path raises :class:`~erc.errors.MediaMissing`; an unreadable file, a missing
stream or an empty segment raises :class:`~erc.errors.MediaError`.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterator, TypeVar

import av
import numpy as np
import soundfile as sf

from erc.errors import MediaError, MediaMissing

SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aif", ".aiff"}


def _check_path(path: str | os.PathLike | None, kind: str) -> str:
    if path is None or str(path) == "":
        raise MediaMissing(f"no {kind} path")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaMissing(f"file not found: {path}")
    return path


def _fail(path: str, reason: object) -> MediaError:
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return MediaError(f"cannot decode {path}: {text}")


T = TypeVar("T")


def _decoded(path: str, decode: Callable[[], T]) -> T:
    """``decode()``, with any failure other than a :class:`MediaError` turned into one naming ``path``."""
    try:
        return decode()
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's own error, named once
        raise _fail(path, exc) from exc


def _check_segment(start: float | None, end: float | None) -> tuple[float, float | None]:
    s = max(0.0, float(start or 0.0))
    if end is not None and end <= s:
        raise MediaError(f"empty segment [{start}, {end}]")
    return s, end


# ---------------------------------------------------------------------------------------- audio


def load_audio(path: str | os.PathLike | None, start: float | None = None, end: float | None = None,
               sr: int = 16000) -> np.ndarray:
    """Mono float32 waveform ``[S]`` at ``sr`` Hz of ``path`` between ``start`` and ``end``
    seconds (None: from the beginning / to the end)."""
    path = _check_path(path, "audio")
    s, e = _check_segment(start, end)
    wav: np.ndarray | None = None
    if os.path.splitext(path)[1].lower() in SOUNDFILE_EXTS:
        try:
            wav = _audio_soundfile(path, s, e, sr)
        except MediaError:
            raise
        except Exception:  # noqa: BLE001 - e.g. a codec libsndfile lacks: let PyAV try
            wav = None
    if wav is None:
        wav = _decoded(path, lambda: _audio_av(path, s, e, sr))
    if wav.size == 0:
        raise MediaError(f"cannot decode {path}: empty audio segment [{start}, {end}]")
    return np.ascontiguousarray(wav, dtype=np.float32)


def _audio_soundfile(path: str, start: float, end: float | None, sr: int) -> np.ndarray:
    with sf.SoundFile(path) as f:
        rate = f.samplerate
        first = int(round(start * rate))
        if first >= f.frames:
            return np.zeros(0, np.float32)
        if first:
            f.seek(first)
        count = -1 if end is None else max(0, int(round(end * rate)) - first)
        data = f.read(count, dtype="float32", always_2d=True)
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return _resample(wav, rate, sr)


def _resample(wav: np.ndarray, rate: int, sr: int) -> np.ndarray:
    """``wav`` ``[S]`` at ``rate`` -> ``[ceil(S * sr / rate)]`` at ``sr``: scipy's polyphase FIR
    (Kaiser window, anti-aliased)."""
    if rate == sr or wav.size == 0:
        return wav
    from scipy.signal import resample_poly

    g = math.gcd(rate, sr)
    return resample_poly(wav, sr // g, rate // g).astype(np.float32, copy=False)


def _audio_av(path: str, start: float, end: float | None, sr: int) -> np.ndarray:
    with av.open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"cannot decode {path}: no audio stream")
        stream = container.streams.audio[0]
        if start > 1.0:
            container.seek(int(max(0.0, start - 0.5) * av.time_base))  # container time base
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []
        t0: float | None = None
        for frame in container.decode(stream):
            if t0 is None:
                t0 = float(frame.time) if frame.time is not None else 0.0
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
            if end is not None and frame.time is not None and frame.time > end:
                break
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, np.float32)
    wav = np.concatenate(chunks)
    offset = start - (t0 or 0.0)
    first = max(0, int(round(offset * sr)))
    last = wav.size if end is None else max(first, int(round((end - (t0 or 0.0)) * sr)))
    return wav[first:last]


# ---------------------------------------------------------------------------------------- video


def load_video_frames(path: str | os.PathLike | None, n: int, start: float | None = None,
                      end: float | None = None, region: str | None = None) -> np.ndarray:
    """``n`` RGB frames ``[n', H, W, 3]`` uint8 at evenly spaced times in ``[start, end]`` (the
    whole clip when None), each the decoded frame nearest its target time. ``n' < n`` only when
    the segment holds fewer distinct frames. ``region`` "left"/"right" keeps that half of the width.
    """
    path = _check_path(path, "video")
    s, e = _check_segment(start, end)
    if n < 1:
        raise ValueError("n must be >= 1")
    frames = _decoded(path, lambda: _video_av(path, n, s, e))
    if not frames:
        raise MediaError(f"cannot decode {path}: no video frames in segment [{start}, {end}]")
    out = np.stack(frames)
    if region is not None:
        w = out.shape[2] // 2
        if region == "left":
            out = out[:, :, :w]
        elif region == "right":
            out = out[:, :, w:]
        else:
            raise ValueError(f"region must be 'left', 'right' or None, got {region!r}")
    return np.ascontiguousarray(out)


def _timed_frames(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with the centre of their display interval (pts + half a frame), so that a
    target time picks the frame on screen at that moment."""
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    half = 0.5 / rate
    for i, frame in enumerate(container.decode(stream)):
        yield (float(frame.time) if frame.time is not None else i / rate) + half, frame


def _video_av(path: str, n: int, start: float, end: float | None) -> list[np.ndarray]:
    with av.open(path) as container:
        if not container.streams.video:
            raise MediaError(f"cannot decode {path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        total = _stream_duration(container, stream)
        if total is not None and start >= total:  # else the last frame would pass for the segment
            raise MediaError(f"segment [{start}, {end}] starts after the end of {path} ({total:.2f} s)")
        if end is None:
            end = total
        if end is None:  # unknown length: decode everything, then pick
            timed = [(t, f.to_ndarray(format="rgb24")) for t, f in _timed_frames(container, stream)
                     if t >= base + start]
            if not timed:
                return []
            times = np.array([t for t, _ in timed])
            targets = np.linspace(times[0], times[-1], n)
            idx = np.abs(times[None, :] - targets[:, None]).argmin(axis=1)
            return [timed[i][1] for i in sorted(set(idx.tolist()))]
        step = (end - start) / n
        targets = [base + start + (i + 0.5) * step for i in range(n)]
        if start > 0.5:
            container.seek(int((base + start) / stream.time_base), stream=stream, backward=True)
        return _pick_nearest(_timed_frames(container, stream), targets)


def _pick_nearest(timed: Iterator[tuple[float, av.VideoFrame]], targets: list[float]) -> list[np.ndarray]:
    """Walk frames in time order; for each target keep the frame nearest to it (each frame once)."""
    chosen: list[np.ndarray] = []
    prev: tuple[float, av.VideoFrame] | None = None
    last_pick: float | None = None
    j = 0

    def take(t: float, frame: av.VideoFrame) -> None:
        nonlocal last_pick
        if last_pick is None or t != last_pick:
            chosen.append(frame.to_ndarray(format="rgb24"))
            last_pick = t

    for t, frame in timed:
        while j < len(targets) and targets[j] <= t:
            if prev is not None and targets[j] - prev[0] < t - targets[j]:
                take(*prev)
            else:
                take(t, frame)
            j += 1
        if j == len(targets):
            break
        prev = (t, frame)
    if j < len(targets) and prev is not None:  # the clip ended before the last targets
        take(*prev)
    return chosen


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


# ------------------------------------------------------------------------------------- duration


def media_duration(path: str | os.PathLike | None, start: float | None = None,
                   end: float | None = None) -> float:
    """Length in seconds of the segment, from ``start``/``end`` when both are given, else from the
    file's header (soundfile.info or container metadata); no decoding."""
    if start is not None and end is not None:
        return max(0.0, end - start)
    path = _check_path(path, "media")
    total: float | None = None
    try:
        if os.path.splitext(path)[1].lower() in SOUNDFILE_EXTS:
            total = float(sf.info(path).duration)
    except Exception:  # noqa: BLE001
        total = None
    if total is None:
        try:
            with av.open(path) as container:
                if container.duration is not None:
                    total = container.duration / av.time_base
                else:
                    streams = [s for s in container.streams if s.duration is not None and s.time_base]
                    total = max((float(s.duration * s.time_base) for s in streams), default=0.0)
        except Exception as exc:  # noqa: BLE001
            raise _fail(path, exc) from exc
    s = start or 0.0
    e = total if end is None else min(end, total)
    return max(0.0, e - s)
