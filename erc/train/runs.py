"""Run directories: their JSON files, the ``done`` marker, and reloading a trained head with a
check that a cache matches the encoders and dims it was trained on."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from erc.config import to_dict
from erc.errors import UserError
from erc.features.atomic import write_atomic
from erc.features.reader import FeatureCache
from erc.heads.base import Head, HeadInputs
from erc.heads.registry import resolve_head

DONE = "done"
FAILED = "failed"  # written instead of DONE when training diverged: the reason, one line


def mamba_backends(module: torch.nn.Module) -> list[str]:
    """The distinct ``backend`` attributes of submodules (e.g. which Mamba implementation ran)."""
    found = {str(b) for m in module.modules() if (b := getattr(m, "backend", None)) is not None}
    return sorted(found)


# ---- files ------------------------------------------------------------------------------------
def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def is_done(run_dir: Path, config_hash: str) -> bool:
    """A finished run of exactly this configuration lives in ``run_dir``."""
    cfg = run_dir / "config.json"
    if not (run_dir / DONE).exists() or not cfg.exists():
        return False
    try:
        return read_json(cfg).get("config_hash") == config_hash
    except (OSError, ValueError):
        return False


def config_dict(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


# ---- reloading ----------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    """A trained head, in eval mode, with what it was trained on."""

    head: Head
    config: dict[str, Any]
    provenance: dict[str, Any]
    labels: list[str]
    encoders: dict[str, str]
    inputs: HeadInputs


def load_run(run_dir: str | Path, map_location: str = "cpu") -> LoadedRun:
    """Rebuild the head of a finished run from ``config.json`` and ``best.pt``."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "best.pt"
    if not (run_dir / "config.json").exists() or not ckpt.exists():
        raise UserError(f"{run_dir} is not a finished run (no config.json / best.pt)")
    config = read_json(run_dir / "config.json")
    prov = read_json(run_dir / "provenance.json") if (run_dir / "provenance.json").exists() else {}
    state = torch.load(ckpt, map_location=map_location, weights_only=True)
    inputs = HeadInputs(**config["inputs"])
    head = resolve_head(config["head"], config["variant"], config.get("overrides", {})).build(inputs)
    head.load_state_dict(state["state_dict"])
    head.eval()
    return LoadedRun(head, config, prov, list(config["labels"]), dict(config["encoders"]), inputs)


def run_members(path: str | Path) -> list[Path]:
    """The finished runs that ``path`` names: itself when it holds ``best.pt``, else the finished
    ``seed<k>`` / ``fold<k>`` runs of a sweep folder (``seed<s>/fold<k>`` nested), in order.
    UserError when there are none."""
    path = Path(path)
    if (path / "best.pt").exists():
        return [path]
    if not path.is_dir():
        raise UserError(f"--run {path} does not exist")

    def key(p: Path) -> tuple[str, int]:
        digits = p.name.lstrip("seedfold")
        return (p.name.rstrip("0123456789"), int(digits) if digits.isdigit() else -1)

    found: list[Path] = []
    for sub in sorted((p for p in path.iterdir() if p.is_dir() and p.name.startswith(("seed", "fold"))), key=key):
        if (sub / "best.pt").exists():
            found.append(sub)
        elif any(c.is_dir() and c.name.startswith("fold") for c in sub.iterdir()):
            found.extend(run_members(sub))
    if not found:
        raise UserError(f"{path} is not a finished run (no config.json / best.pt) nor a sweep folder of finished "
                        "runs (seed0..seedN holding best.pt)")
    return found


def check_compatible(run: LoadedRun, fc: FeatureCache) -> None:
    """Refuse a cache whose labels, encoders or dims differ from the run's (UserError). A cache
    without labels (unlabelled conversations) fits any run's labels."""
    where = f"run {run.config.get('run_dir', '?')}"
    if fc.labels and fc.labels != run.labels:
        raise UserError(f"{fc.path} has labels {fc.labels}, but {where} was trained on {run.labels}")
    for m, enc in run.encoders.items():
        if enc not in fc.encoders(m):
            have = ", ".join(fc.encoders(m)) or "none"
            raise UserError(f"{where} needs {m} features from encoder {enc!r}; {fc.path} has {m}: {have}")
        g = fc.group(m, enc)
        want = run.inputs.pooled_dims.get(m)
        if want is not None and g.dim != want:
            raise UserError(f"{fc.path} has {m}/{enc} of dim {g.dim}, but {where} was trained on dim {want}")
        fwant = run.inputs.frame_dims.get(m)
        if fwant is not None and g.frame_dim != fwant:
            raise UserError(f"{fc.path} has {m}/{enc} frames of dim {g.frame_dim}, but {where} was trained on {fwant}")
        kwant = run.inputs.frame_tokens.get(m, 1)
        if fwant is not None and g.frame_tokens != kwant:
            raise UserError(f"{fc.path} has {m}/{enc} frames of {g.frame_tokens} row(s) a step, but {where} was "
                            f"trained on {kwant} (e.g. patch tokens per video frame)")
        trained = run.provenance.get("groups", {}).get(m, {}).get("attrs", {}).get("config_hash")
        have_hash = g.attrs.get("config_hash")
        if trained and have_hash and trained != have_hash:
            raise UserError(f"{fc.path} has {m}/{enc} extracted with another encoder config ({have_hash}; run used {trained})")
