"""Errors that describe a user mistake: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """A mistake in the user's input (paths, names, options). Printed without a traceback."""


class ErcWarning(UserWarning):
    """Something the user should know that does not stop the run (a label seen by an encoder on
    dev, pooled folds, a head's departure): the CLI prints it as one ``erc: warning:`` line."""


class WeightsMissing(UserError):
    """Pretrained weights are not available locally."""


class MediaError(Exception):
    """One utterance's media could not be read; recorded per utterance, the run goes on."""


class MediaMissing(MediaError):
    """The utterance has no media of this modality (no path, or the file does not exist)."""
