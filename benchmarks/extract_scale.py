"""Extraction past one process, one commit, one memory size (issue 12). Three measurements:

- speedup: the same text manifest (MiniLM, ``--utterances``) under ``torchrun`` with 1 and with 2
  processes, one thread each: wall time of the whole command and of rank 0's ``extract()`` call
  (imports and process start excluded), the speed-up of each, and how far the two caches differ.
- commit: a synthetic cache of 20,000 utterances holding one large frames group (``--big-gb``),
  then a small group (pooled ``[20000, 384]`` float32, from a journal of 64-utterance batches in
  a shuffled row order, as an extraction leaves it) committed three ways: into that cache, into
  an empty cache of the same table ("writing that group once"; it also writes the utterance
  table), and with the commit erc had before group files (copy every group into a new file, then
  rename). Bytes passed to ``write`` calls (``wchar`` of /proc/self/io), against those of the
  empty-cache commit and against the size of the group's file, and wall time of each.
- rss: peak resident memory (``ru_maxrss`` of the child) of ``erc extract`` (mel) and of
  ``erc cache merge`` (two ``--shard`` parts) at 10x and 100x ``--mel-base`` utterances.

Prints one JSON object on its last line.

    .venv/bin/python benchmarks/extract_scale.py [--parts speedup,commit,rss] [--utterances 4000]
        [--big-gb 2.0] [--mel-base 60] [--baseline-root ../main]

``--baseline-root``: also measure rss with another erc checkout (e.g. one before this change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from erc.features.journal import BatchResult, ShardStore  # noqa: E402
from erc.features.layout import member_files  # noqa: E402
from erc.features.schema import Encoded, UtteranceTable, group_path  # noqa: E402
from erc.features.writer import CacheWriter  # noqa: E402

WORDS = ("i you we they it is was not so very really what why how when okay yeah no yes well just know think "
         "want go come home work time day night good bad fine great terrible love hate sorry please thanks "
         "sure maybe never always again now").split()


def peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, peak RSS MB) of a command, from the kernel's accounting of that child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024


# ---- 1. torchrun 1 vs 2 processes --------------------------------------------------------------
def text_manifest(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = ["dialogue_id,utterance_id,turn,speaker,text,label,split"]
    for i in range(n):
        words = int(min(40, 2 + rng.exponential(9)))
        rows.append(f"d{i // 10},u{i},{i % 10},{'AB'[i % 2]},{' '.join(rng.choice(WORDS, size=words))},x,train")
    path.write_text("\n".join(rows) + "\n")


def worker(manifest: Path, out: Path, report: Path) -> None:
    """One rank under torchrun: time ``extract()`` (what ``erc extract`` calls) on rank 0."""
    import torch
    import torch.distributed as td

    from erc.extract.datasets import load_dataset
    from erc.extract.encoders import build_encoder
    from erc.extract.run import RunConfig, extract

    torch.set_num_threads(1)
    corpus = load_dataset("manifest", manifest)
    enc = build_encoder("text", "minilm", {"batch_size": "32"})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        td.init_process_group("gloo")
        td.barrier()  # start together
    t0 = time.perf_counter()
    [s] = extract(corpus, [enc], out, RunConfig(device="cpu", workers=1), "benchmark")
    if os.environ.get("RANK", "0") == "0":
        report.write_text(json.dumps({"extract_s": time.perf_counter() - t0, "load_s": s.load_seconds}))


def speedup(tmp: Path, n: int) -> dict:
    manifest = tmp / "text.csv"
    text_manifest(manifest, n)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out: dict = {"utterances": n, "encoder": "minilm, batch 32"}
    for procs in (1, 2):
        cache, report = tmp / f"text{procs}.h5", tmp / f"report{procs}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
               str(Path(__file__).resolve()), "--worker", str(manifest), str(cache), str(report)]
        wall, _ = peak_rss(cmd, env)
        r = json.loads(report.read_text())
        out[f"procs{procs}"] = {"wall_s": round(wall, 2), "extract_s": round(r["extract_s"], 2),
                                "load_s": round(r["load_s"], 2)}
        print(f"torchrun x{procs}: wall {wall:.2f}s, extract() {r['extract_s']:.2f}s, of which loading the encoder "
              f"{r['load_s']:.2f}s", flush=True)
    out["speedup_extract"] = round(out["procs1"]["extract_s"] / out["procs2"]["extract_s"], 2)
    # every process loads the encoder once, a fixed cost that N processes do not divide
    after = {p: out[p]["extract_s"] - out[p]["load_s"] for p in ("procs1", "procs2")}
    out["speedup_after_load"] = round(after["procs1"] / after["procs2"], 2)
    out["speedup_wall"] = round(out["procs1"]["wall_s"] / out["procs2"]["wall_s"], 2)
    with h5py.File(tmp / "text1.h5") as a, h5py.File(tmp / "text2.h5") as b:
        g = "features/text/minilm"
        out["max_abs_diff_pooled"] = float(np.abs(a[f"{g}/pooled"][()] - b[f"{g}/pooled"][()]).max())
        out["max_abs_diff_frames"] = float(np.abs(a[f"{g}/frames"][()].astype(np.float32)
                                                  - b[f"{g}/frames"][()].astype(np.float32)).max())
        out["same_offsets_status_present"] = all(np.array_equal(a[f"{g}/{k}"][()], b[f"{g}/{k}"][()])
                                                 for k in ("offsets", "status", "present"))
    return out


# ---- 2. committing a small group beside a large one ---------------------------------------------
class BigFrames:
    """A RowSource of ``n`` rows with ``t`` frames of ``f`` float16 each, generated block by block."""

    def __init__(self, n: int, t: int, f: int) -> None:
        self.n, self.rows, self.dim, self.layers_shape = n, np.arange(n), 8, None
        self.frame_dim, self.frame_dtype, self.t = f, "float16", t
        self.present = np.ones(n, dtype=bool)
        self.status = ["ok"] * n
        self.frame_len = np.full(n, t, dtype=np.int64)

    def pooled(self, a: int, b: int) -> np.ndarray:
        return np.full((b - a, 8), 0.5, dtype=np.float32)

    def layers(self, a: int, b: int) -> np.ndarray:
        raise NotImplementedError

    def frames(self, a: int, b: int) -> np.ndarray:
        return np.random.default_rng(a).standard_normal(((b - a) * self.t, self.frame_dim), dtype=np.float32).astype(np.float16)


def wchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar")).split()[1])


def journal_small(cache: Path, n: int, dim: int, batch: int = 64) -> None:
    """The small group's journal, as an extraction leaves it (batches in a scattered row order)."""
    store = ShardStore(cache, "text", "small")
    order = np.random.default_rng(1).permutation(n)
    plan = [order[i: i + batch].tolist() for i in range(0, n, batch)]
    store.open("small", plan)
    for b, rows in enumerate(plan):
        enc = [Encoded(np.random.default_rng(r).standard_normal(dim).astype(np.float32)) for r in rows]
        store.write(b, BatchResult(rows, ["ok"] * len(rows), enc))


