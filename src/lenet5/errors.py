"""The project's exceptions: each one is a mistake a user can make, with a message saying the fix.

The CLI prints them as one line on stderr and exits non-zero; anything else is a bug. A value or
another library's message quoted in one is shortened first (`short`, `clip`): never a whole
gigabyte, never a word cut in two.
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


def short(value, width: int = 60) -> str:
    """`repr(value)` for a message, at most about `width` characters however large the value:
    reprlib stops early, so a huge list or string is never formatted whole."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = width
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def clip(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters, cut between words (with "...")."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[: width - 3].rsplit(" ", 1)[0] if " " in text[: width - 3] else text[: width - 3]
    return cut.rstrip(" ,;:") + "..."
