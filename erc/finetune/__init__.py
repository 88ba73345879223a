"""``erc finetune``: fine-tune a Hugging Face text or speech encoder on a dataset's train labels.

transformers' ``Trainer`` does the training (AdamW, warm-up and linear decay, class-weighted loss,
bf16 / fp16, gradient accumulation, ``torchrun``, checkpoints, resume); this package builds its
inputs from a :class:`erc.corpus.Corpus` with the extractor's own text windows, picks the splits
(the official one, each fold of ``--folds`` exactly as ``erc train-head`` makes them, or the
parts of ``--crossfit``), and writes
a ``from_pretrained`` folder with ``finetune.json`` (:mod:`erc.extract.finetuned` reads it back).

config   FinetuneConfig (the options)
splits   which utterances are train / dev / test for each fine-tuning (official, fold k, cross-fit part k)
examples torch datasets and collators of utterance windows / waveforms
trainer  the Trainer subclass (weighted loss), its arguments and metrics
record   weight hashes and the finetune.json record
run      one fine-tuning, and one per fold or cross-fit part
"""
