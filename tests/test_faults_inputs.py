"""Inputs a careless or unlucky user gives erc, each case then what erc now does: media holding
NaN / Inf are stored as failed (never ``ok``), manifests with missing keys, look-alike columns,
unnormalised Unicode or duplicate turns, options outside what the model can take, a symlinked or
non-ASCII ``--out``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from erc.features.reader import FeatureCache
from tests.cli_utils import assert_one_line_error, run_erc_here
from tests.media_utils import tone

HEADER = "dialogue_id,utterance_id,turn,speaker,text,label,split"


def _audio_manifest(tmp: Path, bad: np.ndarray) -> Path:
    """Four utterances with wavs; ``u2``'s samples are ``bad`` (float32, so NaN / Inf survive)."""
    rows = [HEADER + ",audio"]
    for i, split in enumerate(["train", "train", "dev", "test"]):
        wav = bad if i == 2 else tone(0.5, freq=300 + 100 * i)
        sf.write(str(tmp / f"u{i}.wav"), wav.astype(np.float32), 16000, subtype="FLOAT")
        rows.append(f"d{i},u{i},0,A,hello {i},{'ab'[i % 2]},{split},u{i}.wav")
    path = tmp / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_wav_holding_nan_or_inf_is_stored_as_failed_non_finite_input(tmp_path, value):
    wav = tone(0.5)
    wav[100:200] = value
    manifest = _audio_manifest(tmp_path, wav)
    out = tmp_path / "c.h5"
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--text", "none",
                       "--audio", "mel", "--video", "none", "--out", str(out), "--quiet", "--device", "cpu")
    assert res.code == 0, res.out + res.err
    assert "1 x failed: non-finite input  (e.g. u2)" in res.err, res.err  # counted among the failed
    with FeatureCache(out) as cache:
        status = cache.status("audio", "mel")
        assert status[2] == "failed: non-finite input" and status.count("ok") == 3, status
        assert not cache.present("audio", "mel")[2] and np.isfinite(cache.pooled("audio", "mel")).all()
    res = run_erc_here("cache", "verify", str(out))
    assert res.code == 0 and "OK" in res.out, res.out  # nothing stored that training would refuse


def test_an_encoder_output_holding_nan_is_stored_as_failed_non_finite_output(tmp_path):
    from erc.extract.encoders.base import Encoded
    from erc.extract.run import _encode_batch

    class Half:
        def encode(self, items):  # noqa: ANN001, ANN202
            return [Encoded(np.full(3, x, np.float32), np.full((2, 3), x, np.float32)) for x in items]

    status = ["ok", "ok", "missing: x", "ok"]
    out = _encode_batch(Half(), [1.0, np.nan, None, np.inf], status)  # type: ignore[arg-type]
    assert status == ["ok", "failed: non-finite output", "missing: x", "failed: non-finite output"]
    assert out[0] is not None and out[1] is None and out[3] is None


def test_in_memory_extraction_marks_non_finite_input_too(tmp_path):
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.encoders import build_encoder
    from erc.extract.in_memory import encode_group

    wav = tone(0.5)
    wav[5] = np.nan
    corpus = load_manifest(_audio_manifest(tmp_path, wav), {})
    enc = build_encoder("audio", "mel", {})
    enc.load("cpu")
    group = encode_group(corpus, enc, {})
    assert group.status[2] == "failed: non-finite input" and not group.present[2]
    assert np.isfinite(group.pooled).all()


def _extract_audio(manifest: Path, out: Path | str, cwd: Path | None = None):  # noqa: ANN202
    return run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--text", "none",
                        "--audio", "mel", "--video", "none", "--out", str(out), "--quiet", "--device", "cpu", cwd=cwd)


