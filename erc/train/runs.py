"""The run-folder protocol: where a run lives, what makes two runs the same run, and the files
that say how it ended.

A run folder holds ``config.json`` (the identity, its hash and what the head resolved),
``provenance.json``, ``epochs.csv``, ``best.pt``, ``predictions.csv``, ``metrics.json`` and, written
last, ``done`` (or ``failed``: one line, when training diverged). A folder whose ``config.json``
carries the same identity hash and a ``done`` marker is a finished run of that configuration:
sweeps skip it, so they resume. A finished run of another identity is never replaced without
``overwrite``. While a run (or a sweep) writes a folder it holds ``<folder>/.lock``: a second writer
stops at once with one line naming the first one's pid.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from erc.config import config_hash, to_dict
from erc.errors import UserError
from erc.features.atomic import write_atomic
from erc.features.lock import CacheLock
from erc.heads.registry import HeadSpec
from erc.train.config import NOT_HASHED, TrainConfig

if TYPE_CHECKING:
    from erc.train.dialogues import DialogueData

DONE = "done"
FAILED = "failed"  # written instead of DONE when training diverged: the reason, one line
SHORT = {"text": "t", "audio": "a", "video": "v"}


def short_modalities(modalities: Mapping[str, Any] | list[str], sep: str = "") -> str:
    """Modality names as their one-letter codes, e.g. ``["text", "audio"]`` -> ``"ta"`` (``sep=","``:
    ``"t,a"``); names without a code are kept whole."""
    return sep.join(SHORT.get(m, m) for m in modalities)


def default_run_dir(dataset: str, model: str, variant: str, modalities: Mapping[str, str | None],
                    overrides: Mapping[str, str], root: Path | None = None) -> Path:
    """``<root>/<model>-<variant>-<tav>`` (root: ``runs/<dataset>``), + a hash of the head overrides
    and chosen encoders when there are any: where ``erc train-head`` and ``erc ablate`` put a run."""
    name = f"{model}-{variant}-{short_modalities(modalities)}"
    chosen = {m: e for m, e in modalities.items() if e}
    if overrides or chosen:
        name += "-" + config_hash({"set": dict(overrides), "encoders": chosen})[:6]
    return (root if root is not None else Path("runs") / dataset) / name


def run_identity(spec: HeadSpec, cfg: TrainConfig, data: DialogueData) -> dict[str, Any]:
    """What makes a run this run: the head, variant and config, the training options that change
    the result, the encoder groups and frames read, the folds, and the cache's manifest, labels and
    group configs. Its :func:`erc.config.config_hash` names the run in ``config.json``."""
    prov = data.provenance()
    return {"head": spec.name, "variant": spec.variant, "head_config": config_dict(spec.config),
            "train": {k: v for k, v in asdict(cfg).items() if k not in NOT_HASHED},
            "encoders": data.encoders, "frames": list(data.frames), "folds": asdict(data.folds) if data.folds else None,
            "cache": {"manifest_hash": prov["cache_attrs"].get("manifest_hash"), "labels": data.labels,
                      "groups": {m: g["attrs"].get("config_hash") for m, g in prov["groups"].items()}}}


def config_dict(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


# ---- files ------------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def is_done(run_dir: Path, identity_hash: str) -> bool:
    """A finished run of exactly this identity lives in ``run_dir``."""
    cfg = run_dir / "config.json"
    if not (run_dir / DONE).exists() or not cfg.exists():
        return False
    try:
        return read_json(cfg).get("config_hash") == identity_hash
    except (OSError, ValueError):
        return False


LOCK = ".lock"


def lock_run_dir(run_dir: Path) -> CacheLock:
    """Hold ``run_dir`` for writing (``with lock_run_dir(d): ...``): UserError naming the pid that
    holds it already. The folder is created; the kernel frees the lock if the holder dies."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return CacheLock(run_dir, run_dir / LOCK).acquire()


def refuse_other_run(run_dir: Path, identity_hash: str, overwrite: bool) -> None:
    """UserError when ``run_dir`` holds a finished run of another identity (unless ``overwrite``):
    a new run there would replace its result without a word."""
    if overwrite or not (run_dir / DONE).exists() or is_done(run_dir, identity_hash):
        return
    try:
        old = read_json(run_dir / "config.json")
        what = f"{old.get('head', '?')}/{old.get('variant', '?')}, config {str(old.get('config_hash', '?'))[:10]}"
    except (OSError, ValueError, AttributeError):
        what = "an unreadable config.json"
    raise UserError(f"{run_dir} holds a finished run of another configuration ({what}); choose another --out, "
                    "or pass --overwrite to replace it")


def start_run_dir(run_dir: Path) -> None:
    """Make ``run_dir`` ready for a new run: the markers and metrics of an older run there are void."""
    for stale in (DONE, FAILED, "metrics.json"):
        (run_dir / stale).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def mark_done(run_dir: Path) -> None:
    write_atomic(run_dir / DONE, time.strftime("%Y-%m-%dT%H:%M:%S\n"))


def mark_failed(run_dir: Path, why: str) -> None:
    write_atomic(run_dir / FAILED, f"{why}\n")
