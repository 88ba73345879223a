"""Train one head on one cache's dialogues: AdamW, model selection on dev weighted F1, test scored once.

A run directory holds ``config.json``, ``provenance.json``, ``epochs.csv``, ``metrics.json``,
``predictions.csv``, ``best.pt`` and, written last, ``done``. A directory whose ``config.json``
has the same config hash and a ``done`` marker is skipped (sweeps resume).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress

from erc.config import Fraction, NonNegative, NonNegativeFloat, Positive, PositiveFloat, check_config, config_hash
from erc.errors import UserError
from erc.features.atomic import write_atomic
from erc.features.reader import FeatureCache
from erc.heads import cpu
from erc.heads.base import Head
from erc.heads.registry import HeadSpec
from erc.train.dialogues import DialogueData, resolve_encoders
from erc.train.finite import Diverged, check_predictions, check_step, grad_norm
from erc.train.folds import FoldSpec
from erc.train.metrics import classification_metrics, weighted_f1
from erc.train.progress import progress_bar
from erc.train.runs import DONE, FAILED, config_dict, is_done, mamba_backends, read_json, write_json

NOT_HASHED = ("device", "num_threads", "quiet", "eval_batch_size")
# the command-line flag of each TrainConfig field, for error messages
FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "patience": "--patience",
         "num_threads": "--threads", "max_frames": "--max-frames", "device": "--device", "precision": "--precision"}
DEVICES = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class TrainConfig:
    """Optimisation and selection settings (batch_size counts dialogues)."""

    epochs: Positive = 100
    batch_size: Positive = 16
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 1e-5
    patience: NonNegative = 20  # epochs without a better dev weighted F1 before stopping; 0 = never stop
    class_weights: bool = False  # inverse-frequency class weights in the cross-entropy
    grad_clip: NonNegativeFloat = 1.0  # max grad norm; 0 = off
    seed: NonNegative = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: Positive | None = None
    dev_fraction: Fraction = 0.1  # share of train dialogues carved into dev when the cache has no dev
    max_frames: Positive | None = None  # truncate frame sequences to this many frames
    eval_batch_size: Positive = 64
    precision: Literal["fp32", "bf16"] = "fp32"  # autocast of the training forward; evaluation stays fp32
    quiet: bool = False

    def __post_init__(self) -> None:
        """Every value checked on construction (erc.config's rules; CLI flags named in errors)."""
        check_config(self, lambda key: FLAGS.get(key, f"train option {key}"))
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"--precision must be fp32 or bf16; got {self.precision!r}")
        if not DEVICES.fullmatch(str(self.device)):
            raise UserError(f"--device must be auto, cpu, cuda or cuda:N; got {self.device!r}")

    @classmethod
    def for_head(cls, head: type[Head], **given: Any) -> TrainConfig:
        """Options the user gave (None = not given) > the head's ``train_defaults`` (its paper's) >
        these defaults."""
        known = {f for f in cls.__dataclass_fields__}
        defaults = {k: v for k, v in (getattr(head, "train_defaults", None) or {}).items() if k in known}
        return cls(**{**defaults, **{k: v for k, v in given.items() if v is not None}})


@dataclass
class RunResult:
    """What one run produced. Metrics are dicts of :func:`classification_metrics`."""

    run_dir: Path
    config_hash: str
    best_epoch: int
    dev: dict[str, Any]
    test: dict[str, Any] | None
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


@contextlib.contextmanager
def _determinism(on: bool) -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(ids: Sequence[int], size: int, gen: torch.Generator | None) -> Iterator[list[int]]:
    order = torch.randperm(len(ids), generator=gen).tolist() if gen is not None else range(len(ids))
    ids = [ids[i] for i in order]
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