def test_a_symlinked_out_writes_the_cache_at_its_target_and_keeps_the_link(tmp_path):
    manifest = _audio_manifest(tmp_path, tone(0.5))
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "c.h5"
    link = tmp_path / "link.h5"
    link.symlink_to(target)  # dangling first: the cache is created at the target
    assert _extract_audio(manifest, link).code == 0
    assert _extract_audio(manifest, link).code == 0  # then an existing cache through the link
    assert link.is_symlink() and target.is_file() and (tmp_path / "store" / "c.h5.groups").is_dir()
    assert not (tmp_path / "link.h5.groups").exists()
    for path in (link, target):
        res = run_erc_here("cache", "verify", str(path))
        assert res.code == 0 and "OK" in res.out, res.out + res.err


def test_non_ascii_paths_under_a_c_locale_are_written(tmp_path):
    folder = tmp_path / "dónde"
    folder.mkdir()
    manifest = _audio_manifest(folder, tone(0.5))
    manifest.rename(folder / "métro.csv")
    (folder / "u1.wav").unlink()  # its status names the path: "missing: ... dónde/u1.wav"
    def as_c(path: str) -> str:  # how Python decodes an argument under LC_ALL=C: non-ASCII bytes as surrogates
        return path.encode().decode("ascii", "surrogateescape")

    res = run_erc_here("extract", "--dataset", "manifest", "--root", as_c(str(folder / "métro.csv")), "--text", "none",
                       "--audio", "mel", "--video", "none", "--out", as_c("caché.h5"), "--quiet", "--device", "cpu",
                       cwd=tmp_path)
    assert res.code == 0, res.out + res.err
    with FeatureCache(tmp_path / "caché.h5") as cache:
        assert "--out 'caché.h5'" in cache.group("audio", "mel").attrs["command"]
        assert "dónde/u1.wav" in cache.status("audio", "mel")[1]
        assert cache.dataset == "métro"


# ---- manifests ---------------------------------------------------------------------------------
CLEAN = [f"t{i},t{i}u{j},{j},{'AB'[j]},line {j} of {i},{('joy', 'anger')[(i + j) % 2]},train"
         for i in range(5) for j in range(2)] + ["v1,v1u0,0,A,fine,joy,dev", "s1,s1u0,0,B,bad,anger,test"]


def _csv(tmp: Path, header: str, rows: list[str]) -> Path:
    path = tmp / "m.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _extract_text(manifest: Path, *more: str):  # noqa: ANN202
    return run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--text", "minilm",
                        "--audio", "none", "--video", "none", "--quiet", *more, cwd=manifest.parent)


