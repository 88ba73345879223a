"""Same seed, same numbers: two MaTAV runs of one seed give bit-identical weights and losses, whether
they run one after the other in one process (the second finds the C kernels already loaded and
the momentum queue code warm) or in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.synth_cache import write_synthetic_cache

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
from pathlib import Path
from erc.train.config import TrainConfig
from tests.train_utils import fit

cache, out, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
tiny = {"dim": "16", "hidden": "16", "fusion_layers": "2", "fusion_heads": "2", "queue_size": "48",
        "mamba_layers": "1", "bidirectional": "true"}
cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, patience=0, device="cpu", num_threads=threads, quiet=True, seed=1)
for name in sys.argv[4:]:
    fit(cache, "matav", ["t", "a", "v"], tiny, "full", cfg, out / name)
"""


def _train(cache: Path, out: Path, threads: int, *names: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", SCRIPT, str(cache), str(out), str(threads), *names], cwd=ROOT, env=env,
                   check=True, timeout=600)


def _same_run(a: Path, b: Path) -> None:
    sa = torch.load(a / "best.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "best.pt", weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs between {a.name} and {b.name}"
    ea, eb = (pd.read_csv(p / "epochs.csv").drop(columns="time_s") for p in (a, b))
    pd.testing.assert_frame_equal(ea, eb, check_exact=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_two_matav_runs_of_one_seed_are_bit_identical(tmp_path: Path, threads: int) -> None:
    cache = write_synthetic_cache(tmp_path / "c.h5", n_dialogues=16, lengths=(3, 9), seed=2, missing_rate=0.1)
    _train(cache, tmp_path, threads, "first", "again")  # one process, one after the other
    _train(cache, tmp_path, threads, "fresh")  # a new process
    assert (tmp_path / "first" / "done").exists()
    metrics = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert set(metrics["cpu_kernels"]) <= {"selective_scan", "token_attention"}  # which C kernels ran is recorded
    _same_run(tmp_path / "first", tmp_path / "again")
    _same_run(tmp_path / "first", tmp_path / "fresh")