def timed_commit(fn) -> tuple[float, int]:  # noqa: ANN001
    os.sync()
    w0, t0 = wchar(), time.perf_counter()
    fn()
    os.sync()
    return time.perf_counter() - t0, wchar() - w0


def legacy_commit(flat: Path, table: UtteranceTable) -> None:
    """The commit before group files: a new file with every other group copied, then the new
    group from the journal, renamed over the old file."""
    from erc.features.journal import JournalSource

    src = JournalSource(ShardStore(flat, "text", "small"), len(table))
    tmp = flat.with_name(flat.name + ".tmp")
    with h5py.File(tmp, "w") as dst, h5py.File(flat, "r") as old:
        for k, v in old.attrs.items():
            dst.attrs[k] = v
        old.copy(old["utterances"], dst, name="utterances")
        for mod in old["features"]:
            for enc in old["features"][mod]:
                dst.require_group(f"features/{mod}")
                old.copy(old[group_path(mod, enc)], dst[f"features/{mod}"], name=enc)
        g = dst.create_group("features/text/small")
        g.create_dataset("pooled", data=src.pooled(0, src.n))
        g.create_dataset("present", data=src.present)
        g.create_dataset("status", data=np.asarray(src.status, dtype=object), dtype=h5py.string_dtype())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, flat)


