"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class MwtError(Exception):
    """An error a user can meet and fix (bad argument, missing file, corrupted artifact)."""


class DatasetNotFoundError(MwtError):
    """The files of a dataset are not where we looked."""


class CheckpointError(MwtError):
    """A checkpoint, module or mask file is missing, corrupted or of the wrong kind."""


class MwtWarning(UserWarning):
    """Something a user should know about a result (a run that did not become modular, a module
    at chance); the CLI prints these as ``warning:`` lines, the API also returns them."""
