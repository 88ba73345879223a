"""Encoders fine-tuned by ``erc finetune``: reading their ``finetune.json`` record at extraction.

A fine-tuned folder is a ``save_pretrained`` folder plus ``finetune.json`` (what it was trained on,
whose labels it saw). ``erc extract --text DIR`` reads it like any local model; this module adds:

- the record on the cache group (``finetune`` attribute, :func:`record_of`), which the leak guard
  (:mod:`erc.train.leaks`) reads, and the fine-tuned weights' hash in the group's config hash, so
  re-fine-tuning into the same folder re-extracts;
- the text window the encoder was fine-tuned on (context, speaker names, length) and the pooling
  its classifier read (the first token, or the target turn's token mean) as the extraction's defaults (``--set text.*`` still wins);
- per-fold folders (``erc finetune --folds``): ``DIR/finetune.json`` of kind ``folds`` lists
  ``DIR/fold<k>``, and extraction writes one group per fold, named ``<name>@fold<k>``;
- cross-fitted folders (``erc finetune --crossfit K``): ``DIR/finetune.json`` of kind ``crossfit``
  lists ``DIR/part<k>`` and ``DIR/full``, and extraction writes one group whose rows each come from
  an encoder that never saw their label (:mod:`erc.extract.crossfit`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from erc.errors import UserError
from erc.extract.crossfit import CrossFitEncoder
from erc.features.schema import fold_group_name

if TYPE_CHECKING:
    from erc.extract.encoders.base import Encoder

FINETUNE_JSON = "finetune.json"
# the fields of HFTextConfig that fine-tuning fixed (the record's "input"): the text window, and
# the pooling the classification head was trained on (the first token, or the target turn's mean)
INPUT_FIELDS = ("context", "context_future", "speaker_names", "max_length", "pooling", "pool_over")


UNFINISHED = Path("checkpoints") / "erc_run.json"  # what erc finetune leaves until its record is written


def read_record(folder: str | Path, unfinished_ok: bool = False) -> dict[str, Any] | None:
    """The ``finetune.json`` of ``folder`` (None when the folder has none). A folder where ``erc
    finetune`` started but wrote no record yet (killed, or still running) holds weights trained on
    labels with nothing to say whose: refused (UserError), so it never passes as a frozen encoder
    (``unfinished_ok``: None instead, for erc finetune resuming it)."""
    path = Path(folder).expanduser() / FINETUNE_JSON
    if not path.is_file():
        if not unfinished_ok and (Path(folder).expanduser() / UNFINISHED).is_file():
            raise UserError(f"{folder} holds an unfinished `erc finetune` (no {FINETUNE_JSON} yet): run the same "
                            "erc finetune command again to finish it, then extract")
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({e}); fine-tune again into that folder") from None
    if not isinstance(record, dict) or "kind" not in record:
        raise UserError(f"{path} is not an erc finetune record (no 'kind'); fine-tune again into that folder")
    return record


def record_of(encoder: Encoder) -> dict[str, Any] | None:
    """The fine-tuning record of an encoder whose ``model`` is a fine-tuned folder (or of a
    cross-fitted encoder), else None."""
    if isinstance(encoder, CrossFitEncoder):
        return encoder.finetune_record()
    model = getattr(encoder.config, "model", "")
    if not model or not Path(str(model)).expanduser().is_dir():
        return None
    record = read_record(model)
    return record if record is not None and record.get("kind") == "single" else None


def input_defaults(record: dict[str, Any], modality: str) -> dict[str, str]:
    """``--set`` style defaults of the text window the encoder was fine-tuned on."""
    if modality != "text":
        return {}
    given = record.get("input") or {}
    return {k: str(given[k]).lower() if isinstance(given[k], bool) else str(given[k])
            for k in INPUT_FIELDS if k in given}


def build_encoders(modality: str, name: str, overrides: dict[str, str] | None = None) -> list[Encoder]:
    """The encoders ``--<modality> name`` stands for: none, one, or (a per-fold fine-tuned folder)
    one per fold, named ``<name>@fold<k>``. A fine-tuned folder's text window is the default."""
    from erc.extract.encoders import build_encoder

    overrides = dict(overrides or {})
    folder = Path(name).expanduser() if name and name.lower() != "none" else None
    record = read_record(folder) if folder is not None and folder.is_dir() else None
    if record is None:
        enc = build_encoder(modality, name, overrides)
        return [] if enc is None else [enc]
    if record.get("modality") != modality:
        raise UserError(f"{name} was fine-tuned as a {record.get('modality')} encoder, not a {modality} one")
    settings = {**input_defaults(record, modality), **overrides}
    split = record.get("split") or {}
    if record["kind"] == "single" and split.get("kind") == "fold" and "name" not in overrides:
        # one fold's folder given alone (DIR/fold2): the group name it has among its folds
        settings["name"] = fold_group_name(folder.resolve().parent.name, int(split["fold"]))  # type: ignore[union-attr]
    if record["kind"] == "single":
        return [e for e in [build_encoder(modality, name, settings)] if e is not None]
    base = overrides.get("name") or name.rstrip("/").split("/")[-1]
    if record["kind"] == "crossfit":
        return [_crossfit(modality, folder, record, {**settings, "name": base})]  # type: ignore[arg-type]
    out = []
    for fold in record.get("folds", []):
        _finished(folder, fold, f"fold {fold['fold']}")  # type: ignore[arg-type]
        sub = folder / fold["dir"]  # type: ignore[operator]
        enc = build_encoder(modality, str(sub), {**settings, "name": fold_group_name(base, int(fold["fold"]))})
        if enc is not None:
            out.append(enc)
    if not out:
        raise UserError(f"{name}/{FINETUNE_JSON} lists no finished fold")
    return out


