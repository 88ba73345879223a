"""transformers' ``Trainer`` with a class-weighted loss, and the arguments erc gives it.

The Trainer owns the loop: AdamW, linear warm-up and decay, gradient accumulation, bf16 / fp16
autocast, ``torchrun`` data parallelism, a checkpoint and a dev evaluation every epoch (the best
dev weighted F1 is loaded at the end), resuming from the last checkpoint, the progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction, Trainer, TrainingArguments

from erc.finetune.config import FinetuneConfig
from erc.train.metrics import weighted_f1

METRIC = "weighted_f1"


class WeightedTrainer(Trainer):
    """A Trainer whose loss is the cross-entropy of the logits ``[B, C]`` with ``class_weights [C]``."""

    def __init__(self, *args: Any, class_weights: torch.Tensor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.model_accepts_loss_kwargs = False  # a mean loss: the Trainer scales it for accumulation

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits  # [B, C]
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """``[C]`` inverse-frequency weights ``n / (C_present * n_c)`` of the train labels ``[n]``
    (1 for a class without train examples, which no train loss term uses)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.ones(n_classes)
    w[present] = len(labels) / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
    """Dev weighted F1 (0..1) of the argmax of the logits."""
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {METRIC: weighted_f1(np.asarray(pred.label_ids), np.asarray(logits).argmax(-1))}


def precision_flags(precision: str, on_cuda: bool) -> dict[str, bool]:
    """``{"bf16": ..., "fp16": ...}`` for TrainingArguments; auto = bf16 on CPU and on CUDA that
    supports it, else fp16."""
    if precision == "auto":
        precision = "bf16" if not on_cuda or torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def on_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def training_args(cfg: FinetuneConfig, checkpoints: Path) -> TrainingArguments:
    """Evaluate on dev and save a checkpoint every epoch; keep the best by dev weighted F1."""
    cuda = on_cuda(cfg.device)
    return TrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
        lr_scheduler_type="linear", optim="adamw_torch", eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model=METRIC, greater_is_better=True,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, data_seed=cfg.seed, use_cpu=not cuda,
        **precision_flags(cfg.precision, cuda), report_to="none", logging_steps=cfg.logging_steps,
        disable_tqdm=cfg.quiet, dataloader_num_workers=0, remove_unused_columns=False, label_names=["labels"],
        log_level="warning", save_safetensors=True)


def dev_curve(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per dev evaluation: epoch, step, dev weighted F1, dev loss (from the Trainer's log)."""
    return [{"epoch": round(float(e["epoch"]), 4), "step": int(e["step"]), METRIC: float(e[f"eval_{METRIC}"]),
             "loss": float(e.get("eval_loss", float("nan")))}
            for e in log_history if f"eval_{METRIC}" in e]
