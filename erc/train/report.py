"""Reports over run directories: ``report.md`` / ``report.csv`` (one row per configuration,
mean ± std over its seeds / folds), per-run ``confusion.png`` and ``curves.png``, and the
paper-style ablation table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from erc.config import config_hash  # noqa: E402
from erc.features.schema import parse_fold_group  # noqa: E402
from erc.train.intervals import INTERVALS_NOTE, ZERO_NOTE, Comparison, compare, format_ci  # noqa: E402
from erc.errors import UserError  # noqa: E402
from erc.train.metrics import mean_std, summarise  # noqa: E402
from erc.train.metrics_checks import metrics_problem  # noqa: E402
from erc.train.outputs import check_writable_folder  # noqa: E402
from erc.train.runs import DONE, FAILED  # noqa: E402


def find_runs(root: str | Path) -> list[Path]:
    """Run directories under ``root`` (those holding ``metrics.json``), sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("metrics.json"))


def _read(path: Path, required: bool = True) -> dict[str, Any]:
    """A run's JSON file as a dict; an unreadable or corrupt one is one UserError line naming it."""
    if not path.exists() and not required:
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); re-run that configuration "
                        f"or move {path.parent} out of the report folder") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not an erc run file (a JSON object expected)")
    return obj


def _load(run: Path) -> dict[str, Any]:
    metrics = _read(run / "metrics.json")
    config = _read(run / "config.json", required=False)
    prov = _read(run / "provenance.json", required=False)
    return {"dir": run, "metrics": metrics, "config": config, "dataset": prov.get("cache_attrs", {}).get("dataset") or "?"}


def not_a_result(run: dict[str, Any]) -> str | None:
    """Why a run directory holding ``metrics.json`` must not be reported as a result (None: it
    is one): no ``done`` marker (unfinished or failed), scores that are not numbers in [0, 1] (a
    damaged or hand-edited ``metrics.json``: :mod:`erc.train.metrics_checks`), or a non-finite training
    loss in ``epochs.csv`` (a diverged run from before erc stopped such runs)."""
    d, m = run["dir"], run["metrics"]
    if (d / FAILED).exists():
        return "failed: " + (d / FAILED).read_text(errors="replace").strip().splitlines()[0][:200]
    if not (d / DONE).exists():
        return "unfinished (no done marker)"
    why = metrics_problem(m)  # strings where numbers belong, scores outside [0, 1], non-finite scores
    if why:
        return f"metrics.json: {why}"
    if (d / "epochs.csv").exists():
        try:
            epochs = pd.read_csv(d / "epochs.csv")
        except (OSError, ValueError) as e:
            return f"epochs.csv unreadable ({e})"
        for col in ("train_loss", "dev_weighted_f1"):
            if col in epochs and not pd.api.types.is_numeric_dtype(epochs[col]):
                return f"epochs.csv: {col} holds values that are not numbers"
        if "train_loss" in epochs:
            bad = ~np.isfinite(pd.to_numeric(epochs["train_loss"], errors="coerce").to_numpy(float))
            if bad.any():
                first = int(np.argmax(bad))
                epoch = epochs["epoch"].iloc[first] if "epoch" in epochs else first + 1
                return f"non-finite training loss at epoch {epoch} (a diverged run)"
    return None


