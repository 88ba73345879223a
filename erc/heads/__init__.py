"""Stage 2's models: light heads trained from the feature cache, each plain PyTorch.

The registry (:mod:`erc.heads.registry`) names them; :mod:`erc.heads.base` is the batch / head
interface; :mod:`erc.heads.cpu` holds the optional CPU kernels. Training lives in :mod:`erc.train`.
"""

from erc.heads.base import DialogueBatch, Head, HeadInputs, HeadOutput
from erc.heads.registry import HEADS, HeadSpec, build_head, get_head, resolve_head

__all__ = ["HEADS", "DialogueBatch", "Head", "HeadInputs", "HeadOutput", "HeadSpec", "build_head", "get_head",
           "resolve_head"]
