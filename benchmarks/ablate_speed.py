"""How long an ablation takes, run the old way (one run after another in one process) and the new
way (``erc ablate --jobs N``: the runs spread over worker processes), on the same machine in one
invocation (project issue 22).

    .venv/bin/python benchmarks/ablate_speed.py [--jobs 2] [--seeds 5] [--epochs 3] [--variants full,no-mamba,no-mec]

The data: an IEMOCAP-sized synthetic cache (7,433 utterances in 151 dialogues, 6 classes; pooled
text 1024 / audio 1024 / video 1000; ``tests/synth_cache.py`` with ``context_only``: each dialogue's
label is cued in its first utterance only, so a score needs the dialogue context), written to a
temporary folder. Both
ways train ``matav`` with every listed variant and ``--seeds`` seeds for exactly ``--epochs`` epochs
(``--patience 0``) through the CLI's own code (``erc.cli.main``), each into its own folder. The
old way uses torch's default threads in one process; the new way ``--jobs`` processes with the
cores shared out (``--threads`` = cores // jobs). A different thread count changes the order of
floating-point sums, so per-run scores are compared by a paired t-test per variant (seed-paired
test W-F1, scipy) rather than for equality.

Prints one line per way and per variant, then one JSON object on its last line: wall time of each
way, ``speedup`` (old / new), per-run dev / test W-F1 both ways and the paired tests.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy import stats  # noqa: E402

from erc.cli import main as erc_main  # noqa: E402
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_speed import iemocap_lengths  # noqa: E402
from tests.synth_cache import write_synthetic_cache  # noqa: E402

N_DLG = 151
DIMS = {"text": 1024, "audio": 1024, "video": 1000}


def _ablate(cache: Path, out: Path, args: argparse.Namespace, extra: list[str]) -> float:
    argv = ["ablate", "--model", "matav", "--variants", args.variants, "--seeds", str(args.seeds), "--epochs",
            str(args.epochs), "--patience", "0", "--precision", args.precision, "--device", "cpu", "--quiet",
            "--features", str(cache), "--out", str(out), *extra]
    t0 = time.perf_counter()
    try:
        erc_main(argv)
    except SystemExit as e:
        if e.code:
            raise
    return time.perf_counter() - t0


def _scores(root: Path) -> dict[str, dict[str, float]]:
    out = {}
    for p in sorted(root.rglob("metrics.json")):
        m = json.loads(p.read_text())
        out[str(p.parent.relative_to(root))] = {"dev": m["dev"]["weighted_f1"], "test": m["test"]["weighted_f1"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--variants", default="full,no-mamba,no-mec")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        lengths = iemocap_lengths()  # 151 dialogues, 8..110 utterances, 7,433 in all (train_speed.py's)
        # context_only: a label cue only in each dialogue's first utterance, so that scores are not
        # trivially perfect and the variants differ (no-mamba sees no context)
        cache = write_synthetic_cache(tmp_path / "iemocap-sized.h5", n_dialogues=N_DLG, lengths=lengths, dims=DIMS,
                                      n_classes=6, splits=(108 / 151, 12 / 151, 31 / 151), seed=0, context_only=True)
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        old = _ablate(cache, tmp_path / "old", args, [])
        print(f"old way (one process, torch's {__import__('torch').get_num_threads()} threads): {old:.1f} s", flush=True)
        new = _ablate(cache, tmp_path / "new", args, ["--jobs", str(args.jobs), "--threads", str(threads)])
        print(f"new way (--jobs {args.jobs}, {threads} thread(s) each): {new:.1f} s; speedup {old / new:.2f}x", flush=True)
        a, b = _scores(tmp_path / "old"), _scores(tmp_path / "new")
    assert a.keys() == b.keys(), "the two ways trained different runs"
    tests = {}
    for variant in args.variants.split(","):
        runs = sorted(k for k in a if k.startswith(f"matav-{variant}-"))
        x, y = [a[k]["test"] for k in runs], [b[k]["test"] for k in runs]
        equal = x == y
        p = 1.0 if equal else float(stats.ttest_rel(x, y).pvalue)
        tests[variant] = {"runs": len(runs), "equal": equal, "paired_t_p": p,
                          "mean_old": sum(x) / len(x), "mean_new": sum(y) / len(y)}
        print(f"  {variant:10s} test W-F1 old {100 * tests[variant]['mean_old']:.2f} new {100 * tests[variant]['mean_new']:.2f}"
              f" ({'identical' if equal else f'paired t p={p:.3f}'})", flush=True)
    print(json.dumps({"benchmark": "ablate_speed", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                      "cores": os.cpu_count(), "jobs": args.jobs, "threads_per_job": threads, "seeds": args.seeds,
                      "epochs": args.epochs, "variants": args.variants, "precision": args.precision,
                      "old_s": round(old, 1), "new_s": round(new, 1), "speedup": round(old / new, 3),
                      "runs": {k: {"old": a[k], "new": b[k]} for k in a}, "paired_tests": tests}))


if __name__ == "__main__":
    main()
