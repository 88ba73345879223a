"""Trained runs read back: a finished run folder's head rebuilt from ``config.json`` and
``best.pt``, the runs a sweep folder holds, and the check that a cache matches the encoders and dims
a run was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from erc.errors import UserError
from erc.features.source import FeatureSource
from erc.heads.base import Head, HeadInputs
from erc.heads.registry import resolve_head
from erc.train.runs import read_json


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
    """Rebuild the head of a finished run from ``config.json`` and ``best.pt``. A damaged folder (a
    ``config.json`` that is not the run's JSON, a truncated or foreign ``best.pt``, a checkpoint
    holding objects ``weights_only`` refuses, weights of another head) is one UserError naming the
    file."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "best.pt"
    if not (run_dir / "config.json").exists() or not ckpt.exists():
        raise UserError(f"{run_dir} is not a finished run (no config.json / best.pt)")
    config = _read_run_json(run_dir / "config.json", required=("inputs", "head", "variant", "labels", "encoders"))
    prov = _read_run_json(run_dir / "provenance.json") if (run_dir / "provenance.json").exists() else {}
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=True)
        weights = state["state_dict"]
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, a pickle weights_only blocks, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{ckpt} cannot be read as a run's checkpoint ({type(e).__name__}: {first[:200]})") from None
    try:
        inputs = HeadInputs(**config["inputs"])
        head = resolve_head(config["head"], config["variant"], config.get("overrides", {})).build(inputs)
    except (TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{run_dir / 'config.json'} does not describe a head erc can build ({e})") from None
    try:
        head.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{ckpt} holds weights of another head than its config.json's {config['head']}/"
                        f"{config['variant']} ({first[:200]})") from None
    head.eval()
    return LoadedRun(head, config, prov, list(config["labels"]), dict(config["encoders"]), inputs)


def _read_run_json(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run folder's JSON object, or one UserError naming the file (not JSON, not an object, or a
    ``required`` key missing)."""
    try:
        obj = read_json(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); the run folder is damaged: train it again") from None
    if not isinstance(obj, dict) or any(k not in obj for k in required):
        missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
        raise UserError(f"{path} is not a run's {path.name} (missing {', '.join(missing) or 'an object'}); "
                        "the run folder is damaged: train it again")
    return obj


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


def check_compatible(run: LoadedRun, fc: FeatureSource) -> None:
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
