"""``erc finetune``: fine-tune a text or speech encoder on a dataset's train labels (one per fold
with ``--folds``), into a folder that ``erc extract --text/--audio DIR`` reads."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from erc.errors import UserError


def finetune(
    dataset: str = typer.Option("demo", help="iemocap | meld | manifest | demo (see `erc list datasets`)."),
    root: Optional[str] = typer.Option(None, help="Dataset folder (or manifest file)."),
    text: Optional[str] = typer.Option(None, help="Text encoder to fine-tune: HF model id or local folder "
                                       "(minilm: the packaged all-MiniLM-L6-v2, offline)."),
    audio: Optional[str] = typer.Option(None, help="Speech encoder to fine-tune: wav2vec2 / WavLM / HuBERT id or folder."),
    out: Path = typer.Option(..., help="Folder to write (from_pretrained + finetune.json); per fold: OUT/fold<k>."),
    folds: Optional[str] = typer.Option(None, help="'session' (leave-one-session-out) or K: one encoder per fold, "
                                        "trained on that fold's train part, as `erc train-head --folds` splits."),
    crossfit: Optional[int] = typer.Option(None, help="K: cross-fitted features for the official split: one encoder "
                                           "per part of the train dialogues, trained on the other parts (it encodes "
                                           "its own part), plus one on all of train (it encodes dev and test)."),
    epochs: int = typer.Option(3, help="Epochs; the one with the best dev weighted F1 is kept."),
    lr: float = typer.Option(2e-5, help="Peak learning rate (AdamW, linear warm-up then decay)."),
    batch_size: int = typer.Option(16, help="Utterances per device step."),
    grad_accum: int = typer.Option(1, help="Steps accumulated per optimiser step."),
    context: int = typer.Option(64, help="Text: past turns in the input (\"Speaker: text\", cut from the oldest at "
                                "--max-length tokens); 0 = the utterance alone."),
    max_length: int = typer.Option(256, help="Text: tokens per input."),
    seed: int = typer.Option(0, help="Seed of the head's initialisation and the data order."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16 (auto: bf16, or fp16 on CUDA without bf16)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (several GPUs: launch with torchrun)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Other FinetuneConfig fields, e.g. warmup_ratio=0.06, "
                                             "class_weights=false, context_future=1, max_seconds=10. Repeatable."),
    dataset_set: Optional[list[str]] = typer.Option(None, "--dataset-set", help="Dataset options, e.g. classes=4."),
    download: bool = typer.Option(False, help="Fetch the base model from the Hugging Face hub when it is not in the "
                                  "local cache (needs internet; by default nothing is downloaded)."),
    overwrite: bool = typer.Option(False, help="Replace a fine-tuning of another configuration in --out."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Fine-tune an encoder with a classification head on the train split's labels; the epoch is
    chosen on dev, no test label is read. Resumes from the last epoch's checkpoint when re-run."""
    from erc.config import apply_overrides, parse_assignments
    from erc.extract.datasets import DATASETS, load_dataset
    from erc.finetune.config import FinetuneConfig
    from erc.finetune.run import finetune as run_finetune
    from erc.finetune.run import window_encoder
    from erc.finetune.splits import check_split_choice

    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if (text is None) == (audio is None):
        raise UserError("erc finetune fine-tunes one encoder: pass --text ENCODER or --audio ENCODER")
    check_split_choice(folds, crossfit)  # before the corpus is read
    modality, model = ("text", text) if text is not None else ("audio", audio)
    cfg = FinetuneConfig(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, context=context,
                         max_length=max_length, seed=seed, precision=precision, device=device, quiet=quiet)  # type: ignore[arg-type]
    cfg = apply_overrides(cfg, parse_assignments(set_), what="finetune")
    window_encoder(modality, str(model), cfg, download)  # an unknown or absent model: one line before the corpus is read
    corpus = load_dataset(dataset, root, parse_assignments(dataset_set))
    console = Console(stderr=True)
    command = "erc finetune " + shlex.join(_args(dataset, root, modality, str(model), out, folds, cfg, crossfit))
    console.print(f"[bold]{corpus.name}[/]: fine-tuning {modality} encoder {escape(str(model))} "
                  f"({f'--folds {folds}' if folds else f'--crossfit {crossfit}' if crossfit else 'official split'}) -> {out}")
    try:
        result = run_finetune(corpus, modality, str(model), out, cfg, folds, command, overwrite, download=download,
                              crossfit=crossfit)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished epochs are checkpointed; re-run the same command to resume")
        raise typer.Exit(130) from None
    if not all(result.records):
        return  # a torchrun rank other than 0: rank 0 reports
    for name in result.skipped:
        console.print(f"{name}: already fine-tuned with this configuration")
    for rec in result.records:
        split = rec.get("split", {})
        where = f"fold {split['fold']}" if split.get("kind") == "fold" else \
            f"part {split['part']}" if split.get("kind") == "crossfit_part" else "official split"
        console.print(f"{where}: best epoch {rec.get('best_epoch')} dev W-F1 {100 * (rec.get('best_dev_weighted_f1') or 0):.2f} "
                      f"({len(rec['labels_seen']['train'])} train labels seen, {rec.get('seconds')} s)")
    flag = f"--{modality} {shlex.quote(str(out))}"
    sets = "".join(f" --set dataset.{k}={shlex.quote(v)}" for k, v in parse_assignments(dataset_set).items())
    console.print(f"extract with: erc extract --dataset {dataset}" + (f" --root {shlex.quote(root)}" if root else "")
                  + f"{sets} {flag}" + (" --audio none" if modality == "text" else " --text none") + " --video none",
                  soft_wrap=True, highlight=False)


def _args(dataset: str, root: str | None, modality: str, model: str, out: Path, folds: str | None, cfg: object,
          crossfit: int | None = None) -> list[str]:
    from dataclasses import asdict

    args = ["--dataset", dataset] + (["--root", root] if root else []) + [f"--{modality}", model, "--out", str(out)]
    args += ["--folds", folds] if folds else []
    args += ["--crossfit", str(crossfit)] if crossfit else []
    for k, v in asdict(cfg).items():  # type: ignore[call-overload]
        if k not in ("quiet",):
            args += ["--set", f"{k}={v}"]
    return args
