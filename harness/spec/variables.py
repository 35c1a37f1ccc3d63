"""Numbers from the environment (HARNESS_WORKERS, HARNESS_FINISH_TRIES, ...), read with the rules of the options:
a bad value is one line naming the variable (exit 2), never a traceback or a default put in its place. Unset: the
default; set but blank: refused (env_text). Messages name a variable `$NAME:` (an option is `--name:`, a suite
field `field:`)."""

from __future__ import annotations

import os

from harness.spec.errors import InputError


def whole_number(text: str, least: int) -> int:
    """The whole-number rule of every count, option or variable (int's: surrounding blanks allowed, "2.0" and
    "1e3" not); ValueError with the reason."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value < least:
        raise ValueError(f"must be at least {least} (got {value})")
    return value


def env_text(name: str) -> str | None:
    """$name, None where it is unset. Set but blank is refused (HARNESS_DB and HARNESS_DATA_DIR too, cli.common):
    `export HARNESS_WORKERS=$N` with N unset is no request for the default, and accelerate reads an empty
    LOCAL_RANK or WORLD_SIZE with int() (a traceback)."""
    text = os.environ.get(name)
    if text is not None and not text.strip():
        raise InputError(f"${name}: empty (unset it for the default)")
    return text


def env_whole_number(name: str, least: int, default: int | None = None) -> int | None:
    """$name as a whole number >= least; the default where it is unset."""
    text = env_text(name)
    if text is None:
        return default
    try:
        return whole_number(text, least)
    except ValueError as e:
        raise InputError(f"${name}: {e}") from None
