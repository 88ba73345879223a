"""The Python API of prediction: load a trained run (or a sweep's seeds) once, then predict
conversations given as Python objects, a DataFrame, a dataset or a cache file.

>>> from erc.apply import Predictor
>>> p = Predictor.load("runs/demo/matav-full-tav")          # a run folder, or a sweep of seeds
>>> df = p.predict([{"speaker": "Alex", "text": "I love this", "video": "clip.mp4", "audio": "clip.mp4"}])
>>> df[["utterance_id", "pred", *p.prob_columns]]

The encoders are those that made the run's training cache, rebuilt from its provenance (same
classes and configs, checked by config hash) and loaded once; the conversations go through the
same batching, decoding and encoding as ``erc extract`` and the same dialogue batches as training,
held in memory (no manifest, no cache file).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator, Literal

import pandas as pd

from erc.apply.conversations import Conversations, read_conversations
from erc.corpus import Corpus
from erc.device import is_cuda, resolve_device
from erc.errors import UserError
from erc.extract.finetuned import encoder_of_group
from erc.extract.encoders.base import Encoder
from erc.extract.in_memory import extract_in_memory
from erc.extract.run import ProgressFn, RunConfig, extract
from erc.features.reader import FeatureCache
from erc.features.source import FeatureSource
from erc.train.ensemble import Ensemble, ensemble_frame, load_ensemble
from erc.train.leaks import check_cache_prediction
from erc.train.progress import progress_bar

BadMedia = Literal["error", "absent"]


class Predictor:
    """A run's head(s) and encoders, loaded once. ``device``: "auto" (CUDA when there is one),
    "cpu", "cuda" or "cuda:N" (:mod:`erc.device`); encoders run in fp16 on CUDA, as in ``erc extract``."""

    def __init__(self, ensemble: Ensemble, device: str = "auto", workers: int = 2) -> None:
        self.ensemble = ensemble
        self.device = resolve_device(device)
        self.workers = workers
        self._encoders: list[Encoder] | None = None
        self.encoder_load_seconds = 0.0
        ensemble.to(self.device)

    @classmethod
    def load(cls, run: str | Path, device: str = "auto", load_encoders: bool = True, workers: int = 2) -> Predictor:
        """The run at ``run`` (a folder holding best.pt) or every finished run of the sweep folder
        ``run`` (``seed0..seedN``; their probabilities are averaged). ``load_encoders=False`` defers
        loading the encoders to the first prediction that needs them (a cache file needs none)."""
        p = cls(load_ensemble(run), device, workers)
        if load_encoders:
            p.encoders  # noqa: B018 - load now, so that the first prediction is not the slow one
        return p

    # ---- what the run is ------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.ensemble.labels)

    @property
    def prob_columns(self) -> list[str]:
        return [f"p_{label}" for label in self.labels]

    @property
    def n_runs(self) -> int:
        return len(self.ensemble.runs)

    @property
    def run_dirs(self) -> list[Path]:
        return list(self.ensemble.dirs)

    @property
    def encoders(self) -> list[Encoder]:
        """The run's encoders, rebuilt from its provenance and loaded on the device (once)."""
        if self._encoders is None:
            t0 = time.perf_counter()
            encs = []
            for modality in self.ensemble.encoders:
                enc = encoder_of_group(modality, self.ensemble.groups.get(modality, {}).get("attrs", {}))
                enc.check()
                enc.load(self.device, fp16=is_cuda(self.device))
                encs.append(enc)
            self._encoders = encs
            self.encoder_load_seconds = time.perf_counter() - t0
        return self._encoders

    def _frame_dtypes(self) -> dict[str, str]:
        return {m: str(g.get("attrs", {}).get("frame_dtype", "float16")) for m, g in self.ensemble.groups.items()}

    # ---- prediction -------------------------------------------------------------------------------
    def predict(self, conversations: Conversations, embeddings: bool = False, on_bad_media: BadMedia = "error",
                base: str | Path | None = None, progress: ProgressFn | None = None) -> pd.DataFrame:
        """One row per utterance: utterance_id, dialogue_id, turn, speaker, pred, ``p_<class>``
        (averaged over the runs); label and split where some utterance has a label; an
        ``embedding`` column (the first run's representation, ``[E]`` float32) with ``embeddings``.

        conversations: see :mod:`erc.apply.conversations`; relative media paths resolve against
            ``base`` (default: the working directory).
        on_bad_media: "error" (UserError) when a media file is not found or cannot be decoded;
            "absent": such an utterance is given to the head without that modality.
        """
        corpus = read_conversations(conversations, self.labels, base=base)
        return self.predict_corpus(corpus, embeddings, on_bad_media, progress)

    def predict_corpus(self, corpus: Corpus, embeddings: bool = False, on_bad_media: BadMedia = "error",
                       progress: ProgressFn | None = None, cache_path: str | Path | None = None) -> pd.DataFrame:
        """:meth:`predict` for a :class:`Corpus` (e.g. from ``erc.extract.datasets.load_dataset``);
        its labels are read against the run's class list. ``cache_path``: extract into that cache
        file (resumable, as ``erc extract``) and predict from it, instead of in memory."""
        corpus = Corpus(corpus.name, self.labels, corpus.utterances, corpus.root, corpus.options)
        if cache_path is not None:
            self._extract_to(corpus, Path(cache_path), progress)
            with FeatureCache(cache_path) as fc:
                absent = _check_media(fc, self.ensemble.encoders, on_bad_media)
                df = self._frame(fc, embeddings)
        else:
            groups = {m: g.get("attrs", {}) for m, g in self.ensemble.groups.items()}
            cache = extract_in_memory(corpus, self.encoders, groups, self._frame_dtypes(), self.workers, progress)
            absent = _check_media(cache, self.ensemble.encoders, on_bad_media)
            df = self._frame(cache, embeddings)
        df.attrs["absent"] = absent
        return df

    def predict_cache(self, path: str | Path, embeddings: bool = False) -> pd.DataFrame:
        """Every utterance of a cache file (e.g. ``features/demo.h5``, labelled or not); refused
        when its encoder groups, dims or label list differ from the run's."""
        with FeatureCache(path) as fc:
            df = self._frame(fc, embeddings)
            df.attrs["absent"] = {m: len(fc) - fc.group(m, e).n_present for m, e in self.ensemble.encoders.items()}
        return df

    def _extract_to(self, corpus: Corpus, cache_path: Path, progress: ProgressFn | None) -> None:
        dtypes = self._frame_dtypes()
        for enc in self.encoders:
            cfg = RunConfig(device=self.device, workers=self.workers, frame_dtype=dtypes.get(enc.modality, "float16"))
            extract(corpus, [enc], cache_path, cfg, f"erc predict --run {self.run_dirs[0]}", progress)

    def _frame(self, cache: FeatureSource, embeddings: bool) -> pd.DataFrame:
        df = ensemble_frame(self.ensemble, cache, self.device, embeddings=embeddings)
        check_cache_prediction(cache, self.ensemble.encoders, df, self.labels)  # before any score is shown
        if not (df["label"] != "").any():
            df = df.drop(columns=["label", "split"])
        df.attrs["runs"] = [str(d) for d in self.run_dirs]
        return df