def commit(tmp: Path, big_gb: float, n: int = 20000, dim: int = 384) -> dict:
    f = 1024
    t = max(1, round(big_gb * 1e9 / (n * f * 2)))  # frames per utterance that make the big group big_gb
    table = UtteranceTable("bench", ["x"], "bench-hash", {
        "utterance_id": [f"u{i}" for i in range(n)], "dialogue_id": [f"d{i // 10}" for i in range(n)],
        "turn": [i % 10 for i in range(n)], "speaker": ["A"] * n, "label": ["x"] * n, "split": ["train"] * n,
        "text": ["hello"] * n})
    big, empty = tmp / "big.h5", tmp / "empty.h5"
    t0 = time.perf_counter()
    with CacheWriter(big, table) as w:
        w.commit_source("video", "frames", BigFrames(n, t, f), {"config_hash": "big"})
    big_bytes = sum(p.stat().st_size for p in member_files(big))
    print(f"big group: {big_bytes / 1e9:.2f} GB written in {time.perf_counter() - t0:.1f}s", flush=True)
    out: dict = {"utterances": n, "big_group_gb": round(big_bytes / 1e9, 3)}
    for name, cache in (("into_big_cache", big), ("into_empty_cache", empty)):
        journal_small(cache, n, dim)
        with CacheWriter(cache, table) as w:
            secs, written = timed_commit(lambda: w.commit("text", "small", {"config_hash": "small"}))
        small = next(p for p in member_files(cache) if p.name.startswith("text__small"))
        out[name] = {"seconds": round(secs, 3), "bytes_written": written, "group_file_bytes": small.stat().st_size}
        print(f"commit {name}: {secs:.2f}s, {written / 1e6:.1f} MB written", flush=True)
    flat = tmp / "flat.h5"
    with h5py.File(big, "r") as src, h5py.File(flat, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        src.copy("utterances", dst, expand_external=True)
        dst.create_group("features")
        src.copy("features/video", dst["features"], expand_external=True)
    journal_small(flat, n, dim)
    secs, written = timed_commit(lambda: legacy_commit(flat, table))
    out["full_copy_commit"] = {"seconds": round(secs, 3), "bytes_written": written}
    print(f"full-copy commit: {secs:.2f}s, {written / 1e6:.1f} MB written", flush=True)
    once = out["into_empty_cache"]
    out["bytes_ratio_vs_once"] = round(out["into_big_cache"]["bytes_written"] / once["bytes_written"], 3)
    out["bytes_ratio_vs_group_file"] = round(out["into_big_cache"]["bytes_written"] / once["group_file_bytes"], 3)
    out["time_ratio_vs_once"] = round(out["into_big_cache"]["seconds"] / once["seconds"], 3)
    out["speedup_vs_full_copy"] = round(secs / out["into_big_cache"]["seconds"], 1)
    return out


# ---- 3. peak RSS against the utterance count ---------------------------------------------------
def mel_manifest(folder: Path, n: int, distinct: int = 40) -> Path:
    """``n`` utterances over ``distinct`` wav files of 0.5-2.5 s (each file used many times)."""
    from erc.extract.datasets.synth import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(distinct):
        wav = folder / f"w{i}.wav"
        if not wav.exists():
            secs = float(rng.uniform(0.5, 2.5))
            tt = np.arange(int(secs * 16000)) / 16000
            write_wav(wav, (0.3 * np.sin(2 * np.pi * (150 + 5 * i) * tt)).astype(np.float32), 16000)
    rows = ["dialogue_id,utterance_id,turn,speaker,text,label,split,audio"]
    rows += [f"d{i // 10},u{i},{i % 10},A,x,x,train,w{i % distinct}.wav" for i in range(n)]
    path = folder / f"mel{n}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def rss(tmp: Path, base: int, root: Path, label: str) -> dict:
    env = {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    erc = [sys.executable, "-m", "erc.cli"]
    out: dict = {"code": label}
    for scale in (10, 100):
        n = base * scale
        manifest = mel_manifest(tmp / "mel", n)
        args = ["--dataset", "manifest", "--root", str(manifest), "--text", "none", "--audio", "mel", "--video", "none",
                "--quiet", "--device", "cpu"]
        wall, mb = peak_rss(erc + ["extract", *args, "--out", str(tmp / f"{label}-mel{n}.h5")], env)
        row = {"utterances": n, "extract_s": round(wall, 1), "extract_peak_rss_mb": round(mb, 1)}
        if label == "this":
            parts = [tmp / f"mel{n}.part{k}.h5" for k in (1, 2)]
            for k, p in enumerate(parts, 1):
                peak_rss(erc + ["extract", *args, "--shard", f"{k}/2", "--out", str(p)], env)
            wall, mb = peak_rss(erc + ["cache", "merge", str(tmp / f"merged{n}.h5"), *map(str, parts)], env)
            row.update(merge_s=round(wall, 1), merge_peak_rss_mb=round(mb, 1))
        out[f"x{scale}"] = row
        print(f"rss {label} x{scale} ({n} utts): {row}", flush=True)
    out["extract_ratio_100x_10x"] = round(out["x100"]["extract_peak_rss_mb"] / out["x10"]["extract_peak_rss_mb"], 3)
    if label == "this":
        out["merge_ratio_100x_10x"] = round(out["x100"]["merge_peak_rss_mb"] / out["x10"]["merge_peak_rss_mb"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="speedup,commit,rss")
    ap.add_argument("--utterances", type=int, default=4000, help="text utterances for the speed-up")
    ap.add_argument("--big-gb", type=float, default=2.0, help="size of the large frames group")
    ap.add_argument("--mel-base", type=int, default=60, help="rss runs use 10x and 100x this many utterances")
    ap.add_argument("--baseline-root", type=Path, default=None, help="another erc checkout for a rss comparison")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    parts = set(args.parts.split(","))
    result: dict = {"benchmark": "extract_scale", "machine": f"{platform.machine()} {os.cpu_count()} cores",
                    "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        if "speedup" in parts:
            result["speedup"] = speedup(tmp, args.utterances)
        if "commit" in parts:
            result["commit"] = commit(tmp, args.big_gb)
        if "rss" in parts:
            result["rss"] = rss(tmp, args.mel_base, ROOT, "this")
            if args.baseline_root:
                result["rss_baseline"] = rss(tmp, args.mel_base, args.baseline_root.resolve(), "baseline")
    targets = {}
    if "speedup" in result:
        targets["speedup_ge_1_7x"] = result["speedup"]["speedup_extract"] >= 1.7
        targets["speedup_after_load_ge_1_7x"] = result["speedup"]["speedup_after_load"] >= 1.7
    if "commit" in result:
        targets["commit_bytes_within_10pct_of_the_group"] = result["commit"]["bytes_ratio_vs_group_file"] <= 1.10
        targets["commit_time_within_10pct_of_once"] = result["commit"]["time_ratio_vs_once"] <= 1.10
    if "rss" in result:
        targets["extract_rss_flat_within_20pct"] = result["rss"]["extract_ratio_100x_10x"] <= 1.20
        targets["merge_rss_flat_within_20pct"] = result["rss"]["merge_ratio_100x_10x"] <= 1.20
    result["targets"] = targets
    result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
