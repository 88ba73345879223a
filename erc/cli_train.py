"""``erc train-head``, ``erc ablate``, ``erc report`` and ``erc predict``: stage 2 from a feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from erc.config import config_hash, parse_assignments
from erc.errors import UserError

KNOWN_MODALITIES = ("text", "audio", "video")
SHORT = {"text": "t", "audio": "a", "video": "v"}


def short_modalities(modalities: Iterable[str], sep: str = "") -> str:
    """Modality names as their one-letter codes, e.g. ``["text", "audio"]`` -> ``"ta"`` (``sep=","``:
    ``"t,a"``); names without a code are kept whole."""
    return sep.join(SHORT.get(m, m) for m in modalities)


def parse_modalities(value: str | None) -> list[str] | None:
    """``"t,a"`` / ``"text,audio"`` -> ``["text", "audio"]``; None keeps the cache's modalities."""
    from erc.train.dialogues import canonical_modality

    if value is None or not value.strip():
        return None
    out = []
    for part in value.split(","):
        if not part.strip():
            continue
        m = canonical_modality(part)
        if m not in KNOWN_MODALITIES:
            raise UserError(f"unknown modality {part.strip()!r}; use t,a,v or text,audio,video")
        if m not in out:
            out.append(m)
    return out or None


def parse_encoders(value: str | None) -> dict[str, str]:
    """``"text=minilm,audio=mel"`` -> ``{"text": "minilm", "audio": "mel"}``."""
    from erc.train.dialogues import canonical_modality

    out: dict[str, str] = {}
    for key, enc in parse_assignments([p for p in (value or "").split(",") if p.strip()]).items():
        m = canonical_modality(key)
        if m not in KNOWN_MODALITIES:
            raise UserError(f"--encoders keys are modalities (text, audio, video); got {key!r}")
        out[m] = enc
    return out


def resolve_data(dataset: str, features: Path | None, modalities: str | None, encoders: str | None) -> tuple[Path, str, dict[str, str | None]]:
    """The cache path, a dataset name for output folders, and modality -> encoder (None = default)."""
    from erc.features.reader import FeatureCache
    from erc.features.schema import default_cache_path

    path = features if features is not None else default_cache_path(dataset)
    mods = parse_modalities(modalities)
    encs = parse_encoders(encoders)
    with FeatureCache(path) as fc:  # UserError when missing / unreadable
        name = fc.dataset or (path.stem if features is not None else dataset)
        if mods is None:
            mods = [m for m in KNOWN_MODALITIES if fc.encoders(m)] + sorted({g.modality for g in fc.groups()} - set(KNOWN_MODALITIES))
            if not mods:
                raise UserError(f"{path} holds no feature groups")
    extra = set(encs) - set(mods)
    if extra:
        raise UserError(f"--encoders names {', '.join(sorted(extra))}, which is not among --modalities {','.join(mods)}")
    return path, name, {m: encs.get(m) for m in mods}


def parse_folds(folds: str | None, grouping: str) -> tuple[int | None, str]:
    """``--folds`` / ``--fold-grouping`` -> (number of folds or None, grouping): ``"10"`` -> 10;
    ``"session"`` -> (None, "session"): one fold per session, counted in the cache."""
    if folds is None:
        return None, grouping
    value = folds.strip().lower()
    if value in ("session", "sessions", "loso"):
        if grouping not in ("dialogue", "session"):
            raise UserError(f"--folds session is its own grouping; drop --fold-grouping {grouping}")
        return None, "session"
    try:
        return int(value), grouping
    except ValueError:
        raise UserError(f"--folds takes a number of folds or 'session'; got {folds!r}") from None