def _fold_free(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A run's encoders and cache record with each per-fold group (``<name>@fold<k>``, one encoder
    fine-tuned per fold) named by its base name: the K folds of one sweep are one configuration."""
    encoders = dict(cfg.get("encoders") or {})
    cache = cfg.get("cache")
    per_fold = {m: parse_fold_group(str(e))[0] for m, e in encoders.items() if parse_fold_group(str(e))[1] is not None}
    if not per_fold:
        return encoders, cache
    cache = dict(cache or {})
    cache["groups"] = {**(cache.get("groups") or {}), **{m: f"{base}@fold*" for m, base in per_fold.items()}}
    return {**encoders, **{m: f"{base}@fold*" for m, base in per_fold.items()}}, cache


def _group_key(cfg: dict[str, Any]) -> str:
    """Everything that defines a configuration except the seed and the fold index (and the fold's
    own group of a per-fold encoder)."""
    train = {k: v for k, v in cfg.get("train", {}).items() if k != "seed"}
    folds = cfg.get("folds")
    folds = {k: v for k, v in folds.items() if k != "fold"} if folds else None
    encoders, cache = _fold_free(cfg)
    return config_hash({"head": cfg.get("head"), "variant": cfg.get("variant"), "head_config": cfg.get("head_config"),
                        "encoders": encoders, "train": train, "folds": folds, "cache": cache})


def _protocol(cfg: dict[str, Any]) -> str:
    folds = cfg.get("folds")
    if not folds:
        return "official split"
    if folds.get("grouping") == "session":
        return f"leave-one-session-out ({folds['n_folds']} folds)"
    note = " (pooled: leaks context)" if folds.get("grouping") == "utterance" else ""
    return f"{folds['n_folds']}-fold by {folds['grouping']}{note}"


def _pair_key(cfg: dict[str, Any]) -> str:
    """What an ablation variant shares with its ``full``: the configuration without the variant's
    switches (the user's overrides instead of the resolved head config), seed and fold."""
    train = {k: v for k, v in cfg.get("train", {}).items() if k != "seed"}
    folds = cfg.get("folds")
    folds = {k: v for k, v in folds.items() if k != "fold"} if folds else None
    encoders, cache = _fold_free(cfg)
    return config_hash({"head": cfg.get("head"), "overrides": cfg.get("overrides", {}), "encoders": encoders,
                        "train": train, "folds": folds, "cache": cache})


def _run_key(run: dict[str, Any]) -> tuple[Any, Any]:
    """(seed, fold) of a run: how runs of two variants are paired."""
    folds = run["config"].get("folds") or {}
    return run["metrics"].get("seed", run["config"].get("train", {}).get("seed")), folds.get("fold")


def _deltas(groups: Mapping[str, list[dict[str, Any]]]) -> dict[str, Comparison]:
    """group key -> the group's :class:`Comparison` against the ``full`` variant of its pair key."""
    full = {_pair_key(m[0]["config"]): m for m in groups.values() if m[0]["config"].get("variant") == "full"}
    out = {}
    for key, members in groups.items():
        ref = full.get(_pair_key(members[0]["config"]))
        if ref is None or ref is members:
            continue
        c = compare({_run_key(r): r["dir"] for r in ref}, {_run_key(r): r["dir"] for r in members})
        if c is not None:
            out[key] = c
    return out


def weights_summary(configs: Sequence[dict[str, Any]]) -> str:
    """The loaded weights of a configuration's runs (their ``config.json`` ``head_resolved.weights``):
    ``"text=pretrained 1a2b3c4d, audio=random"``; a pre-trained side whose hash differs between runs
    says so. "" when the head loads no weights."""
    sides: dict[str, list[dict[str, Any]]] = {}
    for cfg in configs:
        for side, w in ((cfg.get("head_resolved") or {}).get("weights") or {}).items():
            if isinstance(w, dict):
                sides.setdefault(side, []).append(w)
    out = []
    for side, ws in sides.items():
        origins = sorted({str(w.get("origin", "?")) for w in ws})
        hashes = sorted({str(w.get("sha256", ""))[:8] for w in ws})
        if origins == ["pretrained"]:
            out.append(f"{side}=pretrained {hashes[0]}" if len(hashes) == 1 else f"{side}=pretrained ({len(hashes)} different hashes!)")
        else:
            out.append(f"{side}={'/'.join(origins)}")
    return ", ".join(out)


def summary_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: mean ± std of the test scores over its runs; for an ablation
    variant whose ``full`` is among the runs, Δ test W-F1 with its 95 % intervals
    (``delta_wf1``; ``delta_ci``: seeds x test dialogues; ``delta_ci_seeds``: over seeds, or
    seeds x folds corrected; ``delta_ci_test``: over test dialogues; :mod:`erc.train.intervals`)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_group_key(r["config"]), []).append(r)
    deltas = _deltas(groups)
    rows = []
    for gkey, members in groups.items():
        cfg, m0 = members[0]["config"], members[0]["metrics"]
        tests = [m["metrics"].get("test") or {} for m in members]
        row: dict[str, Any] = {
            "dataset": members[0]["dataset"],
            "head": str(m0.get("head", cfg.get("head", "?"))).split(":")[-1],
            "variant": m0.get("variant", cfg.get("variant", "?")),
            "modalities": ",".join(cfg.get("encoders", {}) or m0.get("modalities", [])),
            "encoders": ",".join(f"{k}={v}" for k, v in (cfg.get("encoders") or {}).items()),
            "protocol": _protocol(cfg),
            "runs": len(members),
            "seeds": ",".join(str(m["metrics"].get("seed", "?")) for m in members),
            "dirs": ";".join(str(m["dir"]) for m in members),
            "weights": weights_summary([m["config"] for m in members]),
        }
        for key, short in (("weighted_f1", "test_wf1"), ("accuracy", "test_acc"), ("macro_f1", "test_macro_f1")):
            vals = [t[key] for t in tests if key in t]
            row[f"{short}_mean"], row[f"{short}_std"] = (v * 100 for v in mean_std(vals))
            row[short] = summarise(vals)
        devs = [m["metrics"]["dev"]["weighted_f1"] for m in members if m["metrics"].get("dev")]
        row["dev_wf1"] = summarise(devs)
        c = deltas.get(gkey)
        row["delta_wf1"] = f"{c.delta * 100:+.2f}" if c else ""
        row["delta_ci"] = format_ci(c.combined_ci) if c else ""
        row["delta_ci_seeds"] = format_ci(c.runs_ci) if c else ""
        row["delta_ci_test"] = format_ci(c.dialogue_ci) if c else ""
        for name in (tests[0].get("per_class_f1") or {}):
            mean = mean_std([t.get("per_class_f1", {}).get(name, math.nan) for t in tests])[0]
            row[f"f1_{name}"] = "-" if math.isnan(mean) else round(mean * 100, 2)  # "-": class absent
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["head"], r["variant"], r["modalities"]))


