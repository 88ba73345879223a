"""Train one head on one cache's dialogues: AdamW, model selection on dev weighted F1, test scored
once at the best-dev checkpoint. What a run folder holds and when a run counts as done is
:mod:`erc.train.runs`; the options are :class:`erc.train.config.TrainConfig`.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress

from erc.config import config_hash
from erc.errors import ErcWarning, UserError
from erc.features.atomic import write_atomic
from erc.features.reader import FeatureCache
from erc.features.source import FeatureSource
from erc.heads import cpu
from erc.heads.base import Head
from erc.heads.registry import HeadSpec
from erc.train.config import TrainConfig
from erc.train.dialogues import DialogueData, resolve_encoders
from erc.train.finite import Diverged, check_predictions, check_step, grad_norm
from erc.train.folds import FoldSpec
from erc.train.inference import prediction_frame, split_probs
from erc.train.leaks import check_data, dev_warning
from erc.train.metrics import classification_metrics, weighted_f1
from erc.train.predictions import write_predictions
from erc.train.progress import progress_bar
from erc.train.runs import (config_dict, is_done, lock_run_dir, mark_done, mark_failed, read_json, refuse_other_run,
                            run_identity, start_run_dir, write_json)


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


def load_data(cache: str | Path | FeatureSource, spec: HeadSpec, modalities: Mapping[str, str | None] | Sequence[str],
              cfg: TrainConfig | None = None, folds: FoldSpec | None = None) -> DialogueData:
    """Read what ``spec`` needs from a cache once: the chosen modalities' encoder groups, the frames the
    head asks for (truncated to ``cfg.max_frames``), splits with a dev set (``cfg.dev_fraction`` of the
    train dialogues when the cache has none) or the splits of fold ``folds``.

    modalities: modality -> encoder group (None = the cache's first), or a list of modalities.
    """
    cfg = cfg or TrainConfig()
    own = isinstance(cache, (str, Path))
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


def mamba_backends(module: torch.nn.Module) -> list[str]:
    """The distinct ``backend`` attributes of submodules (e.g. which Mamba implementation ran)."""
    found = {str(b) for m in module.modules() if (b := getattr(m, "backend", None)) is not None}
    return sorted(found)


def train_run(data: DialogueData, spec: HeadSpec, train_cfg: TrainConfig | None = None,
              out_dir: str | Path = "runs/run", progress: Progress | None = None) -> RunResult:
    """Train ``spec``'s head on ``data`` (from :func:`load_data`) and write a run folder
    (:mod:`erc.train.runs`). Returns the dev-selected result; test is scored once, at the best-dev
    checkpoint. A finished run of the same identity in ``out_dir`` is not trained again.
    """
    cfg = train_cfg or TrainConfig()
    out = Path(out_dir)
    check_data(data)  # no test utterance whose label a fine-tuned encoder in use saw (erc.train.leaks)
    frames = spec.frames_for(list(data.encoders))
    if list(data.frames) != frames:
        raise ValueError(f"the data holds frames of {list(data.frames)}, {spec.name} needs {frames}: load it for this head")
    identity = run_identity(spec, cfg, data)
    chash = config_hash(identity)
    if (done := _finished(out, chash)) is not None:
        return done
    refuse_other_run(out, chash, cfg.overwrite)
    check_trainable(data)
    with lock_run_dir(out):  # a second writer of this folder stops here, naming this process
        if (done := _finished(out, chash)) is not None:  # finished by another process meanwhile
            return done
        return _train_new(data, spec, cfg, out, identity, chash, progress)


def _finished(out: Path, chash: str) -> RunResult | None:
    """The result of the finished run of identity ``chash`` in ``out``, or None (also when its
    ``metrics.json`` is missing or damaged: the run is trained again)."""
    if not is_done(out, chash):
        return None
    try:
        m = read_json(out / "metrics.json")
        return RunResult(out, chash, int(m["best_epoch"]), dict(m["dev"]), m.get("test"), skipped=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_trainable(data: DialogueData) -> None:
    """UserError unless the data hold labelled train and dev utterances (a label outside the
    cache's label list counts as none)."""
    if len(data.dataset("train")) == 0 or len(data.utterances_in("dev")) == 0:
        raise UserError(f"{data.cache_path} leaves no train or dev utterances for this run")
    known = set(data.labels)
    foreign = [(u, v) for u, v in zip(data.utterance_ids, data.label_names) if v and v not in known]
    if foreign:
        examples = ", ".join(f"{u} ({v!r})" for u, v in foreign[:3])
        raise UserError(f"{data.cache_path} has {len(foreign)} utterance(s) whose label is not in its label list "
                        f"({', '.join(data.labels) or 'empty'}), e.g. {examples}: re-extract the cache from a "
                        "manifest whose labels agree")
    for split in ("train", "dev"):
        if int(data.label_counts(split).sum()) == 0:
            raise UserError(f"{data.cache_path} has no {split} utterance with a label in its label list "
                            f"({', '.join(data.labels) or 'empty'}): nothing to {'train' if split == 'train' else 'select'} on")


def _train_new(data: DialogueData, spec: HeadSpec, cfg: TrainConfig, out: Path, identity: dict[str, Any], chash: str,
               progress: Progress | None) -> RunResult:
    """Train a run that the folder ``out`` (locked) does not hold finished."""
    start_run_dir(out)

    device = cfg.torch_device()
    inputs = data.inputs()
    with _determinism(cfg.deterministic), _threads(cfg.num_threads):
        seed_everything(cfg.seed)
        head = spec.build(inputs).to(device)
        config = {**identity, "head_config": config_dict(head.config), "overrides": spec.overrides,
                  "config_hash": chash, "inputs": asdict(inputs), "labels": data.labels, "modalities": list(data.encoders),
                  "run_dir": str(out), "device": str(device), "head_resolved": head.resolved,
                  "warnings": list(head.warnings) + [w for w in [dev_warning(data)] if w]}
        for w in config["warnings"]:
            warnings.warn(w, ErcWarning, stacklevel=2)
        write_json(out / "config.json", config)
        write_json(out / "provenance.json", data.provenance())
        where = f"{spec.name}/{spec.variant} seed {cfg.seed} in {out}"
        try:
            result = _fit(head, data, cfg, device, out, config, progress)
        except Diverged as e:
            mark_failed(out, f"{e} ({where})")
            raise Diverged(f"{e} ({where}); no result was written: lower --lr, or check the cache "
                           "with `erc cache verify`") from None
        except UserError as e:  # e.g. a kernel folder refused mid-run: the folder says why it has no result
            mark_failed(out, f"{e} ({where})")
            raise
    mark_done(out)
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
            dev = split_probs(head, data, "dev", device, cfg.eval_batch_size)
            check_predictions(dev.probs, "dev", epoch)
            y = data.y.numpy()[dev.rows]
            ok = y >= 0
            pred = dev.probs[ok].argmax(1)
            dev_f1 = weighted_f1(y[ok], pred)
            dev_acc = float((pred == y[ok]).mean()) if ok.any() else float("nan")
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
    frames = []
    for split in ("dev", "test"):
        got = split_probs(head, data, split, device, cfg.eval_batch_size)
        y = data.y.numpy()[got.rows]
        ok = y >= 0
        scored[split] = classification_metrics(y[ok], got.probs[ok].argmax(1), data.labels) if len(got.rows) else None
        frames.append(prediction_frame(data, got, data.labels))
    write_predictions(pd.concat(frames, ignore_index=True), out / "predictions.csv")
    metrics = {"best_epoch": best_epoch, "epochs_run": len(rows_log), "selection": "best dev weighted_f1",
               "seed": cfg.seed, "head": config["head"], "variant": config["variant"], "modalities": config["modalities"],
               "mamba_backend": mamba_backends(head), "cpu_kernels": cpu.loaded(), "train_time_s": time.time() - t_start,
               "warnings": config["warnings"], "weights": head.resolved.get("weights"),
               "n_labelled": {split: int(data.label_counts(split).sum()) for split in ("train", "dev", "test")},
               "dev": scored["dev"], "test": scored["test"]}
    write_json(out / "metrics.json", metrics)
    return RunResult(out, config["config_hash"], best_epoch, scored["dev"], scored["test"], extra={"mamba_backend": metrics["mamba_backend"]})
