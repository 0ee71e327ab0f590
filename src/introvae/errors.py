"""The one exception type for a user's mistake, raised where the problem is found.

A :class:`UserError` names what is wrong (a field, a path, a file, a device) and what to do about
it. The command line prints its message as one line and exits with status 2; anything else is a
bug and keeps its traceback. The subclasses only say where the problem was found, for callers of
the Python API that want to tell them apart.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with what the user gave; the message names it. ``status``: the exit status (2; 130 for an
    interruption that left nothing behind)."""

    def __init__(self, message: str = "", *, status: int = 2):
        super().__init__(message)
        self.status = status


def report(message: object) -> None:
    """Print a user's mistake as the command line's one ``introvae: error:`` line on stderr."""
    print(f"introvae: error: {message}", file=sys.stderr)


class ConfigError(UserError):
    """A configuration value is invalid; the message starts with the field's name."""


class DataError(UserError):
    """The data cannot be used; the message says why and where."""


class CheckpointError(UserError):
    """A checkpoint or exported model cannot be used; the message names the file and the reason."""


class InputError(UserError, ValueError):
    """A tensor given to the model's Python API has the wrong shape, type or range; the message says which."""


class MetricError(UserError):
    """A metric cannot be computed as asked (missing weights, too few images, ...)."""


class PlainWarning(UserWarning):
    """Worth a line but not a stop. The command line prints it as one plain ``introvae: warning:`` line, without
    Python's source file and line number."""


class DataWarning(PlainWarning):
    """Something about the data (unreadable images that were skipped)."""


class SettingWarning(PlainWarning):
    """A setting that works but is a poor choice here (bf16 on a CPU that emulates it), naming the better one."""
