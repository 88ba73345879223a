"""How close a head's training epoch is to this CPU's matrix-multiply speed (a roofline check).

    .venv/bin/python benchmarks/roofline.py [--heads matav,gru@64] [--precision fp32|bf16|both] [--epochs 3]

On the IEMOCAP-sized synthetic cache of ``train_speed.py``, for each head and precision:

1. counts the floating-point operations of one training epoch (forward + backward) in matrix
   products (``torch.utils.flop_counter.FlopCounterMode``: mm / addmm / bmm / convolutions; the C
   kernels and elementwise work are not counted, so this is a lower bound of the work);
2. times ``--epochs`` epochs through the real ``train_epoch`` (median);
3. measures the GEMM rate this CPU sustains, with PyTorch, on the products that dominate the
   count (their shapes are recorded during step 1; each timed for about 0.3 s);

and prints GFLOP per epoch, the epoch's achieved GFLOP/s, and the floor = counted GFLOP / GEMM
rate: no implementation of the same model on this machine trains an epoch faster than that with
PyTorch's GEMMs. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from train_speed import HeadBench, build_cache  # noqa: E402

from erc.train.loop import train_epoch  # noqa: E402

GEMM_OPS = {"mm", "addmm", "bmm", "baddbmm"}


class ShapeRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the (M, K, N) of every 2-D product (mm / addmm) run while active, with its FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Counter[tuple[int, int, int, str]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            m, k = a.shape
            n = b.shape[1]
            self.flops[(m, k, n, str(a.dtype).replace("torch.", ""))] += 2 * m * k * n
        return func(*args, **(kwargs or {}))


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.3) -> float:
    """Sustained GFLOP/s of ``[m, k] @ [k, n]`` in ``dtype`` on this CPU (best of 3 runs)."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    reps = max(1, int(seconds / max(1e-4, _time(lambda: torch.mm(a, b)))))
    best = min(_time(lambda: [torch.mm(a, b) for _ in range(reps)]) for _ in range(3)) / reps
    return 2 * m * k * n / best / 1e9


def _time(fn) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(cache: Path, spec: str, precision: str, epochs: int) -> dict:
    name, _, batch = spec.partition("@")
    bench = HeadBench(cache, spec, name, int(batch) if batch else None, torch.device("cpu"), precision)
    bench.epoch(warmup=True)
    bench.epoch(warmup=True)
    with FlopCounterMode(display=False) as counter:
        with ShapeRecorder() as shapes:
            train_epoch(bench.head, bench.data, bench.opt, bench.cfg, bench.device, None, bench.gen)
    total = counter.get_total_flops()
    by_op = {str(k.__name__ if hasattr(k, "__name__") else k): v
             for k, v in counter.get_flop_counts().get("Global", {}).items()}
    for _ in range(epochs):
        bench.epoch(warmup=False)
    epoch_s = statistics.median(bench.epoch_s)
    # the GEMM rate on the shapes that hold 90 % of the 2-D product FLOPs, weighted by their FLOPs
    top, covered, all2d = [], 0, sum(shapes.flops.values())
    for key, f in shapes.flops.most_common():
        top.append((key, f))
        covered += f
        if covered >= 0.9 * all2d or len(top) >= 8:
            break
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    secs = sum(f / (gemm_rate(m, k, n, dtypes.get(dt, torch.float32)) * 1e9) for (m, k, n, dt), f in top)
    rate = covered / secs / 1e9
    floor_s = total / (rate * 1e9)
    return {"head": spec, "precision": precision, "gflop_per_epoch": round(total / 1e9, 1),
            "gflop_by_op": {k: round(v / 1e9, 1) for k, v in by_op.items()},
            "epoch_s_median": round(epoch_s, 3), "achieved_gflops": round(total / 1e9 / epoch_s, 1),
            "gemm_gflops_on_its_shapes": round(rate, 1), "gemm_floor_s": round(floor_s, 3),
            "floor_share_of_epoch": round(floor_s / epoch_s, 3),
            "top_shapes": [{"m": m, "k": k, "n": n, "dtype": dt, "gflop": round(f / 1e9, 2)}
                           for (m, k, n, dt), f in top]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", default="matav,gru@64")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(Path(tmp) / "iemocap_like.h5", frames=False)
        for precision in precisions:
            for spec in args.heads.split(","):
                r = measure(cache, spec, precision, args.epochs)
                results.append(r)
                print(f"{spec:10s} {precision}: {r['gflop_per_epoch']:7.1f} GFLOP/epoch in matrix products, "
                      f"epoch {r['epoch_s_median']:.2f} s = {r['achieved_gflops']:.0f} GFLOP/s; PyTorch's GEMM "
                      f"on its shapes {r['gemm_gflops_on_its_shapes']:.0f} GFLOP/s -> floor "
                      f"{r['gemm_floor_s']:.2f} s ({100 * r['floor_share_of_epoch']:.0f} % of the epoch)", flush=True)
    print(json.dumps({"benchmark": "roofline", "torch": torch.__version__, "threads": args.threads,
                      "results": results}))


if __name__ == "__main__":
    main()
