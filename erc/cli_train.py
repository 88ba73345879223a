"""``erc train-head``, ``erc ablate``, ``erc report`` and ``erc predict``: stage 2 from a feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from erc.cli_options import TrainOptions, with_options
from erc.device import DEVICE_HELP, resolve_device
from erc.errors import UserError


def _compact_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A results table that fits an 80-column terminal: no edges, and the score columns (their
    names hold "F1", "acc", "CI" or "Δ"; cells like "60.48±0.62", "[-2.31, +6.71] *")
    right-aligned and never wrapped."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    rows = [list(r) for r in rows]
    for i, col in enumerate(columns):
        score = any(key in col for key in ("F1", "acc", "CI", "Δ"))
        # a name column never narrower than its longest word (``no-speaker``, not ``no-s|peak|er``)
        longest = max((len(w) for r in rows for w in str(r[i]).split()), default=0)
        table.add_column(col, justify="right" if score else "left", no_wrap=score, overflow="ellipsis" if score else "fold",
                         min_width=None if score else min(max(longest, len(col)), 16))
    for row in rows:
        table.add_row(*row)
    return table


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    from erc.train.metrics import summarise

    cells = []
    for label, res in rows:
        head, variant, mods = label.split("|")
        tests = [r.test for r in res.runs if r.test]
        devs = [r.dev for r in res.runs if r.dev]
        cells.append([head, variant, mods, str(len(res.runs)),
                      *(summarise([t[k] for t in tests], sep="±") for k in ("weighted_f1", "accuracy", "macro_f1")),
                      summarise([d["weighted_f1"] for d in devs], sep="±")])
    return _compact_table(title, ("head", "variant", "mods", "runs", "test W-F1", "test acc", "test mF1", "dev W-F1"), cells)


DatasetOpt = typer.Option("iemocap", help="Dataset name: reads features/<dataset>.h5.")
QuietOpt = typer.Option(False, help="No progress bars.")


@with_options
def train_head(
    variant: str = typer.Option("full", help="Ablation variant of the head."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<dataset>/<model>-<variant>-<tav>)."),
    *,
    opts: TrainOptions,
) -> None:
    """Train a head on a feature cache: dev-selected test weighted F1, mean ± std over seeds."""
    from erc.heads.registry import resolve_head
    from erc.train.metrics import summarise
    from erc.train.outputs import check_writable_folder
    from erc.train.progress import progress_bar
    from erc.train.runs import short_modalities
    from erc.train.sweep import run_sweep

    # every option is checked before the cache is read: bad values are one line each
    n_folds, fold_grouping = opts.fold_plan()
    spec = resolve_head(opts.model, variant, opts.overrides)  # unknown head / variant / key / bad value -> UserError
    cfg = opts.train_config(spec.cls)
    choice = opts.data()
    out = check_writable_folder(out or choice.run_dir(opts.model, spec), "--out")
    with progress_bar(opts.quiet) as prog:
        res = run_sweep(choice.cache, spec, choice.modalities, cfg, out, opts.seeds, n_folds, fold_grouping, prog,
                        jobs=opts.n_jobs)

    console = Console()
    mods = short_modalities(choice.modalities, ",")
    console.print(_table(f"{opts.model} on {choice.dataset} (test at best dev epoch)", [(f"{opts.model}|{variant}|{mods}", res)]))
    tests = [r.test for r in res.runs if r.test]
    console.print(f"test W-F1 {summarise([t['weighted_f1'] for t in tests])} | acc {summarise([t['accuracy'] for t in tests])} "
                  f"| macro F1 {summarise([t['macro_f1'] for t in tests])} ({len(res.runs)} runs, dev-selected) -> {res.out_dir}",
                  markup=False, highlight=False, soft_wrap=True)
    if n_folds is not None and fold_grouping == "utterance":
        console.print("[yellow]note:[/] utterance-pooled folds leak dialogue context and speakers across folds")


@with_options
def ablate(
    variants: Optional[str] = typer.Option(None, help="Comma-separated variants (default: all of the head's)."),
    out: Optional[Path] = typer.Option(None, help="Root folder (default runs/<dataset>/); one subfolder per variant."),
    *,
    opts: TrainOptions,
) -> None:
    """Train every variant of a head over several seeds and print the paper-style ablation table."""
    from erc.heads.registry import check_variant_overrides, resolve_head
    from erc.train.ablation import ablation_root, run_ablation
    from erc.train.outputs import check_writable_folder
    from erc.train.progress import progress_bar

    overrides = opts.overrides
    n_folds, fold_grouping = opts.fold_plan()
    head_cls = resolve_head(opts.model, overrides=overrides).cls
    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else list(head_cls.variants)
    check_variant_overrides(head_cls, names, overrides)  # --set use_mec=true would make no-mec a second full
    specs = {v: resolve_head(opts.model, v, overrides) for v in names}
    cfg = opts.train_config(head_cls)
    choice = opts.data()
    root = ablation_root(choice, out)
    check_writable_folder(root, "--out")
    with progress_bar(opts.quiet) as prog:
        result = run_ablation(choice, opts.model, specs, cfg, opts.seeds, root, prog, jobs=opts.n_jobs, folds=n_folds,
                              grouping=fold_grouping)
    console = Console()
    console.print(f"{opts.model} on {choice.dataset}, modalities {','.join(choice.modalities)}, {opts.seeds} seeds "
                  "(test W-F1 at best dev epoch)")
    console.print(result.table, markup=False, highlight=False, soft_wrap=True)


def report(directory: Path = typer.Argument(..., help="Folder holding run directories.")) -> None:
    """Write report.md / report.csv and per-run confusion.png / curves.png under DIRECTORY."""
    from erc.train.report import write_report
    from erc.train.runs import short_modalities

    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder")
    df = write_report(directory)
    excluded, no_plots = df.attrs.get("excluded", []), df.attrs.get("no_plots", [])
    if not len(df):
        why = f" ({len(excluded)} run folders are not results: e.g. {excluded[0][0]}: {excluded[0][1]})" if excluded else ""
        raise UserError(f"no finished runs (metrics.json + done) under {directory}{why}")
    df = df.assign(modalities=[short_modalities(str(v).split(","), ",") for v in df["modalities"]])
    # a column every row shares (one head, one protocol ...) goes into the title, so that the table fits
    # 80 columns; every row still names its dataset (runs of several datasets can share a folder)
    shared = [c for c in ("head", "modalities", "protocol") if df[c].nunique() == 1]
    common = ", ".join(str(df[c].iloc[0]) for c in shared if not (c == "protocol" and df[c].iloc[0] == "official split"))
    cols = [c for c in ("dataset", "head", "variant", "modalities", "protocol") if c not in shared]
    cols += ["runs", "test_wf1", "test_acc", "test_macro_f1"]
    if (df["weights"] != "").any():  # heads that load pre-trained weights: which, and their hash
        cols.append("weights")
    names = {"modalities": "mods", "test_wf1": "test W-F1", "test_acc": "test acc", "test_macro_f1": "test mF1"}
    rows = [[str(v).replace(" ± ", "±") for v in row] for row in df[cols].itertuples(index=False)]
    where = f"{directory} ({common})" if common else str(directory)
    Console().print(_compact_table(f"{where}: test at the best dev epoch", [names.get(c, c) for c in cols], rows))
    diff = df[df["delta_wf1"] != ""]
    if len(diff):
        from erc.train.intervals import INTERVALS_NOTE, ZERO_NOTE

        dcols = [c for c in ("dataset", "head") if c not in shared]
        dcols += ["variant", "delta_wf1", "delta_ci", "delta_ci_seeds", "delta_ci_test"]
        dnames = {"delta_wf1": "Δ", "delta_ci": "95% CI", "delta_ci_seeds": "CI seeds", "delta_ci_test": "CI dialogues"}
        drows = [[str(v) for v in row] for row in diff[dcols].itertuples(index=False)]
        Console().print(_compact_table("difference to full (test W-F1 points, 95 % intervals)",
                                       [dnames.get(c, c) for c in dcols], drows))
        Console().print(f"{INTERVALS_NOTE}. {ZERO_NOTE}", markup=False, highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for run_dir, why in excluded:
        err.print(f"[yellow]not reported[/]: {escape(f'{run_dir}: {why}')}")
    if no_plots:
        err.print(f"[yellow]no plots[/] for {len(no_plots)} read-only run folders (e.g. {escape(str(no_plots[0]))})")
    Console().print(f"wrote {directory / 'report.md'} and {directory / 'report.csv'}")


def predict(
    run: Path = typer.Option(..., help="A finished run folder (holding best.pt), or a sweep folder (seed0..seedN): "
                                       "the seeds' probabilities are averaged."),
    dataset: str = DatasetOpt,
    root: Optional[str] = typer.Option(None, help="New conversations: this dataset folder / manifest file, extracted "
                                                  "with the run's encoders (in memory) first."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Dataset options, e.g. dataset.classes=4."),
    features: Optional[Path] = typer.Option(None, help="Cache to read (overrides --dataset); with --root, the cache "
                                                       "file to extract into first (resumable)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, help="File to write (default <run>/predictions-<dataset>.<format>)."),
    format_: Optional[str] = typer.Option(None, "--format", help="csv | jsonl (default: from --out's suffix, else csv)."),
    with_embeddings: bool = typer.Option(False, "--with-embeddings",
                                         help="Also write the head's utterance representation (the first run's)."),
    skip_bad_media: bool = typer.Option(False, "--skip-bad-media",
                                        help="Media not found / not readable: predict without it instead of stopping."),
    quiet: bool = QuietOpt,
) -> None:
    """Predict every utterance with a trained head (or a sweep's seed ensemble): one row per utterance
    with the predicted label and one probability per class. With --root, new conversations (labels
    optional) are extracted with the run's recorded encoders; otherwise a cache is read (refused when
    its encoders or dims differ from the run's). Prints the scores where labels are present, else
    the predicted label distribution."""
    from erc.apply import Predictor
    from erc.apply.predictor import progress_display
    from erc.cli_extract import split_settings
    from erc.extract.datasets import load_dataset
    from erc.features.schema import default_cache_path
    from erc.train.outputs import check_writable_file, check_writable_folder, refuse_inputs
    from erc.train.predictions import summary_lines, write_predictions
    from erc.heads.cpu.build import check_cache as check_kernel_cache
    from erc.train.trained import run_members

    fmt = (format_ or ("jsonl" if out is not None and out.suffix.lower() in (".jsonl", ".ndjson") else "csv")).lower()
    if fmt not in ("csv", "jsonl"):
        raise UserError(f"--format must be csv or jsonl; got {format_!r}")
    resolve_device(device)  # an unknown or absent device: one line before any work
    check_kernel_cache()
    # where the results go is checked before any extraction work
    if out is not None:
        check_writable_file(out, "--out")
        # the manifest / dataset, the cache read (or extracted into) and the run's own files
        refuse_inputs(out, [p for p in (Path(root) if root else None, features) if p is not None] + run_members(run),
                      "--out")
    else:
        check_writable_folder(run, "--run")
    console = Console()
    predictor = Predictor.load(run, device, load_encoders=root is not None)
    names = ", ".join(d.name for d in predictor.run_dirs) if predictor.n_runs > 1 else str(predictor.run_dirs[0])
    console.print(f"{predictor.n_runs} run(s): {names}" + (" (probabilities averaged)" if predictor.n_runs > 1 else ""),
                  markup=False, highlight=False, soft_wrap=True)
    if root is not None:
        corpus = load_dataset(dataset, root, split_settings(set_)["dataset"])
        name = corpus.name
        with progress_display(quiet) as progress:
            df = predictor.predict_corpus(corpus, with_embeddings, "absent" if skip_bad_media else "error", progress,
                                          cache_path=features)
    else:
        cache = features if features is not None else default_cache_path(dataset)
        df = predictor.predict_cache(cache, with_embeddings)
        name = dataset if features is None else cache.stem
    for m, k in df.attrs.get("absent", {}).items():
        if k:
            console.print(f"note: {k} of {len(df)} utterances have no {m} (the head sees it as missing)", markup=False)
    path = write_predictions(df, out or Path(run) / f"predictions-{name}.{fmt}", fmt)
    for line in summary_lines(df, predictor.labels):
        Console().print(line, markup=False, highlight=False, soft_wrap=True)
    Console().print(f"wrote {path} ({len(df)} utterances)", markup=False, highlight=False, soft_wrap=True)
