"""Exceptions with the exit codes the CLI turns them into."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class MpiclipError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputError(MpiclipError):
    """Bad user input (config, data file, command line): one line naming the field and the value."""

    exit_code = 2

    def __init__(self, field: str, value: Any, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field} = {_show(value)}: {reason}")


class RunFailed(MpiclipError):
    """The run started but could not finish (divergence, ranks out of step)."""

    exit_code = 1


class Aborted(KeyboardInterrupt):
    """A second stop signal during a run: stop at once, without the orderly checkpoint of the first."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signum)


def did_you_mean(word: Any, valid: Iterable[str]) -> str:
    """'; did you mean 'ef21'?' for the valid name closest to a misspelt ``word``, or '' if none is close."""
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):  # a whole table: its keys are enough to recognise it
        return "{" + ", ".join(map(str, value)) + "}"
    return str(value)
