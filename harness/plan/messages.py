"""Suite errors that name the file, the YAML line and the field: "suites/x.yaml:12: methods[2].size: ...".

`Located` turns a field path into such an error; `pydantic_message` says a pydantic error in the suite's words
(no type names of Python, a hint where a value was quoted), and `validated` runs a pydantic model with both.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from pydantic import ValidationError

from harness.spec.errors import InputError, did_you_mean


def format_path(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class Located:
    """Builds 'file:line: field: message' errors."""

    def __init__(self, file: str, lines: dict):
        self.file, self.lines = file, lines

    def line(self, path) -> int:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path, msg) -> InputError:
        path = tuple(path)
        # one value that a list type wrapped: name the field, not a [0] the file does not have
        while path and path[-1] == 0 and path not in self.lines and path[:-1] in self.lines:
            path = path[:-1]
        return InputError(f"{self.file}:{self.line(path)}: {format_path(path)}: {msg}")

    @contextmanager
    def at(self, path):
        """An InputError raised inside the block (a registry's "unknown task", a path check) gets this field's
        file, line and path."""
        try:
            yield
        except InputError as e:
            raise self.error(path, str(e)) from None


_TYPE_NAMES = {"float_type": "a number", "int_type": "an integer", "bool_type": "true or false",
               "string_type": "text", "list_type": "a list", "dict_type": "a mapping",
               "model_type": "a mapping", "model_attributes_type": "a mapping", "literal_error": None}


def _looks_numeric(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def pydantic_message(err: dict) -> str:
    kind, given = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind.endswith("_type"):
        msg = f"must be {_TYPE_NAMES.get(kind) or kind.removesuffix('_type')} (got {given!r})"
        if isinstance(given, str) and kind in ("float_type", "int_type") and _looks_numeric(given):
            msg += "; write the number without quotes"
        elif isinstance(given, str) and kind == "bool_type":
            msg += "; write true or false, without quotes"
        elif isinstance(given, float) and kind == "int_type":
            msg += "; write a whole number"
        return msg
    if kind == "finite_number":
        return f"must be a finite number (got {given!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind != "value_error" and given is not None and not isinstance(given, (dict, list)):
        msg += f" (got {given!r})"
    return msg


def validated(model_cls, data, loc: Located, base: tuple = (), fields_of=None):
    """`model_cls.model_validate(data)`; its first error raised as a located InputError under `base`.
    fields_of(path) -> the model whose fields an unknown field is compared with for a "did you mean" (or None)."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        path = tuple(err["loc"])
        msg = pydantic_message(err)
        parent = fields_of(path) if fields_of and err["type"] == "extra_forbidden" else None
        fields = list(getattr(parent, "model_fields", {}))
        if fields:
            msg += did_you_mean(path[-1], fields)
        raise loc.error(base + path, msg) from None