def default_run_dir(dataset: str, model: str, variant: str, modalities: dict[str, str | None], overrides: dict[str, str]) -> Path:
    """``runs/<dataset>/<model>-<variant>-<tav>`` (+ a hash of --set / --encoders when given)."""
    tag = short_modalities(modalities)
    name = f"{model}-{variant}-{tag}"
    chosen = {m: e for m, e in modalities.items() if e}
    if overrides or chosen:
        name += "-" + config_hash({"set": overrides, "encoders": chosen})[:6]
    return Path("runs") / dataset / name


def _compact_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A results table that fits an 80-column terminal: no edges, and the score columns (their
    names hold "F1" or "acc"; cells like "60.48±0.62") right-aligned and never wrapped."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in columns:
        score = "F1" in col or "acc" in col
        table.add_column(col, justify="right" if score else "left", no_wrap=score, overflow="ellipsis" if score else "fold")
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
FeaturesOpt = typer.Option(None, help="Feature cache path (overrides --dataset).")
ModalitiesOpt = typer.Option(None, help="Modalities, e.g. t,a,v or text,audio (default: all in the cache).")
EncodersOpt = typer.Option(None, help="Encoder group per modality, e.g. text=minilm,audio=mel.")
SetOpt = typer.Option(None, "--set", help="Head config override key=value. Repeatable.")
# training options shared by train-head and ablate; unset ones fall back to the head's train_defaults
EpochsOpt = typer.Option(None, help="Max epochs (default: the head's, else 100).")
BatchOpt = typer.Option(None, help="Dialogues per batch (default: the head's, else 16).")
LrOpt = typer.Option(None, help="AdamW learning rate (default: the head's, else 1e-4).")
PatienceOpt = typer.Option(None, help="Early stopping on dev W-F1 (default 20; 0 = off).")
ClassWeightsOpt = typer.Option(False, "--class-weights", help="Inverse-frequency class weights.")
ThreadsOpt = typer.Option(None, help="CPU threads for torch (default: torch's).")
MaxFramesOpt = typer.Option(None, help="Truncate frame sequences to this many frames.")
DeterministicOpt = typer.Option(False, "--deterministic", help="torch.use_deterministic_algorithms(True).")
PrecisionOpt = typer.Option("fp32", help="fp32 | bf16 (autocast of the training forward; eval in fp32).")
DeviceOpt = typer.Option("auto", help="auto | cpu | cuda.")
QuietOpt = typer.Option(False, help="No progress bars.")


