"""One fine-tuning (official split or one fold), and one per fold under ``out/fold<k>/``.

A finished folder holds the model (``from_pretrained``), its tokenizer / feature extractor and
``finetune.json`` (written last). An unfinished one holds ``checkpoints/`` (one per epoch) and
``checkpoints/erc_run.json`` (the config hash): the same command resumes from the last checkpoint;
another configuration is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from erc.config import config_hash
from erc.corpus import Corpus
from erc.errors import UserError, WeightsMissing
from erc.extract.encoders import build_encoder
from erc.extract.encoders.base import Encoder
from erc.extract.encoders.hf import HFWeights, resolve_weights
from erc.extract.finetuned import FINETUNE_JSON, read_record
from erc.extract.seen import labels_seen
from erc.finetune.config import FinetuneConfig
from erc.finetune.examples import AudioCollator, AudioExamples, TextExamples
from erc.finetune.pooled import TargetCollator, TargetMeanClassifier
from erc.finetune.record import weights_sha256, write_record
from erc.finetune.splits import HELD, SplitPlan, check_split_choice, crossfit_plans, plan_splits
from erc.finetune.trainer import METRIC, WeightedTrainer, class_weights, compute_metrics, dev_curve, training_args
from erc.features.atomic import write_atomic
from erc.train.runs import lock_run_dir

CHECKPOINTS = "checkpoints"
RUN_JSON = "erc_run.json"


@dataclass
class FinetuneResult:
    """``records``: the finetune.json of each fine-tuning (one, or one per fold); ``skipped``:
    the sub-runs that were already finished with this configuration."""

    out: Path
    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def window_encoder(modality: str, model: str, cfg: FinetuneConfig, download: bool = False) -> Encoder:
    """The extractor's encoder for ``model``: resolves the weights (offline unless ``download``,
    one-line errors) and builds the inputs (text window / audio segment) exactly as ``erc extract`` will."""
    if modality == "text":
        settings = {"context": str(cfg.context), "context_future": str(cfg.context_future),
                    "speaker_names": str(cfg.speaker_names).lower(), "max_length": str(cfg.max_length), **_pooling(cfg)}
    elif modality == "audio":
        settings = {"max_seconds": str(cfg.max_seconds)}
    else:
        raise UserError(f"erc finetune fine-tunes text or audio encoders, not {modality}")
    enc = build_encoder(modality, model, settings)
    if not isinstance(enc, HFWeights):
        raise UserError(f"--{modality} {model!r} is not a Hugging Face model; erc finetune needs a model id or "
                        f"a local save_pretrained folder ({'e.g. roberta-large, minilm' if modality == 'text' else 'wav2vec2 / WavLM / HuBERT'})")
    if download:
        enc = build_encoder(modality, model, {**settings, "download": "true"})
    try:
        enc.check()
    except WeightsMissing as e:  # the hint of erc finetune, not of erc extract
        raise WeightsMissing(str(e).replace(f"--set {modality}.download=true", "erc finetune --download")) from None
    return enc


def _labels(corpus: Corpus) -> np.ndarray:
    """``[N]`` class index of each utterance (-1: no label of the corpus's class list)."""
    index = {name: i for i, name in enumerate(corpus.labels)}
    return np.asarray([index.get(u.label, -1) for u in corpus.utterances], dtype=np.int64)


def _rows(plan: SplitPlan, labels: np.ndarray, split: str) -> list[int]:
    return [int(r) for r in np.flatnonzero((plan.splits == split) & (labels >= 0))]


def _prepare_folder(out: Path, chash: str, overwrite: bool) -> dict[str, Any] | None:
    """The finished record of this configuration (None: train); refuses another configuration's run."""
    record = read_record(out, unfinished_ok=True) if out.is_dir() else None
    ckpt = out / CHECKPOINTS / RUN_JSON
    other = (record is not None and record.get("config_hash") != chash) or \
        (ckpt.is_file() and _run_hash(ckpt) != chash)
    if other and not overwrite:
        raise UserError(f"{out} holds a fine-tuning of another configuration; pass --overwrite to replace it, "
                        "or another --out")
    if other and _leader():
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        (out / FINETUNE_JSON).unlink(missing_ok=True)
    if other:
        return None
    return record


def _run_hash(ckpt: Path) -> str | None:
    """The config hash an unfinished fine-tuning in this folder was started with (UserError when
    its ``erc_run.json`` is damaged)."""
    try:
        value = json.loads(ckpt.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{ckpt} cannot be read ({e}); remove {ckpt.parent} to start that fine-tuning afresh") from None
    return value.get("config_hash") if isinstance(value, dict) else None


def _leader() -> bool:
    """Whether this process writes and removes files (rank 0 under ``torchrun``; the only one otherwise)."""
    return os.environ.get("RANK", "0") == "0"


def _has_audio(u: Any) -> bool:
    return bool(u.audio) and Path(u.audio).is_file()


NEW_HEAD = ("classifier.", "score.", "projector.", "pooler.")  # + any "<backbone>.pooler." key


def _load_model(modality: str, enc: HFWeights, labels: list[str], target: bool = False) -> tuple[Any, Any]:
    """(model with a fresh ``len(labels)``-way head, tokenizer or feature extractor). ``target``
    (text, ``pooling="target"``): a :class:`~erc.finetune.pooled.TargetMeanClassifier` around the
    ``AutoModel`` backbone."""
    from transformers import (AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification,
                              AutoModelForSequenceClassification, AutoTokenizer)
    from transformers.utils import logging as transformers_logging

    w, kw = enc.resolve(), enc.pretrained_kwargs()
    head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {n: i for i, n in enumerate(labels)}, "ignore_mismatched_sizes": True}
    auto = AutoModel if target else AutoModelForSequenceClassification if modality == "text" else AutoModelForAudioClassification
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the new head's "newly initialized" notice: checked below instead
    try:
        proc = (AutoTokenizer if modality == "text" else AutoFeatureExtractor).from_pretrained(w.path, **kw)
        model, info = auto.from_pretrained(w.path, **({} if target else head), **kw, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{w.model}: cannot be loaded for {modality} classification "
                        f"({' '.join(str(e).split())[:200]})") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    # only the classification head (and a pooler / projector the checkpoint lacks) may start random
    missing = [k for k in info.get("missing_keys", []) if not (k.startswith(NEW_HEAD) or ".pooler." in k)]
    if missing:
        raise UserError(f"{w.model}: {len(missing)} weight(s) of the encoder are missing from the checkpoint "
                        f"(first: {missing[0]}); they would start random")
    if target:
        model.config.update({"id2label": head["id2label"], "label2id": head["label2id"]})
        dropout = float(getattr(model.config, "hidden_dropout_prob", 0.1) or 0.0)
        return TargetMeanClassifier(model, len(labels), dropout), proc
    return model, proc


def finetune_split(corpus: Corpus, modality: str, model: str, plan: SplitPlan, out: Path, cfg: FinetuneConfig,
                   command: str = "", overwrite: bool = False, callbacks: Sequence[Any] = (),
                   download: bool = False) -> tuple[dict[str, Any], bool]:
    """Fine-tune ``model`` on ``plan``'s train utterances, pick the epoch on its dev ones, write
    ``out``. Returns (the finetune.json record, whether it was already there)."""
    from transformers import DataCollatorWithPadding, PrinterCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    if modality != "text" and cfg.pooling != "cls":
        raise UserError(f"pooling={cfg.pooling} is for text encoders; a {modality} encoder is fine-tuned through "
                        "its model's own classifier (leave pooling out)")
    enc = window_encoder(modality, model, cfg, download)
    labels = _labels(corpus)
    train, dev = _rows(plan, labels, "train"), _rows(plan, labels, "dev")
    if modality == "audio":  # only utterances with a clip: exactly those whose labels are seen
        train = [r for r in train if _has_audio(corpus.utterances[r])]
        dev = [r for r in dev if _has_audio(corpus.utterances[r])]
    if not train or not dev:
        raise UserError(f"{corpus.name} ({plan.name}) has {len(train)} labelled train and {len(dev)} dev utterances"
                        f"{' with audio' if modality == 'audio' else ''}; fine-tuning needs both")
    w = enc.resolve()
    identity = {"modality": modality, "model": w.model, "config": cfg.hashed(), "split": plan.definition,
                "manifest_hash": corpus.manifest_hash(), "labels": corpus.labels}
    chash = config_hash(identity)
    done = _prepare_folder(out, chash, overwrite)
    if done is not None:
        return done, True
    t0 = time.perf_counter()
    set_seed(cfg.seed)
    target = cfg.pooling == "target"  # text only: refused for audio above
    net, proc = _load_model(modality, enc, corpus.labels, target)
    if modality == "text":
        if cfg.context > 0:
            proc.truncation_side = "left"  # cut the oldest context first, keep the target (as extraction)
        data = {s: TextExamples(corpus, rows, labels, enc, proc, cfg.max_length, target)
                for s, rows in (("train", train), ("dev", dev))}
        collator: Any = TargetCollator(proc) if target else DataCollatorWithPadding(proc)
    else:
        rate = int(getattr(proc, "sampling_rate", 16000))
        enc.sr = rate  # type: ignore[attr-defined]  # the extractor reads audio at the model's rate
        if cfg.freeze_feature_encoder and hasattr(net, "freeze_feature_encoder"):
            net.freeze_feature_encoder()
        data = {s: AudioExamples(corpus, rows, labels, enc) for s, rows in (("train", train), ("dev", dev))}
        collator = AudioCollator(proc, rate)
    ckpts = out / CHECKPOINTS
    if _leader():
        write_atomic(ckpts / RUN_JSON, json.dumps({"config_hash": chash, "identity": identity}, default=str))
    trainer = WeightedTrainer(model=net, args=training_args(cfg, ckpts), train_dataset=data["train"],
                              eval_dataset=data["dev"], data_collator=collator, processing_class=proc,
                              compute_metrics=compute_metrics, callbacks=list(callbacks),
                              class_weights=class_weights(labels[train], len(corpus.labels)) if cfg.class_weights else None)
    if cfg.quiet:
        trainer.remove_callback(PrinterCallback)  # the per-step log lines
    last = get_last_checkpoint(str(ckpts)) if ckpts.is_dir() else None
    with warnings.catch_warnings():  # the Trainer's note on ordering checkpoints by number, not time
        warnings.filterwarnings("ignore", message="mtime may not be reliable")
        trainer.train(resume_from_checkpoint=last)
    if target:  # the backbone alone, loadable with from_pretrained (the classifier is not needed to extract)
        if trainer.is_world_process_zero():
            trainer.accelerator.unwrap_model(net).backbone.save_pretrained(str(out), safe_serialization=True)
            proc.save_pretrained(str(out))
    else:
        trainer.save_model(str(out))  # the best dev epoch (load_best_model_at_end); every rank calls it
    if not trainer.is_world_process_zero():
        return {}, False  # under torchrun only rank 0 writes the record
    curve = dev_curve(trainer.state.log_history)
    best = _best(curve, trainer.state.best_model_checkpoint)
    ids = [u.utterance_id for u in corpus.utterances]
    record = {
        "kind": "single", "modality": modality, "config_hash": chash,
        "base_model": {"model": w.model, "path": w.path, "source": w.source, "commit": w.commit,
                       "weights_sha256": weights_sha256(_local(w, modality))},
        "weights_sha256": weights_sha256(out), "config": cfg.hashed(), "seed": cfg.seed,
        "input": ({"context": cfg.context, "context_future": cfg.context_future, "speaker_names": cfg.speaker_names,
                   "max_length": cfg.max_length, **_pooling(cfg)}  # what the classifier read
                  if modality == "text" else {"max_seconds": cfg.max_seconds}),
        "dataset": {"name": corpus.name, "root": corpus.root, "options": corpus.options,
                    "manifest_hash": corpus.manifest_hash(), "labels": corpus.labels},
        "split": plan.definition, "labels_seen": labels_seen([ids[r] for r in train], [ids[r] for r in dev]),
        **({"held_out": [ids[r] for r in np.flatnonzero(plan.splits == HELD)]} if (plan.splits == HELD).any() else {}),
        "dev_curve": curve, "best_epoch": best.get("epoch"), "best_dev_weighted_f1": best.get(METRIC),
        "steps": int(trainer.state.global_step), "resumed_from": Path(last).name if last else None,
        "seconds": round(time.perf_counter() - t0, 1), "device": str(trainer.args.device),
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32", "command": command,
    }
    write_record(out, record)
    if not cfg.keep_checkpoints:
        shutil.rmtree(ckpts, ignore_errors=True)
    return read_record(out, unfinished_ok=True) or record, False


def _pooling(cfg: FinetuneConfig) -> dict[str, str]:
    """The extractor's pooling settings for what the classifier read: the first token, or the mean
    of the target turn's tokens."""
    return {"pooling": "mean", "pool_over": "target"} if cfg.pooling == "target" else {"pooling": "cls"}


def _best(curve: list[dict[str, Any]], checkpoint: str | None) -> dict[str, Any]:
    """The dev evaluation of the checkpoint the Trainer loaded at the end (``checkpoint-<step>``)."""
    step = int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else None
    mine = [e for e in curve if e["step"] == step]
    return mine[0] if mine else (max(curve, key=lambda e: e[METRIC]) if curve else {})


def _local(w: Any, modality: str) -> str:
    """The local folder of resolved weights (after a download, the HF cache's snapshot)."""
    if w.source != "download":
        return w.path
    try:
        return resolve_weights(w.model, modality=modality, flag=modality, revision=w.commit).path
    except UserError:
        return ""


def finetune(corpus: Corpus, modality: str, model: str, out: str | Path, cfg: FinetuneConfig, folds: str | None = None,
             command: str = "", overwrite: bool = False, callbacks: Sequence[Any] = (),
             download: bool = False, crossfit: int | None = None) -> FinetuneResult:
    """Fine-tune on the official split into ``out``; or (``folds``: "session" or K) one encoder
    per fold into ``out/fold<k>``; or (``crossfit``: K) one encoder per part of the official train
    into ``out/part<k>`` plus one on all of it into ``out/full``. Per fold or part,
    ``out/finetune.json`` lists them. ``download``: fetch the base model from the Hugging Face hub
    when it is not local (needs internet)."""
    out = Path(out)
    check_split_choice(folds, crossfit)
    plans = crossfit_plans(corpus, crossfit, cfg.dev_fraction, cfg.fold_seed) if crossfit is not None else \
        plan_splits(corpus, folds, cfg.dev_fraction, cfg.fold_seed)
    nested = folds is not None or crossfit is not None
    result = FinetuneResult(out, [])
    # one process writes a folder at a time (a second erc finetune into it stops naming the first's
    # pid); under torchrun the ranks share it, coordinated by the Trainer
    held = lock_run_dir(out) if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 else contextlib.nullcontext()
    with held:
        for plan in plans:
            where = out / plan.name if nested else out
            record, skipped = finetune_split(corpus, modality, model, plan, where, cfg, command, overwrite, callbacks,
                                             download)
            result.records.append(record)
            if skipped:
                result.skipped.append(plan.name)
    if nested and all(result.records):
        first = result.records[0]
        common = {"modality": modality, "base_model": first["base_model"], "config": cfg.hashed(), "seed": cfg.seed,
                  "input": first["input"], "dataset": first["dataset"], "command": command}
        if crossfit is not None:
            write_record(out, {"kind": "crossfit", **common, "n_parts": crossfit,
                               "parts": [{"part": p.definition.get("part"), "dir": p.name, "split": p.definition,
                                          "best_dev_weighted_f1": r.get("best_dev_weighted_f1")}
                                         for p, r in zip(plans, result.records)]})
        else:
            write_record(out, {"kind": "folds", **common,
                               "folds": [{"fold": p.fold, "dir": p.name, "split": p.definition,
                                          "best_dev_weighted_f1": r.get("best_dev_weighted_f1")}
                                         for p, r in zip(plans, result.records)]})
    return result