def _check_media(cache: FeatureSource, encoders: dict[str, str], on_bad_media: BadMedia) -> dict[str, int]:
    """Per modality, how many utterances the head gets without it; UserError on files that are
    given but not found or not readable, unless ``on_bad_media == "absent"``."""
    if on_bad_media not in ("error", "absent"):
        raise UserError(f"on_bad_media must be 'error' or 'absent'; got {on_bad_media!r}")
    ids = cache.utterances()["utterance_id"]
    absent: dict[str, int] = {}
    for m, e in encoders.items():
        g = cache.group(m, e)
        status = cache.status(m, e)
        bad = [(uid, s) for uid, s in zip(ids, status) if s.startswith("failed") or "file not found" in s]
        if bad and on_bad_media == "error":
            uid, why = bad[0]
            raise UserError(f"{len(bad)} utterance(s) have {g.modality} media the run's {g.encoder} encoder cannot read, "
                            f"e.g. {uid}: {why} (fix the path, or treat it as absent: --skip-bad-media / "
                            "on_bad_media='absent')")
        absent[m] = g.n - g.n_present
    return absent


@contextlib.contextmanager
def progress_display(quiet: bool = False) -> Iterator[ProgressFn]:
    """A progress bar per encoder while conversations are encoded (a :data:`ProgressFn`)."""
    with progress_bar(quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(desc: str, advance: int, total: int) -> None:
            if desc not in tasks:
                tasks[desc] = bar.add_task(desc, total=total, info="")
            bar.advance(tasks[desc], advance)

        yield progress
