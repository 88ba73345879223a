"""`erc extract` end to end on miniature real-layout datasets: media paths, failures, kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from erc.features.reader import FeatureCache
from erc.features.schema import parts_dir
from erc.features.verify import verify_cache
from tests.cli_utils import ROOT, run_erc
from tests.fixtures_media import build_mini_iemocap, build_mini_meld


def test_mini_iemocap_gets_audio_and_speaker_half_video_for_every_utterance(tmp_path):
    root = build_mini_iemocap(tmp_path)
    lost = next(root.glob("Session1/sentences/wav/*/*.wav"))
    lost.unlink()  # a missing wav inside the release tree
    out = tmp_path / "iem.h5"
    res = run_erc("extract", "--dataset", "iemocap", "--root", str(root), "--text", "none", "--audio", "mel",
                  "--video", "faces", "--set", "video.frames=3", "--out", str(out), "--quiet", cwd=tmp_path)
    assert res.code == 0, res.err
    with FeatureCache(out) as cache:
        assert verify_cache(cache) == []
        ids = cache.utterances()["utterance_id"]
        audio = dict(zip(ids, cache.status("audio", "mel")))
        assert audio.pop(lost.stem).startswith("missing: file not found")
        assert set(audio.values()) == {"ok"}
        assert cache.present("video", "faces").all(), cache.status("video", "faces")
        assert set(cache.utterances()["split"]) == {"train", "dev", "test"}


def test_mini_meld_records_missing_and_corrupt_clips_and_exits_zero(tmp_path):
    root = build_mini_meld(tmp_path)
    out = tmp_path / "meld.h5"
    res = run_erc("extract", "--dataset", "meld", "--root", str(root), "--text", "minilm", "--audio", "mel",
                  "--video", "faces", "--set", "video.frames=3", "--out", str(out), "--quiet", cwd=tmp_path)
    assert res.code == 0, res.err
    assert "extraction summary" in res.err
    with FeatureCache(out) as cache:
        assert verify_cache(cache) == []
        assert cache.present("text", "minilm").all()
        for modality, encoder in (("audio", "mel"), ("video", "faces")):
            status = cache.status(modality, encoder)
            assert any(s.startswith("missing: file not found") for s in status), status
            assert any(s.startswith("failed:") for s in status), status
            assert sum(s == "ok" for s in status) == len(status) - 2
    info = run_erc("cache", "info", str(out))
    assert info.code == 0 and "minilm" in info.out and "missing" in info.out


def _manifest(path, n: int = 240) -> None:
    rng = np.random.default_rng(0)
    words = "good bad happy sad angry calm fine terrible wonderful okay sure no yes maybe".split()
    rows = ["dialogue_id,utterance_id,turn,speaker,text,label,split"]
    for i in range(n):
        d = i // 8
        text = " ".join(rng.choice(words, size=int(rng.integers(2, 12))))
        rows.append(f"d{d},u{i},{i % 8},{'AB'[i % 2]},{text},{'pos' if i % 3 else 'neg'},"
                    f"{['train', 'train', 'dev', 'test'][d % 4]}")
    path.write_text("\n".join(rows) + "\n")


def _extract_cmd(manifest, out):
    return [sys.executable, "-m", "erc.cli", "extract", "--dataset", "manifest", "--root", str(manifest),
            "--text", "minilm", "--audio", "none", "--video", "none", "--set", "text.batch_size=2",
            "--out", str(out), "--quiet"]


def test_sigkill_mid_extraction_then_resume_equals_an_uninterrupted_run(tmp_path):
    manifest = tmp_path / "m.csv"
    _manifest(manifest)
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    killed = tmp_path / "killed.h5"
    proc = subprocess.Popen(_extract_cmd(manifest, killed), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = parts_dir(killed) / "text__minilm"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shard_dir.glob("b*.shard"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shard_dir.glob("b*.shard")))
    assert 5 <= done_before < 120, "the run was not killed mid-extraction"
    resumed = subprocess.run(_extract_cmd(manifest, killed), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    full = tmp_path / "full.h5"
    clean = subprocess.run(_extract_cmd(manifest, full), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert not parts_dir(killed).exists()
    with h5py.File(killed) as a, h5py.File(full) as b:
        for key in ("pooled", "frames", "offsets", "present", "status"):
            np.testing.assert_array_equal(a[f"features/text/minilm/{key}"][()], b[f"features/text/minilm/{key}"][()])
        for col in ("utterance_id", "label", "split"):
            np.testing.assert_array_equal(a[f"utterances/{col}"][()], b[f"utterances/{col}"][()])
