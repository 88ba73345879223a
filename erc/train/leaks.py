"""The label-leak guard: no utterance scored as test may have had its label seen by an encoder
that produced a feature in use.

An encoder fine-tuned by ``erc finetune`` carries its ``finetune.json`` record on its cache group
(attribute ``finetune``): ``labels_seen`` lists the utterances it trained on (``train``) and
chose its epoch on (``dev``). A frozen encoder has no record and always passes.

Per-fold encoders (``erc finetune --folds``) are stored as one group per fold, named
``<name>@fold<k>`` (:func:`erc.features.schema.fold_group_name`, the naming extraction and training
share): fold ``k`` must read its own group, :func:`fold_encoders` maps a run's groups to fold ``k``'s.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from erc.errors import UserError
from erc.features.reader import FeatureCache
from erc.features.schema import parse_fold_group
from erc.features.source import FeatureSource
from erc.train.dialogues import DialogueData
from erc.train.folds import FoldSpec

SHOW = 3  # ids named in the error


def _record(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    value = attrs.get("finetune")
    if not value:
        return None
    return json.loads(value) if isinstance(value, str) else dict(value)


def seen_ids(attrs: Mapping[str, Any]) -> set[str]:
    """The utterance ids whose labels the encoder of a group saw (train and dev); empty when frozen."""
    record = _record(attrs)
    if record is None:
        return set()
    seen = record.get("labels_seen") or {}
    return set(seen.get("train", [])) | set(seen.get("dev", []))


def _trained_on(record: Mapping[str, Any]) -> str:
    split = record.get("split") or {}
    if split.get("kind") == "fold":
        return (f"fold {split.get('fold')} of {split.get('n_folds')} ({split.get('grouping')}, fold seed "
                f"{split.get('fold_seed')})")
    if split.get("kind") == "crossfit":
        return f"the official split's train, cross-fitted over {split.get('n_parts')} parts"
    if split.get("kind") == "crossfit_part":
        return f"the official train less part {split.get('part')} of {split.get('n_parts')} (a cross-fit part)"
    return "the official split" if split.get("kind") == "official" else "an unrecorded split"


def check_no_label_leak(groups_attrs: Mapping[str, Mapping[str, Any]], scored_test_ids: Sequence[str], where: str) -> None:
    """Raise a one-line :class:`UserError` when an utterance of ``scored_test_ids`` had its label
    seen by the encoder of a group in ``groups_attrs`` ("modality/group" -> the group's attributes).

    where: what is being scored, e.g. "fold 2 of 5" or "the official test split"."""
    for group, attrs in groups_attrs.items():
        seen = seen_ids(attrs)
        if not seen:
            continue
        leaked = [u for u in scored_test_ids if u in seen]
        if leaked:
            more = ", ..." if len(leaked) > SHOW else ""
            raise UserError(
                f"{where}: {len(leaked)} of the {len(scored_test_ids)} test utterances had their labels seen by "
                f"the fine-tuned encoder of {group} ({', '.join(leaked[:SHOW])}{more}), fine-tuned on "
                f"{_trained_on(_record(attrs) or {})}; score them with features "
                "fine-tuned without them (`erc finetune --folds` for fold runs, each fold on its own "
                "<name>@fold<k> group) or with a frozen encoder")


def dev_label_warning(groups_attrs: Mapping[str, Mapping[str, Any]], dev_ids: Sequence[str]) -> str | None:
    """A warning (not an error: test is unaffected) when an utterance of ``dev_ids``, the rows a run
    selects its epoch on, was TRAINED on by the encoder of a group in ``groups_attrs``: its dev
    scores and chosen epoch are then optimistic. It happens when a run carves dev from train
    otherwise than the fine-tuning did (another ``dev_fraction`` or fold seed). None when clean."""
    hits: list[tuple[int, str, Any]] = []  # (how many, "group (first ids)", its dev_fraction) per group
    for group, attrs in groups_attrs.items():
        record = _record(attrs)
        trained = set(((record or {}).get("labels_seen") or {}).get("train", []))
        hit = [u for u in dev_ids if u in trained]
        if hit:
            more = ", ..." if len(hit) > SHOW else ""
            fraction = ((record or {}).get("config") or {}).get("dev_fraction")
            hits.append((len(hit), f"{group} ({', '.join(hit[:SHOW])}{more})", fraction))
    if not hits:
        return None
    (n, first, fraction), rest = hits[0], hits[1:]
    others = "".join(f", {m} by that of {named}" for m, named, _ in rest)  # every group that trained on dev
    how = f"dev_fraction {fraction}, the fine-tuning's" if fraction is not None else "the fine-tuning's split"
    return (f"{n} of the {len(dev_ids)} dev utterances were trained on by the fine-tuned encoder of "
            f"{first}{others}: the dev scores and the epoch chosen on them are "
            f"optimistic (test is not affected); carve dev as the fine-tuning did ({how})")


def group_attrs_of(data: DialogueData) -> dict[str, dict[str, Any]]:
    """"modality/group" -> attributes of each encoder group ``data`` reads."""
    return {f"{m}/{data.encoders[m]}": dict(g.attrs) for m, g in data.groups.items()}


def scored_test_ids(data: DialogueData) -> list[str]:
    """Ids of the labelled utterances of ``data``'s current "test" split (what a run scores)."""
    rows = data.utterances_in("test")
    return [data.utterance_ids[r] for r in rows if int(data.y[r]) >= 0]


def dev_warning(data: DialogueData) -> str | None:
    """:func:`dev_label_warning` on ``data``'s current dev split (its labelled utterances)."""
    dev = [data.utterance_ids[r] for r in data.utterances_in("dev") if int(data.y[r]) >= 0]
    return dev_label_warning(group_attrs_of(data), dev)


def check_data(data: DialogueData, where: str | None = None) -> None:
    """The guard on ``data`` as it stands (its current splits: official, or the fold it is a view of)."""
    if where is None:
        f = data.folds
        where = f"fold {f.fold} of {f.n_folds} ({f.grouping})" if f is not None else "the official test split"
    check_no_label_leak(group_attrs_of(data), scored_test_ids(data), where)


def fold_encoders(available: Mapping[str, Sequence[str]], encoders: Mapping[str, str], fold: int) -> dict[str, str]:
    """The groups fold ``fold`` reads: a per-fold group ``<name>@fold<j>`` (or the bare ``<name>``
    when only per-fold groups have it) is replaced by ``<name>@fold<fold>``; other groups are kept. ``available``: modality -> the cache's groups
    (``FeatureCache.encoders(m)``). A missing fold group is a one-line UserError."""
    out = {}
    for m, enc in encoders.items():
        base, k = parse_fold_group(enc)
        have = available.get(m, ())
        if k is None and (enc in have or f"{enc}@fold{fold}" not in have):
            out[m] = enc  # a group of the whole corpus (a bare name of per-fold groups is read as them)
            continue
        mine = f"{base}@fold{fold}"
        if mine not in available.get(m, ()):
            raise UserError(f"fold {fold} needs its own {m} group {mine!r}, which the cache lacks (has: "
                            f"{', '.join(available.get(m, ()))}); extract the per-fold fine-tuned folder with "
                            "`erc extract --text DIR` (one group per fold)")
        out[m] = mine
    return out


def predicted_test_ids(df: Any, labels: Sequence[str]) -> list[str]:
    """Ids of the rows of a prediction frame (``erc.train.ensemble.ensemble_frame``) that ``erc predict``
    scores as test: split "test" (new conversations' default) and a label the run knows (none when
    the frame has no label column: nothing is scored)."""
    if "label" not in df.columns or "split" not in df.columns:
        return []
    keep = df["label"].isin(list(labels)) & (df["split"] == "test")
    return [str(u) for u in df.loc[keep, "utterance_id"]]


def cache_groups(cache: FeatureSource, modalities: Sequence[str]) -> dict[str, list[str]]:
    """Modality -> the cache's encoder groups (the ``available`` of :func:`fold_encoders`)."""
    return {m: list(cache.encoders(m)) for m in modalities}


def check_cache_prediction(cache: FeatureSource, encoders: Mapping[str, str], df: Any,
                           labels: Sequence[str]) -> None:
    """The guard on a prediction frame ``df`` made from ``cache``'s groups ``encoders`` (modality ->
    group): the attributes of the groups actually read decide."""
    attrs = {f"{m}/{e}": dict(cache.group(m, e).attrs) for m, e in encoders.items()}
    check_no_label_leak(attrs, predicted_test_ids(df, labels), "erc predict (the test split)")


def check_fold_groups(data: DialogueData, n_folds: int, grouping: str, fold_seed: int = 0) -> None:
    """Before any fold trains: fold k's test utterances against the records of the groups fold k
    will read (its own ``<name>@fold<k>`` groups, :func:`fold_encoders`). Reads attributes only."""
    with FeatureCache(data.cache_path) as fc:
        available = cache_groups(fc, list(data.encoders))
        for k in range(n_folds):
            spec = FoldSpec(n_folds, k, grouping, fold_seed)  # type: ignore[arg-type]
            groups = fold_encoders(available, data.encoders, k)
            attrs = {f"{m}/{e}": dict(fc.group(m, e).attrs) for m, e in groups.items()}
            check_no_label_leak(attrs, scored_test_ids(data.for_fold(spec)), f"fold {k} of {n_folds} ({grouping})")


def fold_view(data: DialogueData, spec: FoldSpec, max_frames: int | None = None) -> DialogueData:
    """The data fold ``spec`` trains on: ``data.for_fold(spec)`` when its groups are not per fold,
    else the cache read again with fold k's own groups (``max_frames`` as ``data`` was loaded with).
    Not guarded here: :func:`erc.train.loop.train_run` checks every run's data (:func:`check_data`)."""
    with FeatureCache(data.cache_path) as fc:
        groups = fold_encoders(cache_groups(fc, list(data.encoders)), data.encoders, spec.fold)
        return data.for_fold(spec) if groups == data.encoders else \
            DialogueData(fc, groups, list(data.frames), max_frames, spec, data.dev_fraction)