def train_head(
    model: str = typer.Option(..., help="Head name (see `erc list heads`)."),
    dataset: str = DatasetOpt,
    features: Optional[Path] = FeaturesOpt,
    modalities: Optional[str] = ModalitiesOpt,
    encoders: Optional[str] = EncodersOpt,
    set_: Optional[list[str]] = SetOpt,
    variant: str = typer.Option("full", help="Ablation variant of the head."),
    seeds: int = typer.Option(3, min=1, help="Number of seeds (0..N-1); reported as mean ± std."),
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    patience: Optional[int] = PatienceOpt,
    class_weights: bool = ClassWeightsOpt,
    threads: Optional[int] = ThreadsOpt,
    max_frames: Optional[int] = MaxFramesOpt,
    folds: Optional[str] = typer.Option(None, help="K-fold cross-validation instead of the cache's splits: a number "
                                        "of folds (at least 3: a test, a dev and a train fold), or 'session' "
                                        "(leave-one-session-out, IEMOCAP: 5 folds)."),
    fold_grouping: str = typer.Option("dialogue", help="dialogue | utterance (pooled, DeepMSI-MER; leaks context) "
                                      "| session (one fold per session)."),
    deterministic: bool = DeterministicOpt,
    precision: str = PrecisionOpt,
    device: str = DeviceOpt,
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<dataset>/<model>-<variant>-<tav>)."),
    quiet: bool = QuietOpt,
) -> None:
    """Train a head on a feature cache: dev-selected test weighted F1, mean ± std over seeds."""
    from erc.heads.registry import resolve_head
    from erc.train.folds import FoldSpec, check_grouping
    from erc.train.loop import TrainConfig, pick_device
    from erc.train.metrics import summarise
    from erc.train.outputs import check_writable_folder
    from erc.train.progress import progress_bar
    from erc.train.sweep import run_sweep

    # every option is checked before the cache is read: bad values are one line each
    overrides = parse_assignments(set_)
    n_folds, fold_grouping = parse_folds(folds, fold_grouping)
    spec = resolve_head(model, variant, overrides)  # unknown head / variant / key / bad value -> UserError
    cfg = TrainConfig.for_head(spec.cls, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                               class_weights=class_weights, max_frames=max_frames, deterministic=deterministic,
                               device=device, quiet=quiet, precision=precision, num_threads=threads)
    pick_device(cfg.device)
    if n_folds is not None:
        FoldSpec(n_folds, 0, fold_grouping)  # type: ignore[arg-type]  # --folds >= 3, known grouping
    else:
        check_grouping(fold_grouping)
    cache, ds_name, mods = resolve_data(dataset, features, modalities, encoders)
    out = check_writable_folder(out or default_run_dir(ds_name, model, variant, mods, overrides), "--out")
    with progress_bar(quiet) as prog:
        res = run_sweep(cache, spec, mods, cfg, out, seeds, n_folds, fold_grouping, prog)  # type: ignore[arg-type]

    console = Console()
    console.print(_table(f"{model} on {ds_name} (test at best dev epoch)", [(f"{model}|{variant}|{short_modalities(mods, ',')}", res)]))
    tests = [r.test for r in res.runs if r.test]
    console.print(f"test W-F1 {summarise([t['weighted_f1'] for t in tests])} | acc {summarise([t['accuracy'] for t in tests])} "
                  f"| macro F1 {summarise([t['macro_f1'] for t in tests])} ({len(res.runs)} runs, dev-selected) -> {res.out_dir}",
                  markup=False, highlight=False, soft_wrap=True)
    if n_folds is not None and fold_grouping == "utterance":
        console.print("[yellow]note:[/] utterance-pooled folds leak dialogue context and speakers across folds")


def ablate(
    model: str = typer.Option(..., help="Head name."),
    variants: Optional[str] = typer.Option(None, help="Comma-separated variants (default: all of the head's)."),
    seeds: int = typer.Option(3, min=1, help="Seeds per variant."),
    dataset: str = DatasetOpt,
    features: Optional[Path] = FeaturesOpt,
    modalities: Optional[str] = ModalitiesOpt,
    encoders: Optional[str] = EncodersOpt,
    set_: Optional[list[str]] = SetOpt,
    epochs: Optional[int] = EpochsOpt,
    batch_size: Optional[int] = BatchOpt,
    lr: Optional[float] = LrOpt,
    patience: Optional[int] = PatienceOpt,
    class_weights: bool = ClassWeightsOpt,
    threads: Optional[int] = ThreadsOpt,
    max_frames: Optional[int] = MaxFramesOpt,
    deterministic: bool = DeterministicOpt,
    precision: str = PrecisionOpt,
    device: str = DeviceOpt,
    out: Optional[Path] = typer.Option(None, help="Root folder (default runs/<dataset>/); one subfolder per variant."),
    quiet: bool = QuietOpt,
) -> None:
    """Train every variant of a head over several seeds and print the paper-style ablation table."""
    from erc.heads.registry import resolve_head
    from erc.train.loop import TrainConfig, pick_device
    from erc.train.outputs import check_writable_folder
    from erc.train.progress import progress_bar
    from erc.train.intervals import compare
    from erc.train.report import ablation_table
    from erc.train.sweep import run_sweep

    overrides = parse_assignments(set_)
    head_cls = resolve_head(model, overrides=overrides).cls
    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else list(head_cls.variants)
    specs = {v: resolve_head(model, v, overrides) for v in names}
    cfg = TrainConfig.for_head(head_cls, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                               class_weights=class_weights, max_frames=max_frames, deterministic=deterministic,
                               device=device, quiet=quiet, precision=precision, num_threads=threads)
    pick_device(cfg.device)
    cache, ds_name, mods = resolve_data(dataset, features, modalities, encoders)
    check_writable_folder(out or Path("runs") / ds_name, "--out")
    results = []
    with progress_bar(quiet) as prog:
        for v, spec in specs.items():
            run_dir = default_run_dir(ds_name, model, v, mods, overrides)
            run_dir = out / run_dir.name if out else run_dir
            results.append((v, run_sweep(cache, spec, mods, cfg, run_dir, seeds, progress=prog)))
    ref = "full" if "full" in dict(results) else results[0][0]
    runs = {v: {str(r.run_dir.relative_to(res.out_dir)): r.run_dir for r in res.runs} for v, res in results}
    comparisons = {v: compare(runs[ref], runs[v]) for v, _ in results if v != ref}
    table = ablation_table({v: r.test_values() for v, r in results}, ref, comparisons)
    console = Console()
    console.print(f"{model} on {ds_name}, modalities {','.join(mods)}, {seeds} seeds (test W-F1 at best dev epoch)")
    console.print(table, markup=False, highlight=False, soft_wrap=True)
    root = out or Path("runs") / ds_name
    (root / f"{model}-ablation-{short_modalities(mods)}.md").write_text(table + "\n")


