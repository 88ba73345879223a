"""JFM's pre-trained layers: the copied layers compute what the Hugging Face layers compute; the
packaged MiniLM initialises the language side; a missing visual model leaves random layers and a
recorded warning; nothing is downloaded."""

from __future__ import annotations

import json

import pytest
import torch

from erc.errors import UserError
from erc.heads import HeadInputs, build_head
from erc.heads.pretrained import check_loading_info, convert_layer, load_layers, resolve_model_path
from tests.batches import random_batch
from tests.synth_cache import write_synthetic_cache
from tests.train_utils import fit

SMALL = {"extractor_dim": 12, "extractor_heads": 2, "extractor_ff": 24, "extractor_layers": 1,
         "layer_dim": 16, "layer_heads": 2, "layer_ff": 32, "patch_len": 16, "patch_bins": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                    image_size=32, patch_size=16, hidden_act="gelu")
    path = tmp_path_factory.mktemp("vit") / "tiny-vit"
    ViTModel(cfg).save_pretrained(path)
    return path


def test_converted_bert_and_vit_layers_compute_the_same_function(vit_dir) -> None:
    from transformers import BertConfig, BertModel, ViTModel

    torch.manual_seed(1)
    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).eval()
    vit = ViTModel.from_pretrained(vit_dir).eval()
    x = torch.randn(2, 5, 16)
    for model in (bert, vit):
        hf = model.encoder.layer[0]
        ours = convert_layer(hf, model.config, 0.0).eval()
        with torch.no_grad():
            want = hf(x)
            want = want[0] if isinstance(want, tuple) else want
            torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=1e-4)


def test_minilm_layers_initialise_the_language_side() -> None:
    from transformers import AutoModel

    head = build_head("jfm", HeadInputs({}, {"text": 384}, 4), {**SMALL})  # text only, default text_model=minilm
    assert "all-MiniLM-L6-v2" in head.resolved["text_layers"] or "minilm" in head.resolved["text_layers"]
    assert head.width["text"] == 384 and not head.warnings
    minilm = AutoModel.from_pretrained(resolve_model_path("minilm"), local_files_only=True)
    q = minilm.encoder.layer[1].attention.self.query.weight
    torch.testing.assert_close(head.layers["text"][1].self_attn.in_proj_weight[:384], q)
    head.eval()
    with torch.no_grad():  # a handful of utterances run through extractor + MiniLM layers
        out = head(random_batch(2, 3, {}, {"text": 384}, 4, seed=0, absent=0.0))
    assert out.logits.shape == (2, 3, 4) and torch.isfinite(out.logits).all()


def test_a_vit_on_disk_initialises_the_audio_side(vit_dir) -> None:
    from transformers import ViTModel

    head = build_head("jfm", HeadInputs({}, {"audio": 32}, 4), {**SMALL, "audio_model": str(vit_dir), "first_layer": 1})
    vit = ViTModel.from_pretrained(vit_dir)
    assert "patch embedding" in head.resolved["audio_layers"] and not head.warnings
    conv = vit.embeddings.patch_embeddings.projection
    torch.testing.assert_close(head.patch_embed.weight, conv.weight.sum(1).reshape(16, -1))
    torch.testing.assert_close(head.audio_cls.view(-1), vit.embeddings.cls_token.view(-1))
    torch.testing.assert_close(head.layers["audio"][0].linear1.weight, vit.encoder.layer[1].intermediate.dense.weight)
    with pytest.raises(UserError, match="layers 2..3"):
        build_head("jfm", HeadInputs({}, {"audio": 32}, 4), {**SMALL, "audio_model": str(vit_dir), "first_layer": 2})


def test_missing_models_warn_for_the_visual_side_and_refuse_the_text_side(tmp_path) -> None:
    head = build_head("jfm", HeadInputs({}, {"audio": 32}, 4), {**SMALL, "audio_model": "nobody/no-such-vit"})
    assert head.resolved["audio_layers"] == "random" and head.width["audio"] == 16
    assert len(head.warnings) == 1 and "not on disk" in head.warnings[0]
    with pytest.raises(UserError, match="not on disk"):
        build_head("jfm", HeadInputs({}, {"text": 8}, 4), {**SMALL, "text_model": str(tmp_path / "none")})
    with pytest.raises(FileNotFoundError):
        load_layers("nobody/no-such-bert", 0, 1, 0.0)