def _finished(folder: Path, sub: dict[str, Any], what: str) -> dict[str, Any]:
    record = read_record(folder / sub["dir"])
    if record is None:
        raise UserError(f"{folder / sub['dir']} has no {FINETUNE_JSON}: {what} did not finish; run "
                        "`erc finetune` again with the same options to complete it")
    return record


def _crossfit(modality: str, folder: Path, record: dict[str, Any], settings: dict[str, str],
              make: Callable[[Path], Encoder | None] | None = None) -> Encoder:
    """The one encoder of a cross-fitted folder: each part's encoder on its held-out utterances,
    ``full``'s on the rest. ``make``: builds a sub-folder's encoder (default: as ``--text DIR``
    with ``settings``)."""
    from erc.extract.encoders import build_encoder

    build = make or (lambda sub: build_encoder(modality, str(sub), settings))
    parts, records, full, full_record = [], [], None, {}
    for sub in record.get("parts") or []:
        rec = _finished(folder, sub, f"part {sub.get('part')}" if sub.get("part") is not None else sub["dir"])
        enc = build(folder / sub["dir"])
        if enc is None:
            raise UserError(f"{folder / sub['dir']} is not an encoder")
        if sub.get("part") is None:
            full, full_record = enc, rec
        else:
            parts.append(enc)
            records.append(rec)
    if full is None or not parts:
        raise UserError(f"{folder}/{FINETUNE_JSON} lists no full encoder or no part; fine-tune again with --crossfit")
    _check_parts(folder, record, records, full_record)
    return CrossFitEncoder(folder, full, parts, record, records + [full_record])


def _check_parts(folder: Path, record: dict[str, Any], parts: list[dict[str, Any]], full: dict[str, Any]) -> None:
    """The part folders belong to this cross-fitting (a killed ``--overwrite`` re-run can leave
    parts of another): the same corpus and configuration, parts 0..K-1 of K, held-out sets that do
    not overlap and cover every train label ``full`` saw (else a train row would be encoded by
    ``full``, which trained on it). A mismatch is a one-line UserError."""
    k = record.get("n_parts")
    redo = "; run the same `erc finetune --crossfit` again (with --overwrite) to rebuild them"
    for i, rec in enumerate(parts):
        split = rec.get("split") or {}
        if split.get("kind") != "crossfit_part" or split.get("part") != i or split.get("n_parts") != k or \
                rec.get("config") != full.get("config") or \
                (rec.get("dataset") or {}).get("manifest_hash") != (full.get("dataset") or {}).get("manifest_hash"):
            raise UserError(f"{folder}: part{i} is not part {i} of {k} of this cross-fitting{redo}")
    held = [set(rec.get("held_out") or []) for rec in parts]
    union = set().union(*held)
    if sum(len(h) for h in held) != len(union):
        raise UserError(f"{folder}: the parts' held-out utterances overlap{redo}")
    uncovered = set((full.get("labels_seen") or {}).get("train", [])) - union
    if uncovered:
        raise UserError(f"{folder}: {len(uncovered)} train utterances are held out by no part (e.g. "
                        f"{sorted(uncovered)[0]}), so the full encoder, which trained on them, would encode them{redo}")


def encoder_of_group(modality: str, attrs: dict[str, Any]) -> Encoder:
    """Rebuild the encoder that wrote a cache group from its attributes (``erc predict``): as
    :func:`erc.extract.encoders.encoder_from_attrs`, and a cross-fitted group from its folder (new
    conversations go to its ``full`` encoder, as dev and test did)."""
    from erc.extract.encoders import encoder_from_attrs

    if attrs.get("encoder_class") != CrossFitEncoder.__name__:
        return encoder_from_attrs(modality, attrs)
    config = attrs.get("config")
    config = dict(json.loads(config) if isinstance(config, str) else config or {})
    folder = Path(str(config.get("model", "")))
    record = read_record(folder) if folder.is_dir() else None
    if record is None or record.get("kind") != "crossfit":
        raise UserError(f"the run's {modality} features come from the cross-fitted folder {folder}, which is gone "
                        "or no longer cross-fitted; restore it, or train on another encoder's features")
    sub_attrs = {**attrs, "encoder_class": config.get(CrossFitEncoder.SUB_CLASS)}
    return _crossfit(modality, folder, record, {},
                     lambda sub: encoder_from_attrs(modality, {**sub_attrs, "config": {**config, "model": str(sub)}}))


def as_record(value: str | dict[str, Any]) -> dict[str, Any]:
    """A group's ``finetune`` attribute (a JSON string in a cache file, a dict in memory) as a dict."""
    return json.loads(value) if isinstance(value, str) else dict(value)


def describe_record(value: str | dict[str, Any]) -> str:
    """One line for ``erc cache info``: base model, whose labels it saw, the selected epoch."""
    r = as_record(value)
    base = r.get("base_model") or {}
    seen = r.get("labels_seen") or {}
    split = r.get("split") or {}
    where = (f"fold {split.get('fold')} of {split.get('n_folds')} ({split.get('grouping')} grouping)"
             if split.get("kind") == "fold" else
             f"the official split, cross-fitted over {split.get('n_parts')} parts of train (each train utterance "
             "encoded by an encoder that did not see its label)" if split.get("kind") == "crossfit" else
             "the official split")
    return (f"from {base.get('model')} (weights sha256 {str(base.get('weights_sha256', ''))[:12]}) on "
            f"{r.get('dataset', {}).get('name')} {where}: labels of {len(seen.get('train', []))} train "
            f"utterances (trained on) and {len(seen.get('dev', []))} dev (epoch selection); best epoch "
            f"{r.get('best_epoch')} dev W-F1 {r.get('best_dev_weighted_f1')}, seed {r.get('seed')}")
