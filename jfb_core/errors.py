"""The one exception family for mistakes a user can fix (bad input, a wrong file, a bad flag).

:class:`UserError` subclasses ``ValueError`` so existing callers that catch
``ValueError`` keep working. The command line turns a ``UserError`` (and an
``OSError`` on a file the user named) into a one-line message and exit status 2;
anything else is a bug in the library and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input the user can correct; the message says what was wrong and what to do."""


class BadCheckpoint(UserError):
    """A file that is not a usable jfb_core checkpoint (truncated, foreign, unsafe or mismatched)."""


class BadDataCache(UserError):
    """A file that is not a usable data cache from ``python -m jfb_core prepare``."""


class RunLocked(UserError):
    """Another live process holds the run folder."""


__all__ = ["BadCheckpoint", "BadDataCache", "RunLocked", "UserError"]