def test_a_run_records_the_resolved_layers_and_the_warning(tmp_path) -> None:
    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=6, lengths=(2, 3), dims={"text": 4, "audio": 4},
                                  frames={"text": 8, "audio": 16})
    from erc.train.config import TrainConfig

    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", num_threads=1, quiet=True)
    with pytest.warns(UserWarning, match="not on disk"):
        res = fit(cache, "jfm", ["text", "audio"], {**SMALL, "text_model": "", "audio_model": "nobody/no-such-vit"},
                  "full", cfg, tmp_path / "run")
    config = json.loads((res.run_dir / "config.json").read_text())
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    resolved = config["head_resolved"]
    assert resolved["text_layers"] == "random" and resolved["audio_layers"] == "random"
    assert {side: w["origin"] for side, w in resolved["weights"].items()} == {"text": "random", "audio": "random"}
    assert all(len(w["sha256"]) == 16 for w in resolved["weights"].values())
    assert len(config["warnings"]) == 1 and metrics["warnings"] == config["warnings"]
    assert metrics["weights"] == resolved["weights"]  # the loaded weights' hash and origin, in metrics.json too


def _tiny_bert(path, rename: tuple[str, str] | None = None):
    """A tiny BertModel saved to ``path``; with ``rename``, its keys rewritten (old -> new) on disk."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                         vocab_size=40)).save_pretrained(path)
    if rename:
        f = path / "model.safetensors"
        state = load_file(f)
        save_file({k.replace(*rename): v for k, v in state.items()}, f, metadata={"format": "pt"})
    return path


def test_a_checkpoint_with_renamed_layer_keys_is_refused_in_one_line(tmp_path) -> None:
    bad = _tiny_bert(tmp_path / "renamed", ("encoder.layer.0.", "encoder.block.0."))
    with pytest.raises(UserError) as e:
        load_layers(str(bad), 0, 1, 0.0)
    msg = str(e.value)
    assert "\n" not in msg and "missing" in msg and "unexpected" in msg
    assert "encoder.layer.0." in msg and "encoder.block.0." in msg  # the first keys of each kind are named
    with pytest.raises(UserError, match="do not match"):
        build_head("jfm", HeadInputs({}, {"text": 8}, 4), {**SMALL, "text_model": str(bad)})


def test_a_matching_checkpoint_loads_and_records_its_hash_and_origin(tmp_path) -> None:
    good = _tiny_bert(tmp_path / "good")
    head = build_head("jfm", HeadInputs({}, {"text": 8}, 4), {**SMALL, "text_model": str(good), "blocks": 1})
    w = head.resolved["weights"]["text"]
    assert w["origin"] == "pretrained" and str(good) in w["source"]
    again = build_head("jfm", HeadInputs({}, {"text": 8}, 4), {**SMALL, "text_model": str(good), "blocks": 1})
    assert again.resolved["weights"]["text"]["sha256"] == w["sha256"]  # the same weights, the same hash
    torch.manual_seed(5)
    rand = build_head("jfm", HeadInputs({}, {"text": 8}, 4), {**SMALL, "text_model": "", "blocks": 1})
    assert rand.resolved["weights"]["text"]["origin"] == "random"
    assert rand.resolved["weights"]["text"]["sha256"] != w["sha256"]


def test_loading_info_allows_a_pooler_and_a_task_head_only() -> None:
    check_loading_info({"missing_keys": ["pooler.dense.weight"], "unexpected_keys": ["cls.predictions.bias",
                        "classifier.weight", "cls_classifier.bias", "lm_head.dense.weight", "embeddings.position_ids"]}, "m")
    with pytest.raises(UserError, match="1 unexpected"):
        check_loading_info({"unexpected_keys": ["encoder.layer.2.output.dense.weight", "lm_head.bias"]}, "m")
    with pytest.raises(UserError, match="1 missing"):
        check_loading_info({"missing_keys": ["pooler.dense.weight", "encoder.layer.1.output.dense.weight"]}, "m")
    with pytest.raises(UserError, match="of another shape"):
        check_loading_info({"mismatched_keys": [("embeddings.word_embeddings.weight", (4, 2), (5, 2))]}, "m")