def plot_confusion(metrics: dict[str, Any], path: Path, title: str = "") -> None:
    """Counts annotated, colours row-normalised (recall per true class)."""
    cm = np.asarray(metrics["confusion"], dtype=float)
    labels = metrics.get("labels") or [str(i) for i in range(len(cm))]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="row-normalised")
    ax.set_title(title or "test confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(epochs: pd.DataFrame, path: Path, best_epoch: int | None = None, title: str = "") -> None:
    """Train loss (left axis) and dev weighted F1 (right axis) per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if "train_loss" in epochs:
        ax.plot(epochs["epoch"], epochs["train_loss"], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(epochs["epoch"], epochs["dev_weighted_f1"] * 100, color="tab:orange", label="dev W-F1")
    ax2.set_ylabel("dev weighted F1 (%)", color="tab:orange")
    if best_epoch:
        ax2.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title or "training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plots(run: dict[str, Any]) -> None:
    d, m = run["dir"], run["metrics"]
    stamp = (d / "metrics.json").stat().st_mtime
    title = f"{run['dataset']}: {str(m.get('head', '')).split(':')[-1]} {m.get('variant', '')} seed {m.get('seed', '')}"
    conf = d / "confusion.png"
    if m.get("test") and m["test"].get("confusion") and not (conf.exists() and conf.stat().st_mtime >= stamp):
        plot_confusion(m["test"], conf, f"{title} (test)")
    curves = d / "curves.png"
    if (d / "epochs.csv").exists() and not (curves.exists() and curves.stat().st_mtime >= stamp):
        plot_curves(pd.read_csv(d / "epochs.csv"), curves, m.get("best_epoch"), title)


def write_report(root: str | Path, plots: bool = True) -> pd.DataFrame:
    """Write ``report.md`` and ``report.csv`` under ``root`` (and per-run PNGs); return the table.

    Only finished runs with finite scores are results (:func:`not_a_result`); the others are
    listed under "Not reported" in report.md and in ``df.attrs["excluded"]`` as ``(dir, why)``.
    A run folder that cannot be written gets no PNGs (``df.attrs["no_plots"]``).
    """
    root = Path(root)
    check_writable_folder(root, "report folder")
    loaded = [_load(r) for r in find_runs(root)]
    excluded = [(r["dir"], why) for r in loaded if (why := not_a_result(r)) is not None]
    skip = {d for d, _ in excluded}
    runs = [r for r in loaded if r["dir"] not in skip]
    no_plots: list[Path] = []
    if plots:
        for r in runs:
            try:
                _plots(r)
            except OSError:  # a read-only run folder: the tables do not need its PNGs
                no_plots.append(r["dir"])
    df = pd.DataFrame(summary_rows(runs))
    df.to_csv(root / "report.csv", index=False)
    lines = [f"# Report: {root}", "", f"{len(runs)} runs. Test scores at the best-dev epoch, mean ± std (%) over runs.", ""]
    if len(df):
        cols = ["dataset", "head", "variant", "modalities", "protocol", "runs", "test_wf1", "test_acc", "test_macro_f1", "dev_wf1"]
        if (df["weights"] != "").any():
            cols.append("weights")
        if (df["delta_wf1"] != "").any():
            cols += ["delta_wf1", "delta_ci", "delta_ci_seeds", "delta_ci_test"]
        cols += [c for c in df.columns if c.startswith("f1_")]
        lines.append(_markdown(df[cols]))
        if (df["delta_wf1"] != "").any():
            lines += ["", "delta_wf1: test W-F1 minus the `full` variant's (seed-paired mean, points). delta_ci: 95 % "
                      "interval with seeds and test dialogues resampled together; delta_ci_seeds: over seeds (paired t; "
                      "with folds, seeds x folds with the Nadeau-Bengio correction); delta_ci_test: over test dialogues "
                      "(cluster bootstrap, trained runs fixed). " + ZERO_NOTE]
    if excluded:
        lines += ["", f"Not reported ({len(excluded)} run folders):", ""]
        lines += [f"- `{d}`: {why}" for d, why in excluded]
    (root / "report.md").write_text("\n".join(lines) + "\n")
    df.attrs["excluded"] = excluded
    df.attrs["no_plots"] = no_plots
    return df


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join("" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def ablation_table(results: Mapping[str, Sequence[float]], reference: str = "full",
                   comparisons: Mapping[str, Comparison | None] | None = None) -> str:
    """Paper-style rows ``variant | W-F1 mean ± std | Δ vs full`` (values in 0..1, shown in %).

    ``results``: variant -> test weighted F1 of each seed. Δ is against ``reference`` (or the first).
    With ``comparisons`` (variant -> :func:`erc.train.intervals.compare` against the reference), the
    ``delta`` column is the mean of the seed-paired differences, and three 95 % interval columns
    follow: ``95% CI`` (seeds x test dialogues, the default), ``CI seeds`` (paired t, or with folds
    the corrected t over seeds x folds) and ``CI dialogues`` (trained runs fixed); an interval that
    contains 0 is marked ``*`` (notes under the table).
    """
    ref = reference if reference in results else next(iter(results), None)
    ref_mean = mean_std(results[ref])[0] if ref is not None else math.nan
    if comparisons is None:
        lines = ["| variant | W-F1 (%) | Δ vs " + str(ref) + " |", "|---|---|---|"]
        for name, vals in results.items():
            mean = mean_std(vals)[0]
            delta = "—" if name == ref else f"{(mean - ref_mean) * 100:+.2f}"
            lines.append(f"| {name} | {summarise(vals)} | {delta} |")
        return "\n".join(lines)
    folds = any(c is not None and c.folds for c in comparisons.values())
    seeds_col = "CI seeds x folds (corrected t)" if folds else "CI seeds (paired t)"
    lines = [f"| variant | W-F1 (%) | delta vs {ref} | 95% CI | {seeds_col} | CI dialogues |", "|---|---|---|---|---|---|"]
    for name, vals in results.items():
        c = comparisons.get(name)
        if name == ref or c is None:
            lines.append(f"| {name} | {summarise(vals)} | {'—' if name == ref else 'n/a'} | | | |")
        else:
            lines.append(f"| {name} | {summarise(vals)} | {c.delta * 100:+.2f} | {format_ci(c.combined_ci)} | "
                         f"{format_ci(c.runs_ci)} | {format_ci(c.dialogue_ci)} |")
    return "\n".join([*lines, "", INTERVALS_NOTE, ZERO_NOTE])
