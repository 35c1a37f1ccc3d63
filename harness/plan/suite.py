"""Suite files: YAML -> validated typed objects -> the grid of cells.

Validation happens before anything is written. Every error names the file, the YAML line and the field
path ("suites/x.yaml:12: methods[2].size: ..."), and the CLI exits 2. Types are strict (no text->number or
bool->int coercion), numbers finite and in ranges that say why, no value twice in a list, no two cells with one
key, and the grid is capped (max_cells). What needs the model's config or the disk (max_length against the
model's positions, adapter sizes against its width, data and adapter files) is checked by plan/preflight.py,
still before anything trains.

The steps live in plan/schema.py (the entries and how each is read), plan/checks.py (the checks across them),
plan/grid.py (the Suite and its cells) and plan/messages.py (located errors).
"""

from __future__ import annotations

import os

from harness.plan import checks, strict_yaml
from harness.plan.grid import DEFAULT_MAX_CELLS, Suite
from harness.plan.messages import Located, format_path
from harness.plan.schema import expand_method, read_model, read_task_entry
from harness.spec.errors import InputError


def _read_yaml(text: str, path: str) -> tuple[dict, dict]:
    try:
        raw, lines = strict_yaml.load(text)
    except strict_yaml.YAMLInputError as e:
        where = f" {format_path(e.path)}:" if e.path else ""
        raise InputError(f"{path}:{e.line}:{where} {e.message}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}:1: a suite must be a YAML mapping with name, models, tasks, methods")
    return raw, lines


def parse_suite(text: str, path: str = "<suite>", max_cells: int = DEFAULT_MAX_CELLS) -> Suite:
    raw, lines = _read_yaml(text, path)
    loc = Located(path, lines)
    base = os.path.dirname(os.path.abspath(path))

    model = read_model(raw, loc)
    model.tasks = [read_task_entry(entry, i, loc) for i, entry in enumerate(model.tasks)]
    checks.check_paths(model, base, loc)
    checks.no_duplicate_values(model, base, loc)
    variants, sources = checks.no_duplicate_variants(
        (expand_method(entry.model_dump(), i, loc) for i, entry in enumerate(model.methods)), loc)
    checks.check_schedules(model, variants, loc)
    checks.check_ablate(model, variants, loc)
    checks.tracker_settings(model, loc)

    suite = Suite(model=model, path=path, method_variants=variants, variant_sources=sources, lines=lines)
    suite.check_size(max_cells)
    checks.no_duplicate_cells(suite, loc)
    checks.check_windows(suite, loc)
    checks.check_lengths(suite, loc)
    checks.check_variants(suite, loc)
    checks.check_squad_options(suite, loc)
    return suite


def load_suite(path: str, max_cells: int = DEFAULT_MAX_CELLS) -> Suite:
    try:
        with open(path, "rb") as f:
            data = f.read(strict_yaml.MAX_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read suite file ({e.strerror})") from None
    try:
        text = strict_yaml.decode(data)
    except strict_yaml.YAMLInputError as e:
        raise InputError(f"{path}:{e.line}: {e.message}") from None
    try:
        return parse_suite(text, path, max_cells)
    except RecursionError:   # a guard: strict_yaml caps nesting long before Python's own limit
        raise InputError(f"{path}:1: nested too deeply to read") from None
