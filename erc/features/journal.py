"""The journal of an extraction in progress: one ``.npz`` shard per finished batch, crash-safe.

``<cache>.parts/<modality>__<encoder>/`` holds ``plan.json`` (the config hash and the batch plan)
and ``b<k>.npz`` for every finished batch ``k``. A shard is written to a temporary name and
renamed into place, so a killed run (Ctrl-C or ``kill -9``) loses at most the batch in flight
and never leaves a half-written shard that looks complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erc.features.atomic import write_atomic
from erc.features.schema import Encoded, parts_dir


@dataclass
class BatchResult:
    """One batch's results. ``rows`` are cache row indices; ``status`` is "ok" or
    "missing: why" / "failed: why" per row; ``encoded`` is None where the status is not ok."""

    rows: list[int]
    status: list[str]
    encoded: list[Encoded | None]


class ShardStore:
    """The shards of one encoder group."""

    def __init__(self, cache_path: Path, modality: str, encoder: str) -> None:
        self.dir = parts_dir(cache_path) / f"{modality}__{encoder}"

    def open(self, config_hash: str, plan: list[list[int]]) -> int:
        """Start or resume: keep the shards of an earlier run with the same config hash and plan,
        discard any other. Returns the number of batches already finished."""
        meta = {"config_hash": config_hash, "plan": plan}
        plan_file = self.dir / "plan.json"
        if plan_file.exists():
            try:
                old = json.loads(plan_file.read_text())
            except (OSError, ValueError):
                old = None
            if old != meta:
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not plan_file.exists():
            write_atomic(plan_file, json.dumps(meta))
        for stale in self.dir.glob("*.tmp*"):
            stale.unlink(missing_ok=True)
        return len(self.finished())

    def finished(self) -> set[int]:
        return {int(p.stem[1:]) for p in self.dir.glob("b*.npz")}

    def shard_path(self, batch: int) -> Path:
        return self.dir / f"b{batch:06d}.npz"

    def write(self, batch: int, result: BatchResult) -> None:
        ok = [e for e in result.encoded if e is not None]
        arrays: dict[str, np.ndarray] = {
            "rows": np.asarray(result.rows, dtype=np.int64),
            "status": np.asarray(json.dumps(result.status)),
            "ok": np.asarray([e is not None for e in result.encoded], dtype=bool),
        }
        if ok:
            arrays["pooled"] = np.stack([e.pooled for e in ok]).astype(np.float32)
            if ok[0].frames is not None:
                arrays["frame_lens"] = np.asarray([len(e.frames) for e in ok], dtype=np.int64)  # type: ignore[arg-type]
                arrays["frames"] = np.concatenate([e.frames for e in ok])  # type: ignore[misc]
            if ok[0].layers is not None:
                arrays["layers"] = np.stack([e.layers for e in ok]).astype(np.float32)  # type: ignore[misc]
        write_atomic(self.shard_path(batch), lambda f: np.savez(f, **arrays))

    def read_all(self) -> list[dict[str, np.ndarray]]:
        """Every finished shard's arrays, in batch order."""
        out = []
        for b in sorted(self.finished()):
            with np.load(self.shard_path(b)) as z:
                out.append({k: z[k] for k in z.files})
        return out

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        parent = self.dir.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