@torch.no_grad()
def predict(head: Head, data: DialogueData, split: str, device: torch.device, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for the utterances assigned to ``split``: ``(rows [n], probs [n, C])``."""
    head.eval()
    ds = data.dataset(split)
    rows, probs = [], []
    for ids in _batches(ds.dialogues, batch_size, None):
        batch = ds.collate(ids)
        out = head(batch.to(device))
        keep = batch.mask.reshape(-1)
        rows.append(batch.index.reshape(-1)[keep])
        probs.append(out.logits.float().softmax(-1).reshape(-1, out.logits.shape[-1])[keep.to(device)].cpu())
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(data.labels)), dtype=np.float32)
    r, p = torch.cat(rows).numpy(), torch.cat(probs).numpy()
    in_split = data.split_of[r] == split
    return r[in_split], p[in_split]


def _score(data: DialogueData, rows: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    y = data.y.numpy()[rows]
    ok = y >= 0
    return classification_metrics(y[ok], probs[ok].argmax(1), data.labels)


def train_epoch(head: Head, data: DialogueData, opt: torch.optim.Optimizer, cfg: TrainConfig, device: torch.device,
                 weight: torch.Tensor | None, gen: torch.Generator, epoch: int = 1) -> dict[str, float]:
    """One pass over the train dialogues. A non-finite loss or gradient raises
    :class:`~erc.train.finite.Diverged` (naming ``epoch`` and the step) before the update."""
    head.train()
    ds = data.dataset("train")
    sums: dict[str, float] = {}
    n = 0
    steps = -(-len(ds.dialogues) // cfg.batch_size)
    for step, ids in enumerate(_batches(ds.dialogues, cfg.batch_size, gen), start=1):
        batch = ds.collate(ids).to(device)
        if not bool((batch.labels >= 0).any()):
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            out = head(batch)
        ce = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]).float(), batch.labels.reshape(-1), weight=weight, ignore_index=-100)
        loss = ce + out.aux_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        check_step(loss, grad_norm(head.parameters(), cfg.grad_clip), epoch, step, steps)
        opt.step()
        head.after_step()
        parts = {"train_loss": float(loss.detach()), "train_ce": float(ce.detach()),
                 **{f"train_{k}": float(v) for k, v in out.parts.items()}}
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
    return {k: v / max(n, 1) for k, v in sums.items()}


def load_data(cache: str | Path | FeatureCache, spec: HeadSpec, modalities: Mapping[str, str | None] | Sequence[str],
              cfg: TrainConfig | None = None, folds: FoldSpec | None = None) -> DialogueData:
    """Read what ``spec`` needs from a cache once: the chosen modalities' encoder groups, the frames the
    head asks for (truncated to ``cfg.max_frames``), splits with a dev set (``cfg.dev_fraction`` of the
    train dialogues when the cache has none) or the splits of fold ``folds``.

    modalities: modality -> encoder group (None = the cache's first), or a list of modalities.
    """
    cfg = cfg or TrainConfig()
    own = not isinstance(cache, FeatureCache)
    fc = FeatureCache(cache) if own else cache
    try:
        encoders = resolve_encoders(fc, modalities)
        data = DialogueData(fc, encoders, spec.frames_for(list(encoders)), cfg.max_frames, folds, cfg.dev_fraction)
    finally:
        if own:
            fc.close()
    for m, present in data.present.items():  # a modality of zeros would train without a word
        if len(present) and not bool(present.any()):
            raise UserError(f"{data.cache_path} {m}/{data.encoders[m]} has features for none of its {len(present)} "
                            f"utterances (`erc cache info {data.cache_path}` says why); leave {m} out of --modalities")
    return data


def train_run(data: DialogueData, spec: HeadSpec, train_cfg: TrainConfig | None = None,
              out_dir: str | Path = "runs/run", progress: Progress | None = None) -> RunResult:
    """Train ``spec``'s head on ``data`` (from :func:`load_data`) and write a run directory (see the
    module docstring). Returns the dev-selected result; test is scored once, at the best-dev
    checkpoint. A finished run of the same configuration in ``out_dir`` is not trained again.
    """
    cfg = train_cfg or TrainConfig()
    out = Path(out_dir)
    encoders = data.encoders
    frames = spec.frames_for(list(encoders))
    if list(data.frames) != frames:
        raise ValueError(f"the data holds frames of {list(data.frames)}, {spec.name} needs {frames}: load it for this head")
    prov = data.provenance()
    inputs = data.inputs()
    train_dict = {k: v for k, v in asdict(cfg).items() if k not in NOT_HASHED}
    identity = {"head": spec.name, "variant": spec.variant, "head_config": config_dict(spec.config), "train": train_dict,
                "encoders": encoders, "frames": list(frames), "folds": asdict(data.folds) if data.folds else None,
                "cache": {"manifest_hash": prov["cache_attrs"].get("manifest_hash"), "labels": data.labels,
                          "groups": {m: g["attrs"].get("config_hash") for m, g in prov["groups"].items()}}}
    chash = config_hash(identity)
    if is_done(out, chash):
        m = read_json(out / "metrics.json")
        return RunResult(out, chash, m["best_epoch"], m["dev"], m.get("test"), skipped=True)
    if len(data.dataset("train")) == 0 or len(data.utterances_in("dev")) == 0:
        raise UserError(f"{data.cache_path} leaves no train or dev utterances for this run")
    for stale in (DONE, FAILED, "metrics.json"):  # a new run of this folder: the old result is void
        (out / stale).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    device = pick_device(cfg.device)
    with _determinism(cfg.deterministic), _threads(cfg.num_threads):
        seed_everything(cfg.seed)
        head = spec.build(inputs).to(device)
        config = {**identity, "head_config": config_dict(getattr(head, "config", spec.config)), "overrides": spec.overrides,
                  "config_hash": chash, "inputs": asdict(inputs), "labels": data.labels, "modalities": list(encoders),
                  "run_dir": str(out), "device": str(device),
                  "head_resolved": getattr(head, "resolved", {}), "warnings": list(getattr(head, "warnings", []))}
        for w in config["warnings"]:
            warnings.warn(w, stacklevel=2)
        write_json(out / "config.json", config)
        write_json(out / "provenance.json", prov)
        try:
            result = _fit(head, data, cfg, device, out, config, progress)
        except Diverged as e:
            where = f"{spec.name}/{spec.variant} seed {cfg.seed} in {out}"
            write_atomic(out / FAILED, f"{e} ({where})\n")
            raise Diverged(f"{e} ({where}); no result was written: lower --lr, or check the cache "
                           "with `erc cache verify`") from None
    write_atomic(out / DONE, time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return result


def _fit(head: Head, data: DialogueData, cfg: TrainConfig, device: torch.device, out: Path, config: dict[str, Any],
         progress: Progress | None) -> RunResult:
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = None
    if cfg.class_weights:
        counts = data.label_counts("train").float()
        weight = (counts.sum() / (len(counts) * counts.clamp(min=1))).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows_log: list[dict[str, float]] = []
    best, best_epoch, best_state, stale = -1.0, 0, None, 0
    own = progress is None
    prog = progress_bar(cfg.quiet) if own else progress
    t_start = time.time()
    with prog if own else contextlib.nullcontext():
        task = prog.add_task(f"{config['head'].split(':')[-1]}/{config['variant']} seed {cfg.seed}", total=cfg.epochs, info="")
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.time()
            log = train_epoch(head, data, opt, cfg, device, weight, gen, epoch)
            rows, probs = predict(head, data, "dev", device, cfg.eval_batch_size)
            check_predictions(probs, "dev", epoch)
            y = data.y.numpy()[rows]
            ok = y >= 0
            dev_f1 = weighted_f1(y[ok], probs[ok].argmax(1))
            dev_acc = float((probs[ok].argmax(1) == y[ok]).mean()) if ok.any() else float("nan")
            rows_log.append({"epoch": epoch, **log, "dev_weighted_f1": dev_f1, "dev_accuracy": dev_acc, "time_s": time.time() - t0})
            if dev_f1 > best:
                best, best_epoch, stale = dev_f1, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
            else:
                stale += 1
            prog.update(task, advance=1, info=f"loss {log.get('train_loss', float('nan')):.3f} dev W-F1 {dev_f1 * 100:.2f} (best {best * 100:.2f} @ {best_epoch})")
            if cfg.patience and stale >= cfg.patience:
                break
        prog.update(task, total=len(rows_log))
    pd.DataFrame(rows_log).to_csv(out / "epochs.csv", index=False)
    assert best_state is not None
    head.load_state_dict(best_state)
    write_atomic(out / "best.pt", lambda f: torch.save({"state_dict": best_state, "config": config}, f))

    scored: dict[str, Any] = {}
    preds = []
    for split in ("dev", "test"):
        rows, probs = predict(head, data, split, device, cfg.eval_batch_size)
        scored[split] = _score(data, rows, probs) if len(rows) else None
        preds.append(_prediction_frame(data, split, rows, probs))
    pd.concat(preds).to_csv(out / "predictions.csv", index=False)
    metrics = {"best_epoch": best_epoch, "epochs_run": len(rows_log), "selection": "best dev weighted_f1",
               "seed": cfg.seed, "head": config["head"], "variant": config["variant"], "modalities": config["modalities"],
               "mamba_backend": mamba_backends(head), "cpu_kernels": cpu.loaded(), "train_time_s": time.time() - t_start,
               "warnings": config.get("warnings", []),
               "dev": scored["dev"], "test": scored["test"]}
    write_json(out / "metrics.json", metrics)
    return RunResult(out, config["config_hash"], best_epoch, scored["dev"], scored["test"], extra={"mamba_backend": metrics["mamba_backend"]})


def _prediction_frame(data: DialogueData, split: str, rows: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({
        "utterance_id": [data.utterance_ids[r] for r in rows],
        "dialogue_id": [data.dialogue_names[c] for c in data.dialogue_codes[rows]],
        "split": split,
        "label": [data.label_names[r] for r in rows],
        "pred": [data.labels[i] for i in probs.argmax(1)] if len(rows) else [],
    })
    for i, name in enumerate(data.labels):
        df[f"p_{name}"] = np.round(probs[:, i], 6) if len(rows) else []
    return df
