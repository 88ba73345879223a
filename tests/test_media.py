"""Decoding audio / video segments with soundfile and PyAV on files written in tmp_path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from erc.errors import MediaError, MediaMissing
from erc.extract.media import load_audio, load_video_frames, media_duration
from tests.media_utils import counter_frames, frame_index, tone, write_mp4, write_wav


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s, 10 fps, 64x48 video whose frames encode their index, with a 440 Hz AAC track."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    return write_mp4(path, counter_frames(50), fps=10, audio=tone(5.0))


def test_wav_segment(tmp_path: Path) -> None:
    wav = np.linspace(-1, 1, 48000, dtype=np.float32)  # 3 s ramp at 16 kHz
    path = write_wav(tmp_path / "a.wav", wav)
    full = load_audio(path)
    assert full.dtype == np.float32 and full.shape == (48000,)
    seg = load_audio(path, 1.0, 1.5)
    assert seg.shape == (8000,)
    np.testing.assert_allclose(seg, wav[16000:24000], atol=1e-4)
    assert load_audio(path, 2.5).shape == (8000,)  # to the end
    assert media_duration(path) == pytest.approx(3.0)
    assert media_duration(path, 1.0, 1.25) == pytest.approx(0.25)


def test_wav_stereo_resampled(tmp_path: Path) -> None:
    stereo = np.stack([tone(1.0, sr=8000), tone(1.0, sr=8000)], axis=1)
    path = write_wav(tmp_path / "s.wav", stereo, sr=8000)
    out = load_audio(path, sr=16000)
    assert out.ndim == 1 and abs(out.shape[0] - 16000) <= 2
    assert 0.15 < np.abs(out).max() < 0.4


def test_mp4_audio(clip: Path) -> None:
    full = load_audio(clip)
    assert full.ndim == 1 and abs(len(full) - 80000) < 3000
    seg = load_audio(clip, 1.0, 2.5, sr=8000)
    assert abs(len(seg) - 12000) <= 2
    # a 440 Hz tone survives the AAC round trip: its spectrum peaks at 440 Hz
    spec = np.abs(np.fft.rfft(seg))
    assert abs(np.argmax(spec) * 8000 / len(seg) - 440) < 5
    assert media_duration(clip) == pytest.approx(5.0, abs=0.1)


def test_video_whole_and_segment(clip: Path) -> None:
    frames = load_video_frames(clip, 5)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    idx = frame_index(frames)
    assert np.all(np.diff(idx) > 0) and idx[0] <= 6 and idx[-1] >= 44
    seg = frame_index(load_video_frames(clip, 5, 2.0, 3.0))
    assert list(seg) == [21, 23, 25, 27, 29]
    late = frame_index(load_video_frames(clip, 4, 4.0, 5.0))  # needs a seek
    assert list(late) == [41, 43, 46, 48]


def test_video_fewer_frames_than_asked(clip: Path) -> None:
    frames = load_video_frames(clip, 100, 2.0, 3.0)
    assert list(frame_index(frames)) == list(range(20, 30))


def test_video_region_crop(clip: Path) -> None:
    left = load_video_frames(clip, 3, region="left")
    right = load_video_frames(clip, 3, region="right")
    assert left.shape == (3, 48, 32, 3) and right.shape == (3, 48, 32, 3)
    assert right.mean() > 240 > left.mean()


def test_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(MediaMissing, match="no audio path"):
        load_audio(None)
    with pytest.raises(MediaMissing, match="file not found"):
        load_video_frames(tmp_path / "nope.mp4", 4)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(MediaError, match="cannot decode"):
        load_video_frames(bad, 4)
    with pytest.raises(MediaError, match="cannot decode"):
        load_audio(bad)
    badwav = tmp_path / "bad.wav"
    badwav.write_bytes(b"RIFF garbage" * 10)
    with pytest.raises(MediaError, match="cannot decode"):
        load_audio(badwav)


def test_no_stream_and_empty_segment(tmp_path: Path, clip: Path) -> None:
    silent = write_mp4(tmp_path / "v.mp4", counter_frames(5), fps=5)
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(silent)
    with pytest.raises(MediaError):
        load_audio(clip, 3.0, 3.0)
    with pytest.raises(MediaError):
        load_audio(write_wav(tmp_path / "short.wav", tone(0.5)), 2.0, 3.0)


def test_thread_safe(clip: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        segs = list(pool.map(lambda k: frame_index(load_video_frames(clip, 2, k * 1.0, k + 1.0)), range(5)))
    assert [list(s) for s in segs] == [[2, 7], [12, 17], [22, 27], [32, 37], [42, 47]]


def test_avi_mpeg4(tmp_path: Path) -> None:
    """IEMOCAP-style .avi (mpeg4): seek into a segment, decode its audio track too."""
    path = write_mp4(tmp_path / "clip.avi", counter_frames(50), fps=10, audio=tone(5.0))
    idx = frame_index(load_video_frames(path, 4, 4.0, 5.0))
    assert len(idx) == 4 and np.all(np.diff(idx) > 0) and 38 <= idx[0] and idx[-1] <= 50
    assert abs(len(load_audio(path, 1.0, 2.0)) - 16000) <= 2
    assert media_duration(path) == pytest.approx(5.0, abs=0.2)
