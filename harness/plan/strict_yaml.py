"""The YAML a suite file may use: plain data, parsed in one linear pass, every value with its line.

A suite is small, hand-written configuration, so the loader is strict where PyYAML's defaults are lax or costly:
- YAML 1.2 core scalars: `true`/`false` only (`yes`, `on`, `no` stay strings, so a typo cannot become a boolean),
  `1e-3` is a number (YAML 1.1 reads it as a string), no sexagesimal or octal surprises, no timestamps;
- anchors and aliases are refused as soon as the parser meets them, before anything is expanded (an alias bomb
  costs nothing);
- duplicate keys are refused, naming both lines (PyYAML silently keeps the last);
- nesting deeper than MAX_DEPTH, files larger than MAX_BYTES and text that is not UTF-8 are one-line errors;
- only the standard tags (str, int, float, bool, null, seq, map).
"""

from __future__ import annotations

import math
import re

import yaml
from yaml.composer import Composer
from yaml.events import (AliasEvent, MappingEndEvent, MappingStartEvent, NodeEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

MAX_BYTES = 1_000_000   # a suite of a million cells fits in a few kilobytes
MAX_DEPTH = 32          # the deepest suite field is 4 levels down

TAG = "tag:yaml.org,2002:"
_INT = TAG + "int"


class YAMLInputError(Exception):
    """A suite's YAML is not acceptable: `line` (1-based), `path` (field path so far) and a message."""

    def __init__(self, line: int, path: tuple, message: str):
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema for plain scalars."""


_CoreResolver.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+0123456789."),
]:
    _CoreResolver.add_implicit_resolver(TAG + _tag, re.compile(_pattern), list(_first))


class _Loader(Reader, Scanner, Parser, Composer, _CoreResolver):
    def __init__(self, text: str):
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _CoreResolver.__init__(self)
        self.path: list = []   # the field path of the node being composed, for errors

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        # PyYAML passes a mapping value's key node, a sequence item's index, None for a key or the root
        segment = index.value if isinstance(index, ScalarNode) else index if isinstance(index, int) else None
        self.path.append(segment)
        path = tuple(p for p in self.path if p is not None)
        if self.check_event(AliasEvent):
            raise YAMLInputError(line, path, f"YAML aliases (*{event.anchor}) are not allowed in a suite: write "
                                             f"the values out")
        if getattr(event, "anchor", None) is not None:
            raise YAMLInputError(line, path, f"YAML anchors (&{event.anchor}) are not allowed in a suite: write "
                                             f"the values out")
        if len(self.path) > MAX_DEPTH:
            raise YAMLInputError(line, path[:4] + ("...",), f"nested more than {MAX_DEPTH} levels deep "
                                                            f"(a suite needs 4)")
        try:
            return Composer.compose_node(self, parent, index)
        finally:
            self.path.pop()


def _scalar(node: ScalarNode, path: tuple):
    tag, value = node.tag, node.value
    if tag == _INT and value.isdigit():   # the common case, first
        return int(value)
    line = node.start_mark.line + 1
    try:
        if tag == TAG + "str":
            return value
        if tag == TAG + "null":
            return None
        if tag == TAG + "bool":
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        if tag == TAG + "int":
            v = value.replace("+", "", 1) if value.startswith("+") else value
            if v.startswith(("0x", "0o")):
                return int(v[2:], 16 if v[1] == "x" else 8)
            return int(v, 10)
        if tag == TAG + "float":
            low = value.lower().lstrip("+")
            if low in (".inf", "-.inf", ".nan"):
                return {".inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}[low]
            return float(value)
    except ValueError:
        raise YAMLInputError(line, path, f"{value!r} is not a valid {tag.removeprefix(TAG)}") from None
    raise YAMLInputError(line, path, f"the YAML tag {tag} is not allowed in a suite (only plain data)")


def _build(node, path: tuple, lines: dict):
    """Plain Python data from a node; `lines` gets the line of every field path (keys: the key's line)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, ScalarNode):
        return _scalar(node, path)
    if isinstance(node, SequenceNode):
        if node.tag != TAG + "seq":
            raise YAMLInputError(node.start_mark.line + 1, path, f"the YAML tag {node.tag} is not allowed in a suite")
        return [_build(item, path + (i,), lines) for i, item in enumerate(node.value)]
    if not isinstance(node, MappingNode) or node.tag != TAG + "map":
        raise YAMLInputError(node.start_mark.line + 1, path, f"the YAML tag {node.tag} is not allowed in a suite")
    out: dict = {}
    first_line: dict = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if not isinstance(key_node, ScalarNode):
            raise YAMLInputError(key_line, path, "a key must be a plain name, not a list or mapping")
        key = _scalar(key_node, path)
        if not isinstance(key, str):
            raise YAMLInputError(key_line, path, f"a key must be a name (got {key!r}); quote it if it is meant as one")
        if key in out:
            raise YAMLInputError(key_line, path + (key,), f"duplicate key (first at line {first_line[key]}); YAML "
                                                          f"would silently keep only the last one")
        first_line[key] = key_line
        lines.setdefault(path + (key,), key_line)
        out[key] = _build(value_node, path + (key,), lines)
    return out


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM is dropped), or YAMLInputError naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YAMLInputError(line, (), f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); save "
                                       f"the suite as UTF-8") from None


