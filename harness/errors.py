"""Errors the CLI turns into one-line messages and exit codes."""

import difflib


class InputError(Exception):
    """Bad user input (suite file, flag, name). The CLI prints it on one line and exits 2."""

    exit_code = 2


class DataNotFoundError(RuntimeError):
    """A task's data could not be loaded from a local directory or the hub."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean "x"?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
