"""Which data a training command reads: the cache, the dataset name its runs are filed under, and
the modalities with their encoder groups. The CLI (``train-head``, ``ablate``) and the Python API
choose them here, so both read the same data and file runs in the same folders.

>>> choice = choose_data("demo", modalities="t,a")
>>> run_sweep(choice.cache, spec, choice.modalities, cfg, choice.run_dir("matav", spec), seeds=3)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erc.config import parse_assignments
from erc.errors import UserError
from erc.features.reader import FeatureCache
from erc.features.schema import default_cache_path
from erc.heads.registry import HeadSpec
from erc.train.dialogues import canonical_modality
from erc.train.runs import default_run_dir

KNOWN_MODALITIES = ("text", "audio", "video")


def parse_modalities(value: str | None) -> list[str] | None:
    """``"t,a"`` / ``"text,audio"`` -> ``["text", "audio"]``; None keeps the cache's modalities. An
    empty entry (``","``, ``"t,"``, ``""``) is refused: it would quietly mean something else."""
    if value is None:
        return None
    out = []
    for part in value.split(","):
        if not part.strip():
            raise UserError(f"--modalities {value!r} has an empty entry; give t,a,v or text,audio,video (or leave "
                            "--modalities out for every modality in the cache)")
        m = canonical_modality(part)
        if m not in KNOWN_MODALITIES:
            raise UserError(f"unknown modality {part.strip()!r}; use t,a,v or text,audio,video")
        if m not in out:
            out.append(m)
    return out


def parse_encoders(value: str | None) -> dict[str, str]:
    """``"text=minilm,audio=mel"`` -> ``{"text": "minilm", "audio": "mel"}``."""
    out: dict[str, str] = {}
    for key, enc in parse_assignments([p for p in (value or "").split(",") if p.strip()]).items():
        m = canonical_modality(key)
        if m not in KNOWN_MODALITIES:
            raise UserError(f"--encoders keys are modalities (text, audio, video); got {key!r}")
        out[m] = enc
    return out


@dataclass(frozen=True)
class DataChoice:
    """cache: the feature cache file; dataset: the name runs are filed under (``runs/<dataset>/``);
    modalities: modality -> encoder group (None = the cache's first group of that modality)."""

    cache: Path
    dataset: str
    modalities: dict[str, str | None]

    def run_dir(self, model: str, spec: HeadSpec, root: Path | None = None) -> Path:
        """The run folder of ``spec`` (named ``model`` as the user wrote it) on this data:
        :func:`erc.train.runs.default_run_dir`."""
        return default_run_dir(self.dataset, model, spec.variant, self.modalities, spec.overrides, root)


def choose_data(dataset: str = "iemocap", features: Path | None = None, modalities: str | None = None,
                encoders: str | None = None) -> DataChoice:
    """The cache (``features``, else ``features/<dataset>.h5``), its dataset name, and the modalities
    to use (``modalities``, else every modality the cache holds) with the ``encoders`` chosen
    (``"text=minilm"``). UserError when the cache is missing or unreadable, or names do not fit."""
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
    return DataChoice(Path(path), name, {m: encs.get(m) for m in mods})
