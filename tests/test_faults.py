"""Fault injection: every bad option, non-finite numbers in training and in caches, bad manifest
values, missing media, read-only folders, a full disk and corrupt run files end in one
``erc: error:`` line (exit 2 for a user mistake, 1 for a failing disk), never a traceback, and
leave nothing behind (no run folder, no cache, no ``done``)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.cli_utils import Result, assert_one_line_error, run_erc_here
from tests.fixtures_media import MINI_MELD, write_meld_csv
from tests.synth_cache import write_synthetic_cache

TRAIN = ("train-head", "--model", "gru", "--modalities", "t", "--quiet", "--seeds", "1", "--epochs", "2",
         "--batch-size", "4", "--threads", "1", "--device", "cpu")
HEADER = "dialogue_id,utterance_id,turn,speaker,text,label,split"
GOOD = ["d1,u1,0,A,hello there,joy,train", "d1,u2,1,B,oh no,anger,train", "d2,u3,0,A,fine,joy,dev",
        "d3,u4,0,B,bad,anger,test"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("faults") / "c.h5", n_dialogues=12, lengths=(3, 5), seed=3)


@pytest.fixture(scope="module")
def finished_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("run")
    res = run_erc_here(*TRAIN, "--features", str(cache), "--out", str(where / "gru"), cwd=where)
    assert res.code == 0, res.err
    return where / "gru" / "seed0"


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def user_error(res: Result, *needles: str, code: int = 2) -> None:
    assert res.code == code, res.out + res.err
    assert_one_line_error(res, *needles)


# ---- every option checked where it is declared, before any work -------------------------------
BAD_TRAIN_OPTIONS = [
    (["--batch-size", "-3"], "--batch-size"), (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--lr", "-1"], "--lr"), (["--lr", "0"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--patience", "-1"], "--patience"), (["--threads", "0"], "--threads"), (["--max-frames", "0"], "--max-frames"),
    (["--device", "tpu"], "--device"), (["--precision", "fp8"], "--precision"), (["--seeds", "0"], "--seeds"),
    (["--folds", "0"], "--folds"), (["--folds", "2"], "--folds"), (["--folds", "3", "--fold-grouping", "x"], "grouping"),
    (["--set", "hidden=-5"], "hidden"), (["--set", "hidden=0"], "hidden"), (["--set", "hidden=abc"], "hidden"),
    (["--set", "dropout=1.5"], "dropout"), (["--set", "dropout=1"], "dropout"), (["--set", "dropout=-0.1"], "dropout"),
    (["--set", "dropout=nan"], "dropout"), (["--set", "layers=0"], "layers"), (["--set", "max_speakers=0"], "max_speakers"),
    (["--batch-size", "abc"], "--batch-size"), (["--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize("args,needle", BAD_TRAIN_OPTIONS, ids=[" ".join(a) for a, _ in BAD_TRAIN_OPTIONS])
def test_a_bad_train_option_is_one_line_before_any_work(cache, tmp_path, args, needle):
    res = run_erc_here(*TRAIN, "--features", str(cache), "--out", str(tmp_path / "run"), *args, cwd=tmp_path)
    user_error(res, needle)
    assert files(tmp_path) == set()


@pytest.mark.parametrize("args,needle", [(["--seeds", "0"], "--seeds"), (["--lr", "-1"], "--lr"),
                                         (["--set", "dropout=2"], "dropout")])
def test_a_bad_ablate_option_is_one_line_before_any_work(cache, tmp_path, args, needle):
    res = run_erc_here("ablate", "--model", "gru", "--features", str(cache), "--modalities", "t", "--quiet",
                       "--out", str(tmp_path / "abl"), *args, cwd=tmp_path)
    user_error(res, needle)
    assert files(tmp_path) == set()


def test_head_settings_the_layers_refuse_together_fail_before_any_run_folder(cache, tmp_path):
    res = run_erc_here("train-head", "--model", "matav", "--features", str(cache), "--modalities", "t,a", "--quiet",
                       "--set", "dim=30", "--set", "fusion_heads=4", "--out", str(tmp_path / "run"), cwd=tmp_path)
    user_error(res, "dim=30", "fusion_heads=4")
    assert files(tmp_path) == set()


BAD_EXTRACT_OPTIONS = [
    (["--set", "video.frames=0"], "frames"), (["--set", "video.frames=-2"], "frames"),
    (["--set", "video.size=0"], "size"), (["--set", "text.max_length=0"], "max_length"),
    (["--set", "text.context=-1"], "context"), (["--set", "text.batch_size=0"], "batch_size"),
    (["--set", "audio.n_mels=0"], "n_mels"), (["--set", "audio.hop_ms=nan"], "hop_ms"),
    (["--set", "audio.max_seconds=-1"], "max_seconds"), (["--device", "tpu"], "--device"),
    (["--workers", "0"], "--workers"), (["--set", "dataset.labels=a,a"], "twice"),
]


@pytest.mark.parametrize("args,needle", BAD_EXTRACT_OPTIONS, ids=[" ".join(a) for a, _ in BAD_EXTRACT_OPTIONS])
def test_a_bad_extract_option_is_one_line_before_any_work(tmp_path, args, needle):
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([HEADER, *GOOD]) + "\n")
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--quiet", *args, cwd=tmp_path)
    user_error(res, needle)
    assert files(tmp_path) == {"m.csv"}


# ---- non-finite numbers -----------------------------------------------------------------------
def test_a_diverging_run_stops_naming_epoch_and_step_and_is_never_a_result(cache, tmp_path):
    res = run_erc_here(*TRAIN, "--features", str(cache), "--lr", "1e30", "--out", str(tmp_path / "run"), cwd=tmp_path)
    user_error(res, "diverged", "epoch", "step")
    run = tmp_path / "run" / "seed0"
    assert (run / "failed").exists() and not (run / "done").exists() and not (run / "metrics.json").exists()
    assert not [f for f in files(tmp_path) if ".tmp" in f]
    user_error(run_erc_here("report", str(tmp_path / "run"), cwd=tmp_path), "no finished runs")


def test_nan_rows_in_a_cache_are_refused_naming_them(cache, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(cache, bad)
    with h5py.File(bad, "r+") as f:
        pooled = f["features/text/syn-text/pooled"]
        pooled[2, 0], pooled[5, 3] = np.nan, np.inf
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["utterances/utterance_id"][[2, 5]]]
    res = run_erc_here(*TRAIN, "--features", str(bad), "--out", str(tmp_path / "run"), cwd=tmp_path)
    user_error(res, "NaN or Inf", "2 utterance", *ids)
    assert files(tmp_path) == {"bad.h5"}


# ---- manifests: every value checked on load, with the row named --------------------------------
def _manifest(tmp_path: Path, body: bytes, suffix: str) -> Path:
    path = tmp_path / f"m{suffix}"
    path.write_bytes(body)
    return path


def _jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def _row(**kw) -> dict:
    return {"dialogue_id": "d1", "utterance_id": "u1", "turn": 0, "speaker": "A", "text": "hi", "label": "joy",
            "split": "train", **kw}


BAD_MANIFESTS = {
    "csv not utf-8": ((HEADER + "\n" + GOOD[0] + "\nd1,u2,1,B,caf\xe9,anger,train\n").encode("latin-1"), ".csv",
                      ("line 3", "not UTF-8")),
    "csv turn nan": ((HEADER + "\nd1,u1,nan,A,hi,joy,train\n").encode(), ".csv", ("row 1", "turn")),
    "csv turn inf": ((HEADER + "\nd1,u1,inf,A,hi,joy,train\n").encode(), ".csv", ("row 1", "turn")),
    "csv turn 1e300": ((HEADER + "\nd1,u1,1e300,A,hi,joy,train\n").encode(), ".csv", ("row 1", "turn")),
    "csv turn 1.5": ((HEADER + "\nd1,u1,1.5,A,hi,joy,train\n").encode(), ".csv", ("row 1", "turn")),
    "csv turn -1": ((HEADER + "\nd1,u1,-1,A,hi,joy,train\n").encode(), ".csv", ("row 1", "turn")),
    "csv NUL in text": ((HEADER + "\nd1,u1,0,A,h\x00i,joy,train\n").encode(), ".csv", ("row 1", "NUL", "text")),
    "csv extra value": ((HEADER + "\nd1,u1,0,A,hi,joy,train,oops\n").encode(), ".csv", ("row 1", "more values")),
    "csv start nan": ((HEADER + ",start,end\nd1,u1,0,A,hi,joy,train,nan,2\n").encode(), ".csv", ("row 1", "start")),
    "csv end before start": ((HEADER + ",start,end\nd1,u1,0,A,hi,joy,train,3,2\n").encode(), ".csv",
                             ("row 1", "not after start")),
    "csv start negative": ((HEADER + ",start,end\nd1,u1,0,A,hi,joy,train,-2,2\n").encode(), ".csv", ("row 1", "start")),
    "jsonl not utf-8": (_jsonl([_row()]) + b"\n" + _jsonl([_row(utterance_id="u2")]).replace(b"hi", b"h\xffi"),
                        ".jsonl", ("line 2", "not UTF-8")),
    "jsonl text is a list": (_jsonl([_row(text=["a", "b"])]), ".jsonl", ("row 1", "text is a list")),
    "jsonl speaker is an object": (_jsonl([_row(speaker={"name": "A"})]), ".jsonl", ("row 1", "speaker is an object")),
    "jsonl turn NaN": (_jsonl([_row(turn=float("nan"))]), ".jsonl", ("row 1", "turn")),
    "jsonl turn Infinity": (_jsonl([_row(turn=float("inf"))]), ".jsonl", ("row 1", "turn")),
    "jsonl NUL in text": (_jsonl([_row(text="a\x00b")]), ".jsonl", ("row 1", "NUL")),
}


@pytest.mark.parametrize("name", list(BAD_MANIFESTS))
def test_a_bad_manifest_value_is_one_line_naming_the_row(tmp_path, name):
    body, suffix, needles = BAD_MANIFESTS[name]
    path = _manifest(tmp_path, body, suffix)
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(path), "--text", "minilm", "--audio", "none",
                       "--video", "none", "--quiet", cwd=tmp_path)
    user_error(res, *needles)
    assert files(tmp_path) == {path.name}


# a manifest with nothing doubtful: 5 train utterances of each label, a dev and a test dialogue
CLEAN = [f"t{i},t{i}u{j},{j},{'AB'[j]},line {j} of {i},{('joy', 'anger')[(i + j) % 2]},train"
         for i in range(5) for j in range(2)] + ["v1,v1u0,0,A,fine,joy,dev", "s1,s1u0,0,B,bad,anger,test"]
DOUBTFUL = {
    "empty text": (["x1,x1u0,0,A,,joy,train"], "empty text"),
    "labels differing in case": ([f"x{k},x{k}u0,0,A,hi,Joy,train" for k in range(5)], "differ only in case"),
    "label only in test": (["s1,s1u1,1,A,hm,fear,test"], "never appear in train"),
    "dialogue in two splits": (["t0,t0u9,9,B,hm,joy,test"], "more than one split"),
    "rare label": (["x1,x1u0,0,A,hm,fear,train"], "fewer than 5 train utterances"),
}


@pytest.mark.parametrize("name", list(DOUBTFUL))
def test_doubtful_manifest_values_warn_and_strict_refuses_them(tmp_path, name):
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.preflight import preflight

    rows, needle = DOUBTFUL[name]
    path = tmp_path / "m.csv"
    path.write_text("\n".join([HEADER, *CLEAN, *rows]) + "\n")
    warnings = preflight(load_manifest(path, {}), ["text"])
    assert len(warnings) == 1 and needle in warnings[0] and "\n" not in warnings[0], warnings
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(path), "--text", "minilm", "--audio", "none",
                       "--video", "none", "--strict", "--quiet", cwd=tmp_path)
    user_error(res, "--strict", needle)
    assert files(tmp_path) == {"m.csv"}


def test_a_clean_manifest_has_no_warnings(tmp_path):
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.preflight import preflight

    path = tmp_path / "m.csv"
    path.write_text("\n".join([HEADER, *CLEAN]) + "\n")
    assert preflight(load_manifest(path, {}), ["text"]) == []


# ---- media missing for a whole modality --------------------------------------------------------
def test_a_modality_without_media_stops_before_encoding(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\n".join([HEADER, *GOOD]) + "\n")
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(path), "--text", "minilm", "--audio", "mel",
                       "--video", "none", "--quiet", cwd=tmp_path)
    user_error(res, "audio media are missing for 4 of 4", "--audio none", "--allow-missing-media")
    assert files(tmp_path) == {"m.csv"}


def _meld_csvs(root: Path) -> Path:
    root.mkdir(parents=True)
    for split, dialogues in MINI_MELD.items():
        write_meld_csv(root / f"{split}_sent_emo.csv", dialogues)
    return root


def test_meld_without_clip_folders_names_the_folders_searched_and_a_packed_archive(tmp_path):
    root = _meld_csvs(tmp_path / "MELD.Raw")
    args = ("extract", "--dataset", "meld", "--root", str(root), "--text", "none", "--audio", "mel", "--video", "none",
            "--quiet", "--out", str(tmp_path / "meld.h5"))
    user_error(run_erc_here(*args, cwd=tmp_path), "audio media are missing for 9 of 9", "train_splits")
    (root / "train.tar.gz").write_bytes(b"\x1f\x8b")
    user_error(run_erc_here(*args, cwd=tmp_path), "train.tar.gz (an archive: unpack it)")
    assert not (tmp_path / "meld.h5").exists()
    res = run_erc_here(*args, "--allow-missing-media", cwd=tmp_path)
    assert res.code == 0, res.err
    assert "Traceback" not in res.err and "--allow-missing-media" in res.err


# ---- output folders and run files ---------------------------------------------------------------
@pytest.fixture()
def lock(request: pytest.FixtureRequest):
    """Make a folder erc cannot write in, for real: chmod for a normal user; for root (whom chmod
    does not stop) the immutable attribute (chattr +i); skipped where neither works."""
    def make(folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            request.addfinalizer(lambda: folder.chmod(0o755))
        elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(folder)], capture_output=True))
        else:
            pytest.skip("root without chattr: no way to make a folder read-only here")
        return folder
    return make


def test_a_read_only_run_folder_is_one_line_before_training(cache, lock, tmp_path):
    folder = lock(tmp_path / "ro")
    res = run_erc_here(*TRAIN, "--features", str(cache), "--out", str(folder / "run"), cwd=tmp_path)
    user_error(res, "--out", "cannot write")
    assert files(folder) == set()


def test_a_read_only_report_folder_is_one_line(finished_run, lock, tmp_path):
    shutil.copytree(finished_run.parent, tmp_path / "ro" / "gru")
    res = run_erc_here("report", str(lock(tmp_path / "ro")), cwd=tmp_path)
    user_error(res, "report folder", "cannot write")


def test_predict_into_a_missing_folder_fails_before_extracting(finished_run, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([HEADER, *GOOD]) + "\n")
    res = run_erc_here("predict", "--run", str(finished_run), "--dataset", "manifest", "--root", str(manifest),
                       "--out", str(tmp_path / "nowhere" / "p.csv"), cwd=tmp_path)
    user_error(res, "nowhere", "does not exist")
    assert not (finished_run / "predict").exists() and files(tmp_path) == {"m.csv"}


@pytest.mark.parametrize("args,needle", [(["--device", "tpu"], "--device"), ([], "encoder class")])
def test_predict_refusing_its_input_leaves_no_predict_folder(finished_run, tmp_path, args, needle):
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([HEADER, *GOOD]) + "\n")
    res = run_erc_here("predict", "--run", str(finished_run), "--dataset", "manifest", "--root", str(manifest), *args,
                       cwd=tmp_path)
    user_error(res, needle)  # the synthetic cache records no encoder class: nothing to extract with
    assert not (finished_run / "predict").exists()


def test_predict_with_a_read_only_run_folder_fails_before_extracting(finished_run, lock, tmp_path):
    run = tmp_path / "seed0"
    shutil.copytree(finished_run, run)
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([HEADER, *GOOD]) + "\n")
    res = run_erc_here("predict", "--run", str(lock(run)), "--dataset", "manifest", "--root", str(manifest),
                       cwd=tmp_path)
    user_error(res, "--run", "cannot write")
    assert not (run / "predict").exists()


def test_a_corrupt_metrics_json_is_one_line_under_report(finished_run, tmp_path):
    shutil.copytree(finished_run.parent, tmp_path / "runs" / "gru")
    (tmp_path / "runs" / "gru" / "seed0" / "metrics.json").write_text('{"best_epoch": 1, "dev": {')
    user_error(run_erc_here("report", str(tmp_path / "runs"), cwd=tmp_path), "metrics.json", "cannot be read")


@pytest.mark.parametrize("split,key,value,why", [
    ("test", "weighted_f1", 15, "test weighted_f1 is 15, outside [0, 1]"),
    ("test", "weighted_f1", "0.71", "test weighted_f1 is '0.71', not a number"),
    ("dev", "accuracy", "high", "dev accuracy is 'high', not a number"),
    ("test", "weighted_f1", True, "test weighted_f1 is True, not a number"),
])
def test_a_metrics_json_with_a_wrong_score_is_not_a_result_with_the_reason(finished_run, tmp_path, split, key,
                                                                          value, why):
    runs = tmp_path / "runs"
    for name in ("good", "edited"):
        shutil.copytree(finished_run, runs / name)
    path = runs / "edited" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics[split][key] = value
    path.write_text(json.dumps(metrics))
    res = run_erc_here("report", str(runs), cwd=tmp_path)
    assert res.code == 0 and "Traceback" not in res.err, res.err
    report = (runs / "report.md").read_text()
    assert "1 runs." in report and f"`{runs / 'edited'}`: metrics.json: {why}" in report, report
    assert "1500" not in report and "1500" not in (runs / "report.csv").read_text()


def test_report_leaves_out_unfinished_and_diverged_runs(finished_run, tmp_path):
    runs = tmp_path / "runs"
    for name in ("good", "unfinished", "diverged"):
        shutil.copytree(finished_run, runs / name)
    (runs / "unfinished" / "done").unlink()
    epochs = runs / "diverged" / "epochs.csv"
    epochs.write_text(epochs.read_text().replace(epochs.read_text().splitlines()[-1].split(",")[1], "nan", 1))
    res = run_erc_here("report", str(runs), cwd=tmp_path)
    assert res.code == 0, res.err
    assert "not reported" in res.err and "unfinished" in res.err and "non-finite training loss" in res.err
    report = (runs / "report.md").read_text()
    assert "1 runs." in report and "Not reported (2 run folders)" in report


def test_a_full_disk_mid_run_is_one_line_with_exit_1(cache, tmp_path, monkeypatch):
    import erc.train.runs as runs

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "write_atomic", full)
    res = run_erc_here(*TRAIN, "--features", str(cache), "--out", str(tmp_path / "run"), cwd=tmp_path)
    user_error(res, "No space left on device", code=1)


# ---- library level: the same guards for Python users --------------------------------------------
class _NaNAfter:
    """Wraps a head's forward: logits become NaN from the ``n``-th training call on."""

    def __init__(self, n: int, grad: bool = False) -> None:
        self.n, self.grad, self.calls = n, grad, 0

    def __call__(self, forward):
        import torch

        def wrapped(head, batch):
            out = forward(head, batch)
            if torch.is_grad_enabled():
                self.calls += 1
                if self.calls >= self.n:
                    if self.grad:  # finite loss, non-finite gradient: d sqrt(x)/dx at 0
                        out.logits = out.logits + 0.0 * torch.sqrt(out.logits.sum() * 0.0)
                    else:
                        out.logits = out.logits * float("nan")
            return out
        return wrapped