def test_a_jsonl_row_after_the_first_without_a_required_key_is_one_line(tmp_path):
    import json

    rows = [{"dialogue_id": "d1", "utterance_id": "u1", "text": "hi", "label": "joy", "split": "train"},
            {"dialogue_id": "d1", "text": "oh", "label": "joy", "split": "train"}]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert_one_line_error(_extract_text(path), "row 2 lacks required key(s): utterance_id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


@pytest.mark.parametrize("column,want", [("Label", "label"), ("Text", "text"), ("Split", "split"),
                                         ("Utterance ID", "utterance_id")])
def test_a_known_column_in_another_case_is_refused_naming_the_right_one(tmp_path, column, want):
    header = HEADER.replace(want, column)
    res = _extract_text(_csv(tmp_path, header, CLEAN))
    assert_one_line_error(res, f"column {column!r}", f"erc reads {want!r}")


def test_an_unknown_column_is_one_warning_and_strict_refuses_it(tmp_path):
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.preflight import preflight

    path = _csv(tmp_path, HEADER + ",mood,Emotion", [r + ",x,y" for r in CLEAN])
    warnings = preflight(load_manifest(path, {}), ["text"])
    assert len(warnings) == 1 and warnings[0].startswith(
        "2 column(s) of m.csv are not read by erc: mood, Emotion (is it label?)"), warnings
    assert_one_line_error(_extract_text(path, "--strict"), "--strict", "mood")


def test_labels_and_ids_differing_only_in_unicode_normalisation_are_one_value(tmp_path):
    import unicodedata

    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.preflight import preflight

    composed, decomposed = "col\u00e8re", unicodedata.normalize("NFD", "col\u00e8re")
    assert composed != decomposed
    rows = [r.replace("anger", composed if k % 2 else decomposed) for k, r in enumerate(CLEAN)]
    corpus = load_manifest(_csv(tmp_path, HEADER, rows), {})
    assert corpus.labels == sorted(["joy", composed])
    warnings = preflight(corpus, ["text"])
    assert len(warnings) == 1 and "not in Unicode normal form NFC" in warnings[0], warnings
    twins = CLEAN + [f"x1,{unicodedata.normalize('NFD', 'é1')},0,A,a,joy,train", "x1,\u00e91,1,B,b,joy,train"]
    assert_one_line_error(_extract_text(_csv(tmp_path, HEADER, twins)), "duplicate utterance_id", "\u00e91")


def test_duplicate_turns_in_a_dialogue_warn_with_counts_and_strict_refuses_them(tmp_path):
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.preflight import preflight

    rows = CLEAN + ["t0,t0u2,1,A,again,joy,train", "t1,t1u2,0,B,again,anger,train"]
    path = _csv(tmp_path, HEADER, rows)
    warnings = preflight(load_manifest(path, {}), ["text"])
    assert warnings == ["2 dialogue(s) number a turn more than once (kept in file order): "
                        "t0 (turn 1 x2), t1 (turn 0 x2)"], warnings
    assert_one_line_error(_extract_text(path, "--strict"), "--strict", "number a turn more than once")


# ---- settings the model cannot take, models that cannot be loaded ------------------------------
def test_a_text_max_length_beyond_the_models_positions_is_one_line_before_any_work(tmp_path):
    path = _csv(tmp_path, HEADER, CLEAN)
    res = _extract_text(path, "--set", "text.max_length=1000000000")
    assert_one_line_error(res, "text.max_length=1000000000", "512 token positions")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_position_limit_takes_the_smaller_of_positions_and_the_tokenizers_limit():
    from erc.extract.encoders.limits import position_limit

    assert position_limit(514, 512) == 512  # RoBERTa
    assert position_limit(512, 1e30) == 512  # a tokenizer without a limit
    assert position_limit(None, None) is None


@pytest.mark.parametrize("hf_home", ["", "file"])
def test_a_download_that_cannot_happen_is_one_line_naming_the_model(tmp_path, hf_home):
    import os
    import subprocess
    import sys

    from tests.cli_utils import ROOT, Result

    path = _csv(tmp_path, HEADER, CLEAN)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT),
               HF_HOME=str(tmp_path / "m.csv" / "hf") if hf_home else str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-m", "erc.cli", "extract", "--dataset", "manifest", "--root", str(path),
                           "--text", "org-that-is-not/cached-model", "--set", "text.download=true", "--audio", "none",
                           "--video", "none", "--quiet", "--out", str(tmp_path / "o.h5"), "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert_one_line_error(Result(proc.returncode, proc.stdout, proc.stderr),
                          "text encoder 'org-that-is-not/cached-model': the model cannot be loaded",
                          "NotADirectoryError" if hf_home else "OSError")


def test_media_longer_than_the_encoders_max_seconds_warn_with_counts(tmp_path):
    from erc.extract.datasets.manifest import load_manifest
    from erc.extract.preflight import preflight

    manifest = _audio_manifest(tmp_path, tone(3.0))  # u2 lasts 3 s, the others 0.5 s
    corpus = load_manifest(manifest, {})
    assert not [w for w in preflight(corpus, ["audio"], max_seconds={"audio": 30.0}) if "max_seconds" in w]
    warnings = [w for w in preflight(corpus, ["audio"], max_seconds={"audio": 1.0}) if "max_seconds" in w]
    assert warnings == ["1 utterance(s) have audio longer than the encoder's max_seconds=1; only their first 1 s "
                        "are encoded (--set audio.max_seconds=0 reads all): u2 (3 s)"], warnings
    res = run_erc_here("extract", "--dataset", "manifest", "--root", str(manifest), "--text", "none", "--audio", "mel",
                       "--video", "none", "--set", "audio.max_seconds=1", "--out", "c.h5", "--quiet", cwd=tmp_path)
    assert res.code == 0 and "warning: 1 utterance(s) have audio longer than the encoder's max_seconds=1" in res.err
