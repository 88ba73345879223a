"""User mistakes on the command line: one clear line, non-zero exit, never a traceback."""

from __future__ import annotations

from tests.cli_utils import assert_one_line_error, run_erc


def _manifest(tmp_path, rows=None):
    path = tmp_path / "m.csv"
    rows = rows or ["d1,u1,0,A,hello there,joy,train", "d1,u2,1,B,oh no,anger,train",
                    "d2,u3,0,A,fine,joy,dev", "d3,u4,0,B,bad,anger,test"]
    path.write_text("dialogue_id,utterance_id,turn,speaker,text,label,split\n" + "\n".join(rows) + "\n")
    return path


def test_unknown_dataset_is_one_line(tmp_path):
    assert_one_line_error(run_erc("extract", "--dataset", "nope", cwd=tmp_path), "unknown dataset", "nope")


def test_unknown_video_encoder_is_one_line(tmp_path):
    res = run_erc("extract", "--dataset", "manifest", "--root", str(_manifest(tmp_path)), "--video", "nosuch",
                  cwd=tmp_path)
    assert_one_line_error(res, "unknown video encoder", "nosuch")


def test_text_model_without_local_weights_is_one_line(tmp_path):
    res = run_erc("extract", "--dataset", "manifest", "--root", str(_manifest(tmp_path)),
                  "--text", "no-such-org/no-such-model", "--audio", "none", "--video", "none", cwd=tmp_path)
    assert_one_line_error(res, "no-such-org/no-such-model")


def test_bad_set_key_is_one_line(tmp_path):
    res = run_erc("extract", "--dataset", "manifest", "--root", str(_manifest(tmp_path)),
                  "--set", "text.nosuchfield=3", cwd=tmp_path)
    assert_one_line_error(res, "nosuchfield")


def test_missing_root_is_one_line(tmp_path):
    assert_one_line_error(run_erc("extract", "--dataset", "meld", "--root", str(tmp_path / "nowhere"),
                                  cwd=tmp_path), "nowhere")
    assert_one_line_error(run_erc("extract", "--dataset", "iemocap", "--root", str(tmp_path),
                                  cwd=tmp_path), "IEMOCAP")


def test_output_with_a_cache_of_another_dataset_is_one_line(tmp_path):
    common = ["--audio", "none", "--video", "none", "--out", str(tmp_path / "c.h5"), "--quiet"]
    first = run_erc("extract", "--dataset", "manifest", "--root", str(_manifest(tmp_path)), *common, cwd=tmp_path)
    assert first.code == 0, first.err
    other = tmp_path / "o"
    other.mkdir()
    res = run_erc("extract", "--dataset", "manifest", "--root",
                  str(_manifest(other, ["x,y,0,A,hi,joy,train", "x,z,1,B,yo,anger,test"])), *common, cwd=tmp_path)
    assert_one_line_error(res, "holds a cache of dataset")


def test_cache_info_on_a_missing_file_is_one_line(tmp_path):
    assert_one_line_error(run_erc("cache", "info", str(tmp_path / "none.h5")), "no feature cache")
    (tmp_path / "x.h5").write_text("not hdf5")
    assert_one_line_error(run_erc("cache", "verify", str(tmp_path / "x.h5")), "not a readable HDF5")


def test_manifest_without_required_columns_is_one_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,utterance_id,label\nd1,u1,joy\n")
    res = run_erc("extract", "--dataset", "manifest", "--root", str(path), cwd=tmp_path)
    assert_one_line_error(res, "text")


def test_manifest_with_duplicate_utterance_ids_is_one_line(tmp_path):
    path = _manifest(tmp_path, ["d1,u1,0,A,hi,joy,train", "d1,u1,1,B,yo,anger,train"])
    res = run_erc("extract", "--dataset", "manifest", "--root", str(path), cwd=tmp_path)
    assert_one_line_error(res, "u1")