@pytest.mark.parametrize("grad,what", [(False, "loss"), (True, "gradient")])
def test_train_run_stops_at_the_first_non_finite_step_and_writes_failed(cache, tmp_path, monkeypatch, grad, what):
    from erc.heads.registry import resolve_head
    from erc.train.finite import Diverged
    from erc.train.config import TrainConfig
    from erc.train.loop import load_data, train_run
    from tests.synth_cache import TinyHead

    spec = resolve_head(TinyHead)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, patience=0, device="cpu", num_threads=1, quiet=True)
    data = load_data(cache, spec, ["t"], cfg)
    steps = -(-len(data.dataset("train")) // 4)
    hook = _NaNAfter(steps + 2, grad)
    monkeypatch.setattr(TinyHead, "forward", hook(TinyHead.forward))
    with pytest.raises(Diverged, match=f"non-finite {what} .* at epoch 2, step 2 of {steps}") as err:
        train_run(data, spec, cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert (tmp_path / "run" / "failed").read_text().startswith("training diverged")
    assert not (tmp_path / "run" / "done").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_non_finite_frames_are_refused_naming_the_utterance(tmp_path):
    from erc.errors import UserError
    from erc.train.dialogues import DialogueData

    path = write_synthetic_cache(tmp_path / "f.h5", n_dialogues=6, lengths=(2, 3), frames={"audio": 4}, seed=1)
    with h5py.File(path, "r+") as f:
        offsets = f["features/audio/syn-audio/offsets"][:]
        f["features/audio/syn-audio/frames"][offsets[3] + 1, 2] = np.nan  # a frame of utterance 3
        uid = f["utterances/utterance_id"][3]
        uid = uid.decode() if isinstance(uid, bytes) else uid
    DialogueData(path, ["a"])  # pooled only: fine
    with pytest.raises(UserError, match=f"frames holds NaN or Inf in 1 utterance\\(s\\) \\({uid}\\)"):
        DialogueData(path, ["a"], frames=["a"])


def test_config_values_are_checked_on_construction_and_override():
    from erc.config import BadValue, apply_overrides
    from erc.heads.deepmsi import DeepMSIConfig
    from erc.heads.matav import MaTAVConfig
    from erc.train.config import TrainConfig

    with pytest.raises(BadValue, match="dim must be >= 1; got 0"):
        MaTAVConfig(dim=0)
    with pytest.raises(BadValue, match="momentum must be in \\[0, 1\\]; got 1.5"):
        MaTAVConfig(momentum=1.5)
    with pytest.raises(BadValue, match="deepmsi config tcn_dilations must be >= 1; got 0"):
        apply_overrides(DeepMSIConfig(), {"tcn_dilations": "1,0"}, what="deepmsi config")
    with pytest.raises(BadValue, match="vsc must be one of tokens, frames, none; got 'tokenz'"):
        DeepMSIConfig(vsc="tokenz")  # a Literal field built in code, not through --set
    with pytest.raises(BadValue, match="--max-frames must be >= 1; got 0"):
        TrainConfig(max_frames=0)
    with pytest.raises(BadValue, match="train option dev_fraction must be in \\(0, 1\\); got 1.0"):
        TrainConfig(dev_fraction=1.0)
    assert TrainConfig(max_frames=None, num_threads=2).num_threads == 2


def test_a_segment_outside_its_file_warns_and_a_video_segment_past_the_end_fails(tmp_path):
    from erc.errors import MediaError
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.media import load_video_frames
    from erc.extract.preflight import preflight
    from tests.media_utils import tone, write_mp4, write_wav

    write_wav(tmp_path / "a.wav", tone(1.0))
    write_mp4(tmp_path / "v.mp4", np.zeros((8, 32, 32, 3), np.uint8), 8)
    rows = [HEADER + ",audio,start,end", *(r + ",a.wav,0.2,0.8" for r in CLEAN[:-2]),
            "v1,u2,0,B,yo,anger,dev,a.wav,5,6", "s1,u3,0,A,ok,joy,test,a.wav,0.5,3.5"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    warnings = preflight(load_manifest(tmp_path / "m.csv", {}), ["audio"])
    assert len(warnings) == 1 and warnings[0].startswith("2 utterance(s) have audio segments outside"), warnings
    assert "u2 (5-6 s of a 1.0 s file)" in warnings[0] and "u3" in warnings[0]
    with pytest.raises(MediaError, match="starts after the end"):
        load_video_frames(tmp_path / "v.mp4", 3, start=4.0, end=5.0)
    assert len(load_video_frames(tmp_path / "v.mp4", 3, start=0.2, end=0.9)) == 3
