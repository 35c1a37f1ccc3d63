"""The layout is the data flow: declarations at the bottom import nothing heavy, and folders import one way."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "harness"
HEAVY = ("torch", "transformers", "adapters", "accelerate", "datasets", "deepspeed")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth: lazy imports inside functions count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _folder_imports(folder: str) -> set[str]:
    return {m for p in (PACKAGE / folder).rglob("*.py") for m in _imports(p)}


def test_importing_the_whole_spec_layer_loads_no_framework():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (PACKAGE / "spec").rglob("*.py"))
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert "harness.spec.tasks" in modules and "harness.spec.cell" in modules


def test_spec_imports_nothing_else_of_the_harness():
    outside = {m for m in _folder_imports("spec") if m.startswith("harness") and not m.startswith("harness.spec")}
    assert outside == set()


def test_train_imports_nothing_from_plan():
    assert not {m for m in _folder_imports("train") if m.startswith("harness.plan")}


def test_tasks_and_store_import_no_plan_train_or_launch():
    for folder in ("tasks", "store"):
        bad = {m for m in _folder_imports(folder) if m.split(".")[:2][-1] in ("plan", "train", "launch", "cli")}
        assert not bad, (folder, bad)


def test_the_statistics_sit_below_the_tables_and_the_tables_below_their_users():
    # stats is numpy / pandas over frames; report formats it; analysis, launch and the board use report: a cycle
    # here (report importing analysis, which imports report) is how two tables end up computing different numbers
    layers = {"stats": {"spec", "tasks"}, "report": {"spec", "store", "tasks", "stats"}}
    for folder, allowed in layers.items():
        used = {m.split(".")[1] for m in _folder_imports(folder) if m.startswith("harness.") and m.count(".")}
        assert used - {folder} <= allowed, (folder, used - {folder} - allowed)


def _loaded_in_a_fresh_process(code: str, wanted: str) -> str:
    """The first modules matching `wanted` (an expression of `m`) that `code` loaded, in a fresh process, so that
    what an earlier test imported does not count."""
    code = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if {wanted})[:3])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip()


def test_parsing_a_count_option_loads_no_database_driver():
    """The bounds of a count option are declarations: `validate --num-processes 2` loaded sqlalchemy (~0.2 s) just to
    parse its number, through harness.store.schema, where the option's positive-int rule loaded nothing; a refused
    --num-processes 0 paid for it too. Parsed in a fresh process, so what an earlier test imported does not count."""
    code = ("from harness.cli import build_parser\n"
            "for argv in (['validate'], ['estimate', '--pilot-steps', '3'], ['status']):\n"
            "    build_parser().parse_args(argv + ['s.yaml', '--num-processes', '2'])")
    loaded = _loaded_in_a_fresh_process(code, "m.split('.')[0] == 'sqlalchemy'")
    assert loaded == "[]", loaded


def test_validating_a_suite_loads_no_pandas(tmp_path, small_glue):
    """`harness validate` prints its estimate line through harness.report.progress, whose one use of the stats
    layer (evaluation_key, for the rows of a store `harness status` reads) imported pandas with the module: ~0.35 s
    of CPU in every validate (1.11 against 0.75 s, 2-core AMD EPYC), which reads no table. With a store to
    estimate from too. In a fresh process, so what an earlier test imported does not count."""
    from harness.store.db import Store

    db = f"sqlite:///{tmp_path / 'h.db'}"
    Store(db).engine.dispose()
    (tmp_path / "s.yaml").write_text("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    code = (f"import sys\nfrom harness.cli import main\n"
            f"assert main(['validate', 's.yaml', '--data-dir', {str(small_glue)!r}]) == 0\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas')[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_DB": db})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "estimated" in out.stdout or "no stored throughput" in out.stdout, out.stdout
    assert out.stdout.splitlines()[-1] == "[]", out.stdout[-2000:]


def test_building_the_parser_loads_no_suite_schema():
    """Every command builds the whole parser, and `--max-cells`' default came from harness.plan.grid, which loads
    the suite schema (pydantic): ~0.23 s of a 0.48 s `harness ls --help` (2-core AMD EPYC). The default is a
    declaration (harness.spec.status). In a fresh process, so what an earlier test imported does not count."""
    loaded = _loaded_in_a_fresh_process("from harness.cli import build_parser\nbuild_parser().parse_args(['ls'])",
                                        "m.split('.')[0] in ('pydantic', 'sqlalchemy') or m == 'harness.plan.grid'")
    assert loaded == "[]", loaded