def _node_path(stack: list) -> tuple:
    """The field path of the next node, from the open collections (map: [True while a key is next, key])."""
    path = []
    for frame in stack:
        if frame[0] == "map":
            if frame[1]:
                break            # the next node is a key: its path is the mapping's
            path.append(frame[2])
        else:
            path.append(frame[1])
    return tuple(path)


def _node_done(stack: list, key=None) -> None:
    if not stack:
        return
    frame = stack[-1]
    if frame[0] == "map":
        if frame[1]:
            frame[1], frame[2] = False, key if isinstance(key, str) else "?"
        else:
            frame[1] = True
    else:
        frame[1] += 1


def _check_events(parser) -> None:
    """One pass over the parser's events, before any node is built: no anchors or aliases (so nothing can expand)
    and no nesting past MAX_DEPTH (so nothing can recurse deeply)."""
    stack: list = []
    get = parser.get_event
    while parser.check_event():
        ev = get()
        if type(ev) is ScalarEvent and ev.anchor is None:   # the common case, first
            _node_done(stack, ev.value)
            continue
        if isinstance(ev, (MappingEndEvent, SequenceEndEvent)):
            stack.pop()
            _node_done(stack)
            continue
        if not isinstance(ev, NodeEvent):
            continue
        line = ev.start_mark.line + 1
        if isinstance(ev, AliasEvent):
            raise YAMLInputError(line, _node_path(stack), f"YAML aliases (*{ev.anchor}) are not allowed in a "
                                                          f"suite: write the values out")
        if ev.anchor is not None:
            raise YAMLInputError(line, _node_path(stack), f"YAML anchors (&{ev.anchor}) are not allowed in a "
                                                          f"suite: write the values out")
        if isinstance(ev, (MappingStartEvent, SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise YAMLInputError(line, _node_path(stack)[:4] + ("...",),
                                     f"nested more than {MAX_DEPTH} levels deep (a suite needs 4)")
            stack.append(["map", True, None] if isinstance(ev, MappingStartEvent) else ["seq", 0])
        else:
            _node_done(stack, ev.value)


def _yaml_error(e: yaml.YAMLError, text: str) -> YAMLInputError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = min(mark.line + 1, max(1, len(text.splitlines()))) if mark else 1
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return YAMLInputError(line, (), f"not valid YAML: {context + ', ' if context else ''}{problem}")


try:   # libyaml: the same YAML, parsed in C (a 100,000-seed suite in a fraction of a second)
    from yaml._yaml import CParser
except ImportError:   # pure Python: the same checks, slower
    CParser = None

if CParser is not None:
    class _CLoader(CParser, _CoreResolver):
        def __init__(self, text: str):
            CParser.__init__(self, text)
            _CoreResolver.__init__(self)

    class _CEvents(CParser):
        pass

    def _parsers(text):
        return _CEvents(text), _CLoader(text)
else:
    def _parsers(text):
        return _Loader(text), _Loader(text)


def load(text: str) -> tuple[object, dict]:
    """(data, {field path: line}); YAMLInputError for anything a suite may not contain."""
    if len(text) > MAX_BYTES:
        raise YAMLInputError(1, (), f"the file is larger than {MAX_BYTES:,} bytes; a suite is a few lines")
    events, loader = _parsers(text)
    try:
        try:
            _check_events(events)
            node = loader.get_single_node()
        except YAMLInputError:
            raise
        except yaml.YAMLError as e:
            raise _yaml_error(e, text) from None
        except RecursionError:   # only if MAX_DEPTH were raised past what the parser can nest
            raise YAMLInputError(1, (), "nested too deeply to read") from None
    finally:
        events.dispose()
        loader.dispose()
    lines: dict = {}
    return (None if node is None else _build(node, (), lines)), lines

