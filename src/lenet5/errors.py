"""The project's exceptions: each one is a mistake a user can make, with a message saying the fix.

The CLI prints them as one line on stderr and exits non-zero; anything else is a bug.
"""


class Lenet5Error(Exception):
    """Base of every user-facing error."""


class DataError(Lenet5Error):
    """A data file is missing, damaged or not what it claims to be."""


class CheckpointError(Lenet5Error):
    """A checkpoint cannot be loaded safely or does not fit the model."""


class ConfigError(Lenet5Error):
    """A flag or config value is wrong."""


class TrainingError(Lenet5Error):
    """Training cannot go on (e.g. the loss became NaN)."""
