"""Apply a trained run to conversations it has not seen: extract them with the run's own encoders
(stage 1) and predict them with its head, or with the seeds of a sweep averaged (stage 2). The one
package joining the two stages.

- :class:`Predictor` (:mod:`erc.apply.predictor`): load once, predict Python objects, a
  DataFrame, a dataset's corpus or a cache file.
- :func:`read_conversations` (:mod:`erc.apply.conversations`): the accepted input forms.
"""

from erc.apply.conversations import read_conversations
from erc.apply.predictor import Predictor

__all__ = ["Predictor", "read_conversations"]
