"""Prediction speed of the Python API (``erc.apply.Predictor``): new conversations with video clips
through the offline encoders (MiniLM text, log-mel audio, face descriptors; their default configs,
as ``erc extract --dataset demo`` uses them) and a MaTAV head (its default config).

The run is made here: a small labelled corpus (8 dialogues) is extracted and MaTAV trained for one
epoch on it (accuracy is not the point). Then, with the run loaded once:

- load: rebuilding and loading the encoders (``encoder_load_s``) and the head(s) (``head_load_s``),
  reported apart from the prediction;
- predict: ``Predictor.predict`` over ``--utterances`` utterances in dialogues of ``--dialogue-len``
  (dicts with text, speaker and an mp4 clip for audio and video; clips are 64x64 at 8 fps with a
  tone, like the demo's), after one warm-up call; wall time -> utterances per second, median over
  ``--repeats`` calls, and where the time goes (each encoder over the same utterances, then the head).

Prints one JSON object on its last line.

    .venv/bin/python benchmarks/predict_speed.py [--utterances 600] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from erc.apply import Predictor, read_conversations  # noqa: E402
from erc.extract.datasets import load_dataset  # noqa: E402
from erc.extract.datasets.synth import draw_face, tone, write_mp4  # noqa: E402
from erc.extract.encoders import build_encoder  # noqa: E402
from erc.extract.in_memory import encode_group, extract_in_memory  # noqa: E402
from erc.extract.run import RunConfig, extract  # noqa: E402
from erc.heads.registry import resolve_head  # noqa: E402
from erc.train.config import TrainConfig  # noqa: E402
from erc.train.loop import load_data, train_run  # noqa: E402
from erc.train.ensemble import ensemble_frame  # noqa: E402

EMOTIONS = {"neutral": 200.0, "joy": 330.0, "sadness": 140.0, "anger": 260.0, "surprise": 440.0}
TEXTS = ["I read the report today", "I love this", "this is so sad", "how dare you", "wait, what",
         "okay.", "the meeting moved to noon", "what great news, I am so happy about it", "hmm."]


def write_clips(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` mp4 clips (64x64, 8 fps, 1-2.5 s, a face and a tone) -> their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    names = list(EMOTIONS)
    for i in range(n):
        label = names[i % len(names)]
        secs = float(rng.uniform(1.0, 2.5))
        frames = np.stack([draw_face(label, 64, rng) for _ in range(max(1, int(secs * 8)))])
        path = folder / f"clip{i}.mp4"
        write_mp4(path, frames, 8, tone(EMOTIONS[label], secs, 16000, rng=rng), 16000)
        paths.append(str(path))
    return paths


def conversations(n: int, length: int, clips: list[str], seed: int = 1) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    out: list[list[dict]] = []
    for k in range(n):
        if k % length == 0:
            out.append([])
        clip = clips[int(rng.integers(len(clips)))]
        out[-1].append({"speaker": "AB"[k % 2], "text": TEXTS[int(rng.integers(len(TEXTS)))], "audio": clip, "video": clip})
    return out


def make_run(tmp: Path, clips: list[str]) -> Path:
    """A MaTAV run (default config, 1 epoch) on a labelled corpus of 8 dialogues x 6 utterances."""
    rows = []
    names = list(EMOTIONS)
    for d in range(8):
        for t in range(6):
            i = (d * 6 + t) % len(clips)
            rows.append({"dialogue_id": f"d{d}", "utterance_id": f"d{d}_{t}", "speaker": "AB"[t % 2],
                         "text": TEXTS[i % len(TEXTS)], "audio": clips[i], "video": clips[i],
                         "label": names[i % len(names)], "split": "train" if d < 5 else ("dev" if d < 7 else "test")})
    manifest = tmp / "train.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    cache = tmp / "train.h5"
    encoders = [build_encoder("text", "minilm"), build_encoder("audio", "mel"), build_encoder("video", "faces")]
    extract(load_dataset("manifest", manifest), encoders, cache, RunConfig(device="cpu"), "predict_speed")
    spec = resolve_head("matav")
    cfg = TrainConfig(epochs=1, batch_size=8, patience=0, device="cpu", quiet=True)
    train_run(load_data(cache, spec, ["text", "audio", "video"], cfg), spec, cfg, tmp / "run")
    return tmp / "run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=600)
    ap.add_argument("--dialogue-len", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="measured predict calls (median)")
    ap.add_argument("--clips", type=int, default=40, help="distinct clips the utterances point at")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clips = write_clips(tmp / "clips", args.clips)
        run = make_run(tmp, clips)

        t0 = time.perf_counter()
        predictor = Predictor.load(run, device=args.device, load_encoders=False, workers=args.workers)
        head_load = time.perf_counter() - t0
        predictor.encoders  # noqa: B018 - load the encoders now, timed on their own
        convs = conversations(args.utterances, args.dialogue_len, clips)
        predictor.predict(convs[:2])  # warm-up: first-call costs (kernels, thread pools)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            df = predictor.predict(convs)
            times.append(time.perf_counter() - t)
        assert len(df) == args.utterances

        # where the time goes: the same utterances, each encoder, then the head
        corpus = read_conversations(convs, predictor.labels)
        parts = {}
        for enc in predictor.encoders:
            t = time.perf_counter()
            encode_group(corpus, enc, {}, workers=args.workers)
            parts[f"{enc.modality}/{enc.name}"] = time.perf_counter() - t
        cache = extract_in_memory(corpus, predictor.encoders, {m: g.get("attrs", {}) for m, g in predictor.ensemble.groups.items()},
                                  workers=args.workers)
        t = time.perf_counter()
        ensemble_frame(predictor.ensemble, cache, predictor.device)
        parts["head/matav"] = time.perf_counter() - t

    median = statistics.median(times)
    result = {
        "benchmark": "predict_speed", "utterances": args.utterances, "dialogue_len": args.dialogue_len,
        "encoders": [f"{e.modality}/{e.name}" for e in predictor.encoders], "head": "matav",
        "encoder_load_s": round(predictor.encoder_load_seconds, 3), "head_load_s": round(head_load, 3),
        "predict_s": round(median, 3), "predict_s_all": [round(x, 3) for x in times],
        "utterances_per_s": round(args.utterances / median, 1),
        "breakdown_s": {k: round(v, 3) for k, v in parts.items()},
        "threads": args.threads, "workers": args.workers, "device": predictor.device,
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
