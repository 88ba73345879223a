"""Cross-fitted features: one cache group whose rows come from several fine-tuned encoders.

``erc finetune --crossfit K`` writes ``DIR/part<k>`` (an encoder trained on the official train
less part ``k``'s dialogues) for each part and ``DIR/full`` (trained on all of the official
train). :class:`CrossFitEncoder` encodes each utterance of part ``k`` (its record's ``held_out``
ids) with ``part<k>``'s encoder and every other utterance (dev, test, new conversations) with
``full``'s. So a head trained on the group never sees a train feature fitted to that utterance's
own label, as it never sees a dev or test one: stacking's cross-fitting.

The group's ``finetune`` record (:meth:`CrossFitEncoder.finetune_record`) names every encoder,
and its ``labels_seen`` is the union of theirs, which the leak guard (:mod:`erc.train.leaks`) reads
as for one encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from erc.corpus import Utterance
from erc.extract.encoders.base import Encoded, Encoder
from erc.extract.seen import ids_sha256, labels_seen


class CrossFitEncoder(Encoder):
    """Routes each utterance to the encoder that never saw its label.

    full: the encoder of ``DIR/full`` (its config is the group's: name, batch size, window).
    parts: the encoder of each ``DIR/part<k>``.
    record: ``DIR/finetune.json`` (kind ``crossfit``); records: each sub-folder's finetune.json,
    parts first (their ``held_out`` ids are the utterances each encodes), then full."""

    SUB_CLASS = "crossfit_encoder_class"  # the config key naming the wrapped encoders' class (to rebuild them)

    def __init__(self, folder: Path, full: Encoder, parts: Sequence[Encoder], record: dict[str, Any],
                 records: Sequence[dict[str, Any]]) -> None:
        super().__init__(full.config)
        self.modality = full.modality  # type: ignore[misc]  # the class attribute of the wrapped encoders
        self.folder = folder.expanduser().resolve()  # erc predict finds it from any working directory
        self.full = full
        self.parts = list(parts)
        self.record = record
        self.records = list(records)
        self.held = [list(r.get("held_out") or []) for r in self.records[:len(self.parts)]]  # ids per part
        self._route = {uid: k for k, ids in enumerate(self.held) for uid in ids}
        self._loaded: set[int] = set()  # routes whose encoder is loaded (-1: full)

    def route(self, utt: Utterance) -> int:
        """-1 for ``full``, else the part that held ``utt`` out. Only a train utterance goes to a
        part (a new conversation whose id repeats a held-out one goes to ``full``)."""
        return self._route.get(utt.utterance_id, -1) if utt.split == "train" else -1

    def _sub(self, route: int) -> Encoder:
        return self.full if route < 0 else self.parts[route]

    def check(self) -> None:
        for enc in [self.full, *self.parts]:
            enc.check()

    def load(self, device: str, fp16: bool = False) -> None:
        """Loads ``full`` now; each part when a batch first needs it (:meth:`ready`)."""
        self.full.load(device, fp16)
        self.device, self.fp16 = device, fp16
        self._loaded = {-1}

    def ready(self, utterances: Sequence[Utterance]) -> None:
        """Loads the part encoders ``utterances`` route to, on the caller's thread (the extraction's
        main thread: a load error stops the run as :meth:`load`'s would, and a CUDA device set for
        the process's rank applies). So ``erc predict`` on new conversations, all routed to
        ``full``, never loads a part."""
        for route in sorted({self.route(u) for u in utterances} - self._loaded):
            self._sub(route).load(self.device, self.fp16)
            self._loaded.add(route)

    def sort_key(self, utt: Utterance) -> float:
        return self.full.sort_key(utt)

    def batch_group(self, utt: Utterance) -> int:
        """One group per encoder, so that a batch is one forward pass of one encoder."""
        return self.route(utt) + 1

    def prepare(self, dialogue: Sequence[Utterance], position: int) -> tuple[int, Any]:
        """``(route, item)``: the route (:meth:`route`) and the item its encoder prepared."""
        route = self.route(dialogue[position])
        return route, self._sub(route).prepare(dialogue, position)

    def encode(self, items: list[tuple[int, Any]]) -> list[Encoded]:
        """Each route's items through its encoder as one batch (the batch plan gives one route per
        batch: :meth:`batch_group`); results in the order given."""
        out: list[Encoded | None] = [None] * len(items)
        for route in sorted({r for r, _ in items}):
            idx = [i for i, (r, _) in enumerate(items) if r == route]
            for i, enc in zip(idx, self._sub(route).encode([items[i][1] for i in idx])):
                out[i] = enc
        return out  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        return self.full.dim

    @property
    def frame_dim(self) -> int | None:
        return self.full.frame_dim

    @property
    def frame_tokens(self) -> int:
        return self.full.frame_tokens

    def provenance(self) -> dict[str, Any]:
        return {**self.full.provenance(), "crossfit": {"folder": str(self.folder), "n_parts": len(self.parts),
                                                      "utterances_per_part": [len(ids) for ids in self.held]}}

    def config_dict(self) -> dict[str, Any]:
        """The full encoder's config, the folder, the wrapped class and the routing (a hash of the
        parts' held-out ids: in the group's config hash, so another split of the parts re-extracts)."""
        return {**self.full.config_dict(), "model": str(self.folder), "crossfit_parts": len(self.parts),
                self.SUB_CLASS: type(self.full).__name__,
                "crossfit_routing": ids_sha256([ids_sha256(sorted(ids)) for ids in self.held])}

    def finetune_record(self) -> dict[str, Any]:
        """The group's ``finetune`` attribute: the cross-fit record, each encoder's own record (less
        its id lists), the union of the labels they saw and one hash over their weights."""
        seen_train = sorted({u for r in self.records for u in r["labels_seen"]["train"]})
        seen_dev = sorted({u for r in self.records for u in r["labels_seen"]["dev"]})
        weights = ids_sha256([r.get("weights_sha256", "") for r in self.records])
        full = self.records[-1]
        return {**self.record, "kind": "crossfit", "weights_sha256": weights,
                "split": {"kind": "crossfit", "n_parts": len(self.parts), "full": full.get("split")},
                "labels_seen": labels_seen(seen_train, seen_dev),
                "best_epoch": full.get("best_epoch"), "best_dev_weighted_f1": full.get("best_dev_weighted_f1"),
                "encoders": [{k: v for k, v in r.items() if k not in ("labels_seen", "held_out", "dev_curve")}
                             | {"held_out_sha256": ids_sha256(r.get("held_out", []))} for r in self.records]}
