"""Text encoders: the bundled MiniLM (real weights, offline) and a tiny random HF model saved to
a local folder. Never downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erc.errors import WeightsMissing
from erc.corpus import Utterance
from erc.extract.encoders import build_encoder
from erc.extract.encoders.text import HFTextEncoder, MiniLMEncoder
from tests.tiny_models import save_tiny_bert

TEXTS = ["Hello there, how are you doing today?", "Fine.", "Great! Really great news, my friend.", ""]


@pytest.fixture(scope="module")
def dialogue() -> list[Utterance]:
    return [Utterance(f"u{i}", "d0", i, "AB"[i % 2], t, "neu", "train") for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    enc = build_encoder("text", "minilm")
    assert isinstance(enc, MiniLMEncoder)
    enc.check()
    enc.load("cpu")
    return enc


def test_minilm_shapes_and_norm(minilm: MiniLMEncoder, dialogue: list[Utterance]) -> None:
    out = minilm.encode([minilm.prepare(dialogue, i) for i in range(len(dialogue))])
    assert minilm.dim == 384 and minilm.frame_dim == 384
    for enc, text in zip(out, TEXTS):
        assert enc.pooled.shape == (384,) and enc.pooled.dtype == np.float32
        assert np.linalg.norm(enc.pooled) == pytest.approx(1.0, abs=1e-4)
        assert enc.frames is not None and enc.frames.shape[1] == 384 and enc.frames.shape[0] >= 1
        assert enc.layers is None
    # "Fine." -> two word pieces, no [CLS]/[SEP] in the frames
    assert out[1].frames.shape[0] == 2
    prov = minilm.provenance()
    assert prov["model"] == "sentence-transformers/all-MiniLM-L6-v2" and prov["pooling"] == "mean"


def test_minilm_padding_invariance(minilm: MiniLMEncoder, dialogue: list[Utterance]) -> None:
    items = [minilm.prepare(dialogue, i) for i in range(3)]
    batch = minilm.encode(items)
    for i, item in enumerate(items):
        single = minilm.encode([item])[0]
        np.testing.assert_allclose(batch[i].pooled, single.pooled, atol=1e-4)
        np.testing.assert_allclose(batch[i].frames.astype(np.float32), single.frames.astype(np.float32), atol=2e-3)


def test_context_window(minilm: MiniLMEncoder, dialogue: list[Utterance]) -> None:
    ctx = build_encoder("text", "minilm", {"context": "2", "context_future": "1", "all_layers": "true"})
    ctx.load("cpu")
    item = ctx.prepare(dialogue, 2)
    assert item.text.startswith("A: Hello there") and item.text.endswith("B: ")
    assert item.text[item.span[0]:item.span[1]] == TEXTS[2]
    with_ctx = ctx.encode([item])[0]
    alone = minilm.encode([minilm.prepare(dialogue, 2)])[0]
    assert np.abs(with_ctx.pooled - alone.pooled).max() > 1e-2
    # frames cover only the target's tokens: same count as without context
    assert with_ctx.frames.shape == alone.frames.shape
    assert with_ctx.layers is not None and with_ctx.layers.shape == (7, 384)  # embeddings + 6 layers
    first_item = ctx.prepare(dialogue, 0)  # no previous turn, one next turn
    assert first_item.text == f"A: {TEXTS[0]} B: {TEXTS[1]}"
    first = ctx.encode([first_item])[0]
    assert first.frames.shape == minilm.encode([minilm.prepare(dialogue, 0)])[0].frames.shape


def test_context_pooled_vector_is_the_mean_of_the_targets_tokens(dialogue: list[Utterance]) -> None:
    opts = {"context": "2", "context_future": "1", "normalize": "false"}
    target = build_encoder("text", "minilm", opts)
    window = build_encoder("text", "minilm", {**opts, "pool_over": "window"})
    target.load("cpu")
    window.load("cpu")
    t = target.encode([target.prepare(dialogue, 2)])[0]
    w = window.encode([window.prepare(dialogue, 2)])[0]
    np.testing.assert_allclose(t.pooled, t.frames.astype(np.float32).mean(0), atol=5e-3)
    assert np.abs(t.pooled - w.pooled).max() > 1e-2


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, 32-d BERT saved with MiniLM's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_hf_text_local_folder(tiny_bert: Path, dialogue: list[Utterance]) -> None:
    enc = build_encoder("text", str(tiny_bert), {"pooling": "cls", "layers": "-1,-2", "all_layers": "true",
                                                 "max_length": "64"})
    assert isinstance(enc, HFTextEncoder) and enc.name == tiny_bert.name  # named for its folder
    enc.check()
    enc.load("cpu")
    items = [enc.prepare(dialogue, i) for i in range(3)]
    out = enc.encode(items)
    assert enc.dim == 32
    for o in out:
        assert o.pooled.shape == (32,) and o.layers.shape == (3, 32) and o.frames.shape[1] == 32
    assert abs(np.linalg.norm(out[0].pooled) - 1.0) > 1e-3  # not normalised by default
    np.testing.assert_allclose(enc.encode(items[1:2])[0].pooled, out[1].pooled, atol=1e-4)
    prov = enc.provenance()
    assert prov["weights_source"] == "local" and prov["pooling"] == "cls" and prov["layers"] == "-1,-2"


def test_missing_model_one_line() -> None:
    enc = build_encoder("text", "nobody-has/this-model-xyz")
    with pytest.raises(WeightsMissing) as err:
        enc.check()
    msg = str(err.value)
    assert "\n" not in msg and "nobody-has/this-model-xyz" in msg and "--text" in msg
    with pytest.raises(WeightsMissing):
        build_encoder("text", "roberta-large").check()


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_a_damaged_weights_file_is_one_line_naming_the_model(tiny_bert: Path, tmp_path: Path, kind: str) -> None:
    """A truncated ``model.safetensors`` or ``pytorch_model.bin`` (a copy cut short) is a UserError
    naming the folder, not a SafetensorError or unpickling traceback."""
    import shutil

    from transformers import BertModel

    from erc.errors import UserError

    folder = tmp_path / f"damaged-{kind}"
    shutil.copytree(tiny_bert, folder)
    if kind == "bin":
        (folder / "model.safetensors").unlink()
        BertModel.from_pretrained(tiny_bert).save_pretrained(folder, safe_serialization=False)
    weights = folder / ("model.safetensors" if kind == "safetensors" else "pytorch_model.bin")
    weights.write_bytes(weights.read_bytes()[:1000])
    enc = build_encoder("text", str(folder), {"max_length": "64"})
    enc.check()
    with pytest.raises(UserError) as err:
        enc.load("cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg and "cannot be loaded" in msg
