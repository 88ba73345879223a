"""Dev-only search for MaTAV's text-only recipe on the real caches of ``real_text.py``.

    python benchmarks/matav_dev.py --dataset iemocap --tag base --seeds 0,1,2 [--set key=value ...]
        [--train key=value ...] [--variant full]

Trains ``matav`` (or ``--model``) with the given head overrides (``--set``) and TrainConfig
options (``--train``, e.g. ``lr=5e-4``; default: the head's ``train_defaults``) on the same text
cache and encoder group as ``benchmarks/real_text.py`` and prints **dev** weighted F1 only: per
seed, the best epoch and the epochs run, and the mean. Test is never printed (each run's
``metrics.json`` still holds it, scored once at the best-dev epoch, as every erc run does).
Runs go to ``--runs/<dataset>/<tag>/seed<k>`` (finished ones are reused). The numbers that chose
MaTAV's defaults are in benchmarks/REAL_TEXT.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_text import TEXT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(TEXT), required=True)
    ap.add_argument("--features", type=Path, default=ROOT / "features" / "real")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "matav_dev")
    ap.add_argument("--model", default="matav")
    ap.add_argument("--variant", default="full")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="head override key=value")
    ap.add_argument("--train", action="append", default=[], help="TrainConfig option key=value")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from erc.config import apply_overrides, parse_assignments
    from erc.heads.registry import resolve_head
    from erc.train.config import TrainConfig
    from erc.train.loop import load_data, train_run

    overrides = parse_assignments(args.sets)
    spec = resolve_head(args.model, args.variant, overrides)
    train_sets = parse_assignments(args.train)  # over the head's train_defaults, typed and checked as --set is
    base = apply_overrides(TrainConfig.for_head(spec.cls, num_threads=args.threads, quiet=True), train_sets,
                           what="TrainConfig")
    given = {k: getattr(base, k) for k in train_sets}
    data = load_data(args.features / f"{args.dataset}.h5", spec, {"text": TEXT[args.dataset][0]}, base)
    devs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        t0 = time.time()
        cfg = dataclasses.replace(base, seed=seed)
        res = train_run(data, spec, cfg, args.runs / args.dataset / args.tag / f"seed{seed}")
        m = json.loads((res.run_dir / "metrics.json").read_text())
        devs.append(100 * res.dev["weighted_f1"])
        print(f"{args.dataset} {args.tag} seed {seed}: dev W-F1 {devs[-1]:.2f} (best epoch {res.best_epoch} of "
              f"{m['epochs_run']}, {time.time() - t0:.0f} s{', reused' if res.skipped else ''})", flush=True)
    mean = sum(devs) / len(devs)
    print(json.dumps({"dataset": args.dataset, "tag": args.tag, "model": args.model, "variant": args.variant,
                      "set": overrides, "train": given, "dev_wf1": [round(d, 2) for d in devs], "dev_mean": round(mean, 2)}))


if __name__ == "__main__":
    main()
