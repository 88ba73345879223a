"""Faults around a cache: a full disk, a read-only folder, two writers, flipped bytes. Each ends
with one `erc: error:` line (or a FAIL line of `erc cache verify`), no traceback, no temporary
file left, and the existing cache unchanged; after a full disk a re-run resumes from the shards."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from erc.extract.datasets import load_dataset
from erc.extract.run import RunConfig, extract
from erc.features.layout import member_files
from erc.features.lock import CacheBusy, CacheLock
from erc.features.reader import CacheCorrupt, FeatureCache
from erc.features.schema import parts_dir
from erc.features.verify import verify_cache
from tests.cli_utils import ROOT, Result, assert_one_line_error
from tests.fake_encoders import FakeAudioEncoder, FakeConfig, fake_corpus

DIM = 8192  # the big group: 32 KiB pooled + 16 KiB a frame per utterance


def _erc(*args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI with the test encoder ``fake`` registered (tests/fake_cli.py)."""
    full = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "tests.fake_cli", *args], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def erc_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The CLI in this process (``erc.cli.main``, with ``fake`` registered): what a user sees."""
    from erc.cli import main
    from erc.extract.encoders import ENCODERS
    from tests.fake_cli import FAKE

    monkeypatch.setitem(ENCODERS, "fake", FAKE)

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def _manifest(tmp: Path) -> Path:
    """The fake corpus (20 utterances, one corrupt and one missing blob) as a manifest."""
    corpus = fake_corpus(tmp)
    rows = ["dialogue_id,utterance_id,turn,speaker,text,label,split,audio"]
    rows += [f"{u.dialogue_id},{u.utterance_id},{u.turn},{u.speaker},{u.text},{u.label},{u.split},{u.audio}"
             for u in corpus.utterances]
    path = tmp / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _extract_args(manifest: Path, out: Path, *sets: str) -> list[str]:
    args = ["extract", "--dataset", "manifest", "--root", str(manifest), "--text", "none", "--audio", "fake",
            "--video", "none", "--out", str(out), "--quiet", "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    return args


def _journal_bytes(manifest: Path) -> int:
    """What the big group's shards hold: per ok utterance, pooled float32 + its frames float16."""
    total = 0
    for line in manifest.read_text().splitlines()[1:]:
        blob = Path(line.split(",")[-1])
        data = blob.read_bytes() if blob.exists() else b"corrupt"
        if not data.startswith(b"corrupt"):
            total += DIM * 4 + (1 + len(data) % 5) * DIM * 2
    return total


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A small tmpfs at ``path`` when this process may mount one (True), else a plain folder."""
    path.mkdir()
    ok = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _snapshot(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in [out, *member_files(out)]}


def _temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("when", ["at_reservation", "inside_hdf5"])
def test_full_disk_stops_with_one_line_keeps_the_cache_and_a_rerun_resumes(tmp_path, erc_main, when):
    """``at_reservation``: the group file's space is claimed before HDF5 writes a byte (the usual
    case). ``inside_hdf5``: the disk fills while HDF5 writes (another process took the space), run
    in a child process, since that is where HDF5 could once crash."""
    manifest = _manifest(tmp_path)
    with _tmpfs(tmp_path / "disk", "8m") as mounted:
        out = tmp_path / "disk" / "c.h5"
        extract(load_dataset("manifest", manifest), [FakeAudioEncoder(FakeConfig())], out, RunConfig(device="cpu"), "x")
        before = _snapshot(out)
        journal = _journal_bytes(manifest)
        big = _extract_args(manifest, out, "audio.name=big", f"audio.dim={DIM}")
        env = {"ERC_TEST_NO_RESERVE": "1"} if when == "inside_hdf5" else {}
        if mounted:  # room for the big group's journal, not for its committed file as well
            filler = tmp_path / "disk" / "filler"
            filler.write_bytes(b"\0" * (shutil.disk_usage(out.parent).free - int(1.5 * journal)))
        else:
            env["ERC_TEST_ENOSPC_AFTER"] = str(journal // 2)
        res = _erc(*big, env=env) if env else erc_main(*big)
        assert_one_line_error(res, "no space left", str(out.parent))
        assert res.code == 2
        assert _temporary_files(tmp_path / "disk") == []
        assert _snapshot(out) == before
        shards = list((parts_dir(out) / "audio__big").glob("b*.shard"))
        assert shards  # the encoding work is kept
        if mounted:
            filler.unlink()
        res = erc_main(*big)
        assert res.code == 0, res.err
        assert f"({len(shards)} batches reused)" in res.err
        with FeatureCache(out) as cache:
            assert verify_cache(cache) == [] and cache.group("audio", "big").dim == DIM
        assert _temporary_files(tmp_path / "disk") == []


def test_read_only_folder_stops_with_one_line_and_leaves_the_cache_as_it_was(tmp_path, erc_main):
    manifest = _manifest(tmp_path)
    with _tmpfs(tmp_path / "ro", "4m") as mounted:
        folder = tmp_path / "ro"
        out = folder / "c.h5"
        extract(load_dataset("manifest", manifest), [FakeAudioEncoder(FakeConfig())], out, RunConfig(device="cpu"), "x")
        before = _snapshot(out)
        if mounted:
            assert subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0
        elif os.geteuid() != 0:
            folder.chmod(0o555)
        else:
            pytest.skip("cannot make a read-only folder here: root ignores permissions and no tmpfs can be mounted")
        try:
            res = erc_main(*_extract_args(manifest, out, "audio.name=other"))
            assert_one_line_error(res, "is not writable", str(out))
            assert _snapshot(out) == before
        finally:
            if not mounted:
                folder.chmod(0o755)


def test_a_second_writer_stops_naming_the_first_ones_pid(tmp_path, erc_main):
    manifest = _manifest(tmp_path)
    out = tmp_path / "c.h5"
    with CacheLock(out):  # flock locks belong to an open file, so this process counts as another writer
        res = erc_main(*_extract_args(manifest, out))
        assert_one_line_error(res, f"{out} is being written by pid {os.getpid()}")
        with pytest.raises(CacheBusy):
            CacheLock(out).acquire()
    assert not out.exists() and not parts_dir(out).exists()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from erc.features.lock import CacheLock; CacheLock(Path(sys.argv[1])).acquire(); "
                               "print('locked', flush=True); time.sleep(60)", str(out)],
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(CacheBusy, match=f"pid {holder.pid}"):
        CacheLock(out).acquire()
    holder.send_signal(signal.SIGKILL)  # the kernel drops a killed holder's lock
    holder.wait()
    with CacheLock(out):
        pass


def _flip(path: Path, offset: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(size))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def test_flipped_bytes_are_named_by_verify_and_stop_train_head(tmp_path, erc_main, monkeypatch):
    import h5py

    corpus = fake_corpus(tmp_path, n_dialogues=30)
    out = tmp_path / "c.h5"
    extract(corpus, [FakeAudioEncoder(FakeConfig(dim=128))], out, RunConfig(device="cpu"), "x")
    member = next(p for p in member_files(out) if p.name.startswith("audio__fake"))
    with h5py.File(member, "r") as h5:
        ds = h5["features/audio/fake/pooled"]
        info = ds.id.get_chunk_info(0)
        assert info.size > 8192
    _flip(member, info.byte_offset + info.size // 2 - 2048, 4096)  # 4 KiB in the middle of the data
    res = erc_main("cache", "verify", str(out))
    assert res.code == 1 and "Traceback" not in res.err
    assert "FAIL audio/fake/pooled: rows 0-119 fail their checksum" in res.out, res.out
    monkeypatch.chdir(tmp_path)
    res = erc_main("train-head", "--model", "gru", "--features", str(out), "--modalities", "a", "--epochs", "1",
                "--seeds", "1", "--out", str(tmp_path / "run"))
    assert_one_line_error(res, f"{out}: audio/fake/pooled cannot be read")
    assert not (tmp_path / "run" / "seed0" / "done").exists()


def test_a_flipped_byte_in_a_string_column_fails_its_crc(tmp_path):
    corpus = fake_corpus(tmp_path)
    out = tmp_path / "c.h5"
    extract(corpus, [FakeAudioEncoder(FakeConfig())], out, RunConfig(device="cpu"), "x")
    member = next(p for p in member_files(out) if p.name.startswith("audio__fake"))
    raw = member.read_bytes()
    at = raw.index(b"missing: file not found")
    _flip(member, at + 3, 1)
    with FeatureCache(out) as cache:
        assert any("audio/fake/status: its strings fail their crc32" in p for p in verify_cache(cache))
        with pytest.raises(CacheCorrupt, match="status fails its checksum"):
            cache.status("audio", "fake")
        np.testing.assert_array_equal(cache.present("audio", "fake")[:2], [False, False])


def test_a_deleted_group_file_stops_train_head_even_with_a_lookalike_in_the_current_folder(tmp_path, erc_main,
                                                                                          monkeypatch):
    corpus = fake_corpus(tmp_path, n_dialogues=30)
    out = tmp_path / "a" / "c.h5"
    extract(corpus, [FakeAudioEncoder(FakeConfig(dim=16))], out, RunConfig(device="cpu"), "x")
    decoy = tmp_path / "cwd"
    decoy.mkdir()
    shutil.copytree(out.with_name("c.h5.groups"), decoy / "c.h5.groups")  # what HDF5 would have found
    next(p for p in member_files(out) if p.name.startswith("audio__fake")).unlink()
    monkeypatch.chdir(decoy)
    res = erc_main("train-head", "--model", "gru", "--features", str(out), "--modalities", "a", "--epochs", "1",
                   "--seeds", "1", "--out", str(tmp_path / "run"))
    assert_one_line_error(res, "audio/fake cannot be read", "missing beside c.h5")
    res = erc_main("cache", "verify", str(out))
    assert res.code == 1 and "FAIL audio/fake: its file" in res.out, res.out
