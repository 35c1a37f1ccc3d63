"""Secrets never stored or shown: the one place that hides the password of a store URL, in a URL, in a command
line (`--db VALUE`, `--db=VALUE`) and in any text that holds a URL (an error message, a log line, a script).

Every place that keeps or shows a URL or a command goes through here: the store's text columns that can hold
one (error, command, env: harness.store.schema redacts them on every write and every read, so record.json, the
exports, `harness status` and the board show them redacted, rows written before included), the environment of
every record (argv), the reproduce command, the generated sbatch scripts, error messages. The ways to give a
store its password without writing it anywhere are in docs/cluster.md (PGPASSFILE, PGPASSWORD, a URL in
$HARNESS_DB that the batch scripts inherit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HIDDEN = "***"
# scheme://user:password@ (the password ends at the first "@", as SQLAlchemy reads it). A password may hold
# spaces and quotes (SQLAlchemy reads any character but "@"), but so may the text after a URL without one, up to
# an unrelated "@" (a path, a mail address): such a password is taken only where the text after "host:" is not a
# port (digits, then a "/", a space, a quote or the end), only up to the line's end, never across another "://"
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)"
                           r"(?P<password>[^@\s'\"]*|(?!\d+(?:[/\s'\"]|$))(?:(?!://)[^@\n])*)@")
_DB_FLAGS = ("--db",)


def redact_url(url: str | None) -> str | None:
    """The URL with its password shown as ***; anything that is not a URL SQLAlchemy can read is redacted as
    text (redact_text)."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return redact_text(url)
    if parsed.password is None:
        return redact_text(url)   # a password in the query string (?password=) is still caught below
    return redact_text(parsed.render_as_string(hide_password=True))


def redact_text(text: str | None) -> str | None:
    """Every user:password@ of a URL inside free text (an error, a log line, a script), and a password=...
    query parameter, shown as ***."""
    if not text:
        return text

    def hide(m: re.Match) -> str:
        return m.group(0) if m.group("password") == HIDDEN else f"{m.group('head')}{HIDDEN}@"

    text = _URL_PASSWORD.sub(hide, text)
    return re.sub(r"(?i)\b(password|passwd|pwd)=([^&\s'\"]+)",
                  lambda m: m.group(0) if m.group(2) == HIDDEN else f"{m.group(1)}={HIDDEN}", text)


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the value of --db (as `--db VALUE` or `--db=VALUE`) and any URL password hidden."""
    out: list[str] = []
    after_flag = False
    for arg in map(str, argv):
        if after_flag:
            out.append(redact_url(arg))
            after_flag = False
        elif arg in _DB_FLAGS:
            out.append(arg)
            after_flag = True
        elif any(arg.startswith(f"{flag}=") for flag in _DB_FLAGS):
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={redact_url(value)}")
        else:
            out.append(redact_text(arg))
    return out


def redact_env(env):
    """A record's environment with its argv (and any other text, nested ones too) redacted: also for records
    written before redaction existed (the store's env column redacts every write and read: harness.store.schema),
    and whatever shape another tool stored there (a list, a text: no reader may fail on one row)."""
    if isinstance(env, dict):
        return {k: redact_argv(v) if k == "argv" and isinstance(v, (list, tuple)) else redact_env(v)
                for k, v in env.items()}
    if isinstance(env, (list, tuple)):
        return [redact_env(v) for v in env]
    return redact_text(env) if isinstance(env, str) else env
