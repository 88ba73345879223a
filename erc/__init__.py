"""erc: multimodal emotion recognition in conversations.

Stage 1 (:mod:`erc.extract`) runs pretrained encoders once and caches per-utterance features
in one HDF5 file (:mod:`erc.features`); stage 2 (:mod:`erc.heads`) trains light heads from it.
"""

__version__ = "0.1.0"