def report(directory: Path = typer.Argument(..., help="Folder holding run directories.")) -> None:
    """Write report.md / report.csv and per-run confusion.png / curves.png under DIRECTORY."""
    from erc.train.report import write_report

    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder")
    df = write_report(directory)
    excluded, no_plots = df.attrs.get("excluded", []), df.attrs.get("no_plots", [])
    if not len(df):
        why = f" ({len(excluded)} run folders are not results: e.g. {excluded[0][0]}: {excluded[0][1]})" if excluded else ""
        raise UserError(f"no finished runs (metrics.json + done) under {directory}{why}")
    # the protocol column only where some run is not on the cache's official split
    cols = ["dataset", "head", "variant", "modalities", "protocol", "runs", "test_wf1", "test_acc", "test_macro_f1"]
    if (df["protocol"] == "official split").all():
        cols.remove("protocol")
    names = {"modalities": "mods", "test_wf1": "test W-F1", "test_acc": "test acc", "test_macro_f1": "test mF1"}
    df = df.assign(modalities=[short_modalities(str(v).split(","), ",") for v in df["modalities"]])
    rows = [[str(v).replace(" ± ", "±") for v in row] for row in df[cols].itertuples(index=False)]
    Console().print(_compact_table(f"{directory}: test at the best dev epoch", [names.get(c, c) for c in cols], rows))
    diff = df[df["delta_wf1"] != ""]
    if len(diff):
        from erc.train.intervals import ZERO_NOTE

        dcols = ["dataset", "head", "variant", "runs", "delta_wf1", "delta_ci_seeds", "delta_ci_test"]
        drows = [[str(v) for v in row] for row in diff[dcols].itertuples(index=False)]
        Console().print(_compact_table("difference to full (test W-F1 points, 95 % intervals)",
                                       ["dataset", "head", "variant", "runs", "Δ", "CI seeds", "CI test"], drows))
        Console().print(ZERO_NOTE, markup=False, highlight=False)
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
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
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
    from erc.extract.run import resolve_device
    from erc.train.outputs import check_writable_file, check_writable_folder
    from erc.train.predict import summary_lines, write_predictions

    fmt = (format_ or ("jsonl" if out is not None and out.suffix.lower() in (".jsonl", ".ndjson") else "csv")).lower()
    if fmt not in ("csv", "jsonl"):
        raise UserError(f"--format must be csv or jsonl; got {format_!r}")
    resolve_device(device)  # an unknown or absent device: one line before any work
    # where the results go is checked before any extraction work
    if out is not None:
        check_writable_file(out, "--out")
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
