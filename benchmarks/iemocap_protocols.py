"""Text-only IEMOCAP under its protocols: six or four classes, the official split or
leave-one-session-out (LOSO).

    python benchmarks/iemocap_protocols.py --data ../shared/data [--heads gru,gru-party] [--loso-seeds 3]

1. Extracts all-MiniLM-L6-v2 features from the real transcripts (``iemocap/iemocap_text.csv``) with
   the text settings ``benchmarks/real_text.py`` chose on dev for IEMOCAP (a window of 2 previous
   and 1 next turn with speaker names, the target turn's tokens averaged), twice: six classes, and
   four classes (``--set dataset.label_map=iemocap4``: excited merged into happiness, frustration
   dropped, as ``--dataset iemocap --set dataset.classes=4`` does from the release).
2. Trains each head on each class set under the official split (Sessions 1-4 train with the CSV's
   12 dev dialogues, Session 5 test; ``--seeds`` seeds) and under LOSO (``--folds session``: 5 folds,
   each session the test set once, dev = 10 % of the training sessions' dialogues;
   ``--loso-seeds`` seeds x 5 folds), each run's epoch chosen on dev, test scored once.
3. Prints a table and, on its last line, one JSON object: per class set, protocol and head, test
   weighted F1 / accuracy mean ± std over the runs (LOSO: over seeds x folds, and per session).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_text  # noqa: E402

TEXT_GROUP, TEXT = real_text.TEXT["iemocap"]  # the text settings chosen on dev there
CLASSES = {"6": [], "4": ["dataset.label_map=iemocap4"]}
HEADS = {"gru": ("gru", "full"), "gru-party": ("gru", "party"), "mlp": ("mlp", "full")}
FAST = real_text.FAST  # real_text.py's settings for gru / mlp


def extract(csv: Path, classes: str, cache: Path, threads: int) -> float:
    cmd = [sys.executable, "-m", "erc.cli", "extract", "--dataset", "manifest", "--root", str(csv), "--text", "minilm", "--audio", "none",
           "--video", "none", "--out", str(cache), "--quiet"] + [a for s in TEXT + CLASSES[classes] for a in ("--set", s)]
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, stdout=sys.stderr, env=env)
    return time.time() - t0


def _sweep(job: tuple) -> tuple[str, str, str, dict]:
    """One (class set, protocol, head) sweep in a worker process; finished runs are reused."""
    from erc.heads.registry import resolve_head
    from erc.train.config import TrainConfig
    from erc.train.sweep import run_sweep

    classes, protocol, label, cache, runs, seeds, threads = job
    head, variant = HEADS[label]
    cfg = TrainConfig(**FAST, num_threads=threads, quiet=True)
    spec = resolve_head(head, variant)
    t0 = time.time()
    folds = ("session" if protocol == "loso" else None)
    res = run_sweep(cache, spec, {"text": TEXT_GROUP}, cfg, runs / f"iemocap{classes}" / protocol / label, seeds,
                    None, folds or "dialogue")
    per_session: dict[str, list[float]] = {}
    for r in res.runs:
        if protocol == "loso":
            per_session.setdefault(r.run_dir.name, []).append(r.test["weighted_f1"])
    t, d = res.summary["test"], res.summary["dev"]
    out = {"runs": len(res.runs), "test_weighted_f1": [t["weighted_f1"]["mean"], t["weighted_f1"]["std"]],
           "test_accuracy": [t["accuracy"]["mean"], t["accuracy"]["std"]],
           "dev_weighted_f1": [d["weighted_f1"]["mean"], d["weighted_f1"]["std"]],
           "per_fold_test_weighted_f1": {k: sum(v) / len(v) for k, v in sorted(per_session.items())},
           "wall_s": round(time.time() - t0, 1)}
    print(f"  iemocap{classes} {protocol:8s} {label:10s} test W-F1 {100 * out['test_weighted_f1'][0]:.2f} ± "
          f"{100 * out['test_weighted_f1'][1]:.2f} ({out['runs']} runs, {out['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    return classes, protocol, label, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--features", type=Path, default=ROOT / "features" / "real")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "iemocap_protocols")
    ap.add_argument("--heads", default="gru,gru-party")
    ap.add_argument("--classes", default="6,4")
    ap.add_argument("--seeds", type=int, default=5, help="seeds on the official split")
    ap.add_argument("--loso-seeds", type=int, default=3, help="seeds of the 5 LOSO folds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.time()
    csv = (args.data / "iemocap" / "iemocap_text.csv").resolve()
    caches, extract_s = {}, {}
    for c in [x.strip() for x in args.classes.split(",") if x.strip()]:
        caches[c] = args.features / f"iemocap{c}-{TEXT_GROUP}.h5"
        caches[c].parent.mkdir(parents=True, exist_ok=True)
        extract_s[c] = round(extract(csv, c, caches[c], max(args.threads, args.jobs)), 1)
    jobs = [(c, p, h, caches[c], args.runs, args.seeds if p == "official" else args.loso_seeds, args.threads)
            for c in caches for p in ("loso", "official") for h in args.heads.split(",") if h]
    results: dict = {}
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        for fut in concurrent.futures.as_completed([pool.submit(_sweep, j) for j in jobs]):
            c, p, h, out = fut.result()
            results.setdefault(f"iemocap{c}", {}).setdefault(p, {})[h] = out
    print("\nclasses  protocol  head        test W-F1        runs")
    for ds, protos in sorted(results.items()):
        for p, heads in sorted(protos.items(), reverse=True):
            for h, o in heads.items():
                print(f"{ds:8s} {p:9s} {h:10s} {100 * o['test_weighted_f1'][0]:6.2f} ± {100 * o['test_weighted_f1'][1]:4.2f}"
                      f"   {o['runs']}")
    print(json.dumps({"benchmark": "iemocap_protocols", "encoder": "all-MiniLM-L6-v2 (frozen)", "text": TEXT,
                      "train": FAST, "seeds": args.seeds, "loso_seeds": args.loso_seeds, "extract_s": extract_s,
                      "wall_s": round(time.time() - t_start, 1), "results": results}))


if __name__ == "__main__":
    main()
