"""The docs as written: every command in README.md and docs/*.md, the README's length, no machine paths.

A command is a line of a ```bash block (a line ending in a backslash, or an indented line, continues it). In a
block with `$ ` prompts only the prompted lines are commands, and the lines after one are its shown output.
Illustrative output that cannot be reproduced (timings, hosts) goes in ```text blocks, which are not read.

Each command is judged by what it is, the rule being here and not in the docs:

- **run for real** (cheap, offline), in a scratch folder that mirrors the checkout's suites/, tests/bad_suites/
  and slurm/, with $HARNESS_DATA_DIR made absolute, the hub offline and a small store made by `harness ingest`:
  `harness --help`, `harness SUB --help`, validate, ls, params, status (not `--watch`: it waits for a grid to
  finish), export, ingest, `slurm --dry-run`, `prefetch --check`; `export VAR=...` (kept for the rest of the
  block) and `cat > FILE <<'EOF'` (a suite the docs write is validated). Exit 0, or 2 where the shown output is
  an `error:` line; every shown output line must appear in what the command printed. /path/to/glue,
  /path/to/checkout and $VENV/bin/python stand for the data directory, the checkout and this Python.
- **checked to parse** (they train, serve, submit, download or need a cluster): harness run / board / ablate /
  compare, slurm without --dry-run, prefetch without --check, store commands on a store other than SQLite, and
  synopsis lines (SUITE, [--opt X], a|b): the subcommand exists and every option is in `harness SUB --help` (a
  usage line with [--opt X] shows all of them), and a suite file named is there. `accelerate launch`: its options
  are in `accelerate launch --help`, then the module or script it starts is checked as `harness run`. `pip
  install`: every requirement parses, a local path is the checkout and its extras exist, torch names its index.
  `sbatch FILE`: an earlier line wrote FILE. `python -m MODULE`: `--help` works and the options are in it;
  `python -m pytest` too (the test command itself: checked, not run).
- anything else fails: add a rule here.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
# a path of one particular machine: a home folder, root's, a pyenv, this project's work folder
MACHINE_PATH = re.compile(r"/(root|work)/|/home/[a-z]+/|[.]pyenv/")
RUNS = {"validate", "ls", "params", "status", "export", "ingest"}   # cheap and offline
READS_STORE = {"status", "export", "ingest"}
PURE = {"ls", "params", "validate"}   # same output for the same arguments: run once per test session
_PURE_RESULTS: dict = {}
TIMEOUT = 300


def data_dir() -> Path | None:
    env = os.environ.get("HARNESS_DATA_DIR")
    path = Path(os.path.abspath(os.path.expanduser(env))) if env else None
    return path if path and (path / "SST-2" / "train.tsv").is_file() else None


# --- reading the docs -----------------------------------------------------------------------------------------


@dataclass
class Command:
    where: str                       # file:line
    text: str                        # as written (continuations joined)
    output: list[str] = field(default_factory=list)   # shown output ($ blocks)
    heredoc: str | None = None


def bash_blocks(path: Path, lang: str = "bash") -> list[tuple[int, list[str]]]:
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if current is None and line.strip() == "```" + lang:
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{path.name}:{start}: unclosed ```{lang} block"
    return blocks


def commands(path: Path) -> list[list[Command]]:
    """The commands of each bash block of a doc, in order."""
    out = []
    for start, lines in bash_blocks(path):
        prompted = any(line.startswith("$ ") for line in lines)
        block: list[Command] = []
        i = 0
        while i < len(lines):
            line, where = lines[i], f"{path.name}:{start + i}"
            i += 1
            if prompted and not line.startswith("$ "):
                if block and line.strip():
                    block[-1].output.append(line)
                continue
            text = line[2:] if prompted else line
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            # continuations: a trailing backslash, or (without prompts) an indented line
            while i < len(lines) and (text.rstrip().endswith("\\") or (not prompted and lines[i][:1] == " "
                                                                          and lines[i].strip())):
                text = text.rstrip().removesuffix("\\") + " " + lines[i].strip()
                i += 1
            cmd = Command(where, text)
            tag = re.search(r"<<-?\s*'?(\w+)'?", text)
            if tag:
                body = []
                while i < len(lines) and lines[i].strip() != tag.group(1):
                    body.append(lines[i])
                    i += 1
                assert i < len(lines), f"{where}: heredoc without its {tag.group(1)} line"
                i += 1
                cmd.heredoc = "\n".join(body) + "\n"
            block.append(cmd)
        out.append(block)
    return out


# --- running and checking ---------------------------------------------------------------------------------------


def substitute(text: str, data: Path | None) -> str:
    text = text.replace("/path/to/checkout", str(ROOT)).replace("$VENV/bin/python", sys.executable)
    return text.replace("/path/to/glue", str(data)) if data else text


def base_env(data: Path | None, store: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HARNESS_DB": store, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("HARNESS_DATA_DIR", None)
    if data:
        env["HARNESS_DATA_DIR"] = str(data)
    return env


def run(argv: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


HARNESS = [sys.executable, "-m", "harness"]


@functools.cache
def help_text(*argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([*argv, "--help"], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert result.returncode == 0, f"{' '.join(argv)} --help: exit {result.returncode}\n{result.stderr[-2000:]}"
    return result.stdout


def options(tokens: list[str]) -> list[str]:
    """The options given, a usage line's optional ones ([--opt X]) too."""
    return [t.strip("[]").split("=", 1)[0] for t in tokens if re.match(r"\[?--?[A-Za-z]", t)]


def assert_options_exist(where: str, tokens: list[str], help_: str, what: str) -> None:
    for opt in options(tokens):
        if opt not in ("-h", "--help"):
            assert re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", help_), \
                f"{where}: {what} has no option {opt}"


def is_synopsis(tokens: list[str]) -> bool:
    """A usage line: placeholders (SUITE, N, URL), optional parts in [], alternatives a|b, '...'."""
    return any(re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\.\.)?", t) or t.startswith("[") or t.endswith("]") or "|" in t
               or "..." in t for t in tokens)


@dataclass
class Session:
    """One doc's commands in one scratch folder."""

    work: Path
    data: Path | None
    store: str
    env: dict = field(default_factory=dict)
    only_parsed: list[str] = field(default_factory=list)

    def check(self, cmd: Command) -> None:
        tokens = shlex.split(substitute(cmd.text, self.data), comments=True)
        assert "|" not in tokens and "||" not in tokens, f"{cmd.where}: pipes are not followed here"
        segments, current = [], []
        for t in tokens:
            if t == "&&":
                segments.append(current)
                current = []
            else:
                current.append(t)
        segments.append(current)
        for seg in segments:
            self.one(cmd, seg)

    def one(self, cmd: Command, tokens: list[str]) -> None:
        env = dict(self.env)
        while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
            name, value = tokens.pop(0).split("=", 1)
            env[name] = value
        assert tokens, f"{cmd.where}: no command"
        stdout_file = None
        if ">" in tokens:
            k = tokens.index(">")
            stdout_file, tokens = tokens[k + 1], tokens[:k] + tokens[k + 2:]
        tokens = [t for t in tokens if t != "&"]
        head = tokens[0]
        if head == "export":
            for assignment in tokens[1:]:
                name, value = assignment.split("=", 1)
                self.env[name] = value
        elif head == "cat" and cmd.heredoc is not None:
            assert stdout_file, f"{cmd.where}: a heredoc is written to a file here"
            (self.work / stdout_file).write_text(substitute(cmd.heredoc, self.data))
            if stdout_file.endswith((".yaml", ".yml")):   # a suite the docs write must be valid
                self.harness(cmd, ["validate", stdout_file], env, None, force_run=True)
        elif head == "harness":
            self.harness(cmd, tokens[1:], env, stdout_file)
        elif head == "accelerate":
            self.accelerate(cmd, tokens[1:], env)
        elif head == "pip":
            self.pip(cmd, tokens[1:])
        elif head == "sbatch":
            assert (self.work / tokens[-1]).is_file(), f"{cmd.where}: sbatch {tokens[-1]}: no earlier line wrote it"
        elif head in ("python", "python3", sys.executable) and tokens[1:2] == ["-m"]:
            module = tokens[2]
            # the test command is this suite itself: not run, but its options exist (-n: pytest-xdist installed)
            assert_options_exist(cmd.where, tokens[3:], help_text(sys.executable, "-m", module),
                                 f"python -m {module}")
        else:
            pytest.fail(f"{cmd.where}: no rule for {head!r} in tests/package/test_docs.py: {cmd.text}")

    def harness(self, cmd: Command, args: list[str], env: dict, stdout_file: str | None,
                force_run: bool = False) -> None:
        if args in ([], ["--help"], ["-h"]):
            sub = None
        else:
            sub = args[0]   # `harness SUB --help` exits 0 only for a subcommand that exists
            assert_options_exist(cmd.where, args[1:], help_text(*HARNESS, sub), f"harness {sub}")
            if any(t.startswith("[--") for t in args):   # a usage line ([--opt X] ...) shows every option
                usage = help_text(*HARNESS, sub).split("\n\n")[0]
                left = set(re.findall(r"\[(--[\w-]+)", usage)) - set(options(args[1:]))
                assert not left, f"{cmd.where}: the usage of harness {sub} leaves out {sorted(left)}"
        store = next((a.split("=", 1)[1] for a in args if a.startswith("--db=")), None) or \
            (args[args.index("--db") + 1] if "--db" in args else None) or env.get("HARNESS_DB", self.store)
        runs = sub is None or args[1:] == ["--help"] or (
            (sub in RUNS or (sub == "slurm" and "--dry-run" in args) or (sub == "prefetch" and "--check" in args))
            and not is_synopsis(args) and not (sub in READS_STORE and not store.startswith("sqlite"))
            and "--watch" not in args)   # `status --watch` refreshes until the grid is done: parsed only
        if not runs and not force_run:
            for suite in (a for a in args[1:2] if a.endswith((".yaml", ".yml")) and not is_synopsis([a])):
                assert (self.work / suite).is_file(), f"{cmd.where}: no suite file {suite}"
            return
        if self.data is None and sub not in (None, "ls", "slurm") and args[1:] != ["--help"]:
            self.only_parsed.append(cmd.where)   # needs the data: checked to parse above
            return
        key = (tuple(args), tuple(sorted(env.items())), str(self.data))
        if sub in PURE and key in _PURE_RESULTS:
            result = _PURE_RESULTS[key]
        else:
            result = run([*HARNESS, *args], self.work, {**base_env(self.data, self.store), **env})
            if sub in PURE:
                _PURE_RESULTS[key] = result
        printed = result.stdout + result.stderr
        if stdout_file:
            (self.work / stdout_file).write_text(result.stdout)
        shown = [substitute(line, self.data).strip() for line in cmd.output if line.strip() not in ("", "...")]
        expected = 2 if shown and shown[0].startswith("error:") else 0
        assert result.returncode == expected, \
            f"{cmd.where}: `{cmd.text}` exited {result.returncode}, not {expected}:\n{printed[-3000:]}"
        for line in shown:
            assert line in printed, f"{cmd.where}: `{cmd.text}` did not print:\n{line}\nit printed:\n{printed[-3000:]}"

    def accelerate(self, cmd: Command, args: list[str], env: dict) -> None:
        assert args[:1] == ["launch"], f"{cmd.where}: only `accelerate launch` is followed here"
        launch_help = help_text(sys.executable, "-m", "accelerate.commands.launch")
        # accelerate's own options (and their values) run up to the module (-m) or the script
        end = next((k for k, t in enumerate(args) if t in ("-m", "--module") or t.endswith(".py")), len(args))
        own, rest = args[1:end], args[end:]
        assert_options_exist(cmd.where, own, launch_help, "accelerate launch")
        assert rest, f"{cmd.where}: accelerate launch starts nothing"
        if rest[0] in ("-m", "--module"):
            assert rest[1] == "harness.run", f"{cmd.where}: accelerate launch starts {rest[1]}, not harness.run"
            found = run([sys.executable, "-c", "import importlib.util, sys; "
                         "sys.exit(importlib.util.find_spec('harness.run') is None)"], self.work,
                        base_env(self.data, self.store))
            assert found.returncode == 0, f"{cmd.where}: no module harness.run"
            rest = rest[2:]
        else:
            assert (ROOT / rest[0]).is_file(), f"{cmd.where}: no script {rest[0]}"
            rest = rest[1:]
        self.harness(cmd, ["run", *rest], env, None)

    def pip(self, cmd: Command, args: list[str]) -> None:
        from packaging.requirements import Requirement

        try:
            import tomllib
        except ModuleNotFoundError:   # Python 3.10
            tomllib = pytest.importorskip("tomli")
        assert args[:1] == ["install"], f"{cmd.where}: only `pip install` is followed here"
        extras_known = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
        with_value = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint"}
        for before, arg in zip(args, args[1:]):
            if arg.startswith("-"):
                continue
            if before in with_value:   # an index or a folder of wheels: a URL, not a requirement
                assert re.match(r"https://|/path/to/", arg), f"{cmd.where}: pip install {before} {arg}"
                continue
            local = re.fullmatch(r"(/[^\[]*|\.)(\[([\w,-]+)\])?", arg)
            if local:
                path = Path(local.group(1)) if local.group(1) != "." else ROOT
                assert (path / "pyproject.toml").is_file(), f"{cmd.where}: pip install {arg}: not the checkout"
                extras = set(filter(None, (local.group(3) or "").split(",")))
                assert extras <= extras_known, f"{cmd.where}: no extra {sorted(extras - extras_known)} in pyproject"
            else:
                # raises on a malformed requirement; torch from PyPI is its CUDA build on Linux (the CPU build is
                # on torch's own index: the README's CPU quickstart named none, and got the CUDA one)
                if Requirement(arg).name == "torch":
                    assert {"-i", "--index-url"} & set(args), f"{cmd.where}: pip install {arg} without torch's index"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The checkout's suites (and the malformed ones, and slurm/) plus a small store of two runs, under the demo
    suite's name (the README's export asks for it by name)."""
    base = tmp_path_factory.mktemp("docs")
    for folder in ("suites", "tests/bad_suites", "slurm"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, base / folder)
    records = base / "records"
    from harness.plan.suite import parse_suite

    cells = parse_suite("name: demo\nmodels: [minilm]\ntasks: [sst2]\nmethods: [full, {name: houlsby, size: 64}]\n",
                        str(base / "demo.yaml")).cells()
    for cell, score, pct in zip(cells, (80.0, 79.5), (100.0, 2.5)):   # records as a worker writes them
        (records / cell.key).mkdir(parents=True)
        record = dict(suite="demo", cell_key=cell.key, setting_key=cell.setting_key, status="completed",
                      config=cell.config(), model=cell.model, task=cell.task, task_version=cell.task_version,
                      method=cell.method, method_params=cell.method_params, method_label=cell.method_label,
                      budget=cell.budget, seed=cell.seed, hparams=cell.hparams,
                      learning_rate=cell.hparams["learning_rate"], num_processes=1, score=score,
                      metrics={"accuracy": score}, trainable_params=1000, total_params=int(1000 * 100 / pct),
                      trainable_pct=pct, train_time_s=10.0, finished_at="2026-12-02T10:00:00")
        (records / cell.key / "record.json").write_text(json.dumps(record))
    store = f"sqlite:///{base / 'store.db'}"
    made = run([*HARNESS, "ingest", str(records), "--db", store], base, base_env(data_dir(), store))
    assert made.returncode == 0, made.stderr
    return base


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_runs_or_parses(doc, scratch, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(scratch, work)
    data, only_parsed = data_dir(), []
    for block in commands(doc):   # a block is one shell session: `export` holds to its end
        session = Session(work, data, f"sqlite:///{work / 'store.db'}")
        for cmd in block:
            session.check(cmd)
        only_parsed += session.only_parsed
    if only_parsed:
        pytest.skip(f"no GLUE files in $HARNESS_DATA_DIR: only parsed {', '.join(only_parsed)}")


def test_every_yaml_block_is_what_it_shows(tmp_path):
    """A ```yaml block is a suite or a part of one (its keys are suite fields: completed with a model, a task and
    methods where it leaves them out, then parsed as `harness validate` parses it, without the data or model
    checks), a task entry (its keys are Task fields: loaded as the registry loads one) or a benchmarks.yaml line.
    docs/suites.md's schedules example ablated sst2, a task its `tasks` held only inside a multitask entry:
    copied into a suite, it was refused (`ablate[0].task: "sst2" is not one of this suite's single tasks`)."""
    import dataclasses

    import yaml

    from harness.plan.schema import SuiteModel
    from harness.plan.suite import parse_suite
    from harness.spec.tasks import Task, _entry

    base = {"name": "docs", "models": ["minilm"], "tasks": ["sst2", "stsb"], "methods": ["full", "houlsby"]}
    task_fields = {f.name for f in dataclasses.fields(Task)}
    seen = 0
    for doc in DOCS:
        for start, lines in bash_blocks(doc, "yaml"):
            where, text = f"{doc.name}:{start}", "\n".join(lines) + "\n"
            data = yaml.safe_load(text)
            assert isinstance(data, dict), f"{where}: a yaml block that is no mapping"
            seen += 1
            if set(data) <= set(SuiteModel.model_fields):
                suite = {**{k: v for k, v in base.items() if k not in data}, **data}
                parse_suite(yaml.safe_dump(suite, sort_keys=False), str(tmp_path / "suite.yaml"))
            elif set(data) <= task_fields:
                (tmp_path / "task.yaml").write_text(text)
                _entry(str(tmp_path / "task.yaml"), data.get("benchmark", "glue"))
            else:
                assert all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in data.values()), \
                    f"{where}: neither a suite, a task entry nor a benchmarks.yaml line: {sorted(data)}"
    assert seen >= 5


def test_every_task_kind_hook_is_in_the_docs():
    """docs/adding-a-task.md listed the hooks a new kind implements without `trivial_baselines`, which the base
    class leaves raising NotImplementedError and every cell calls: a kind written from the list failed every cell.
    Every public method of TaskKind is named there and is a row of architecture.md's hook table."""
    from harness.tasks.kinds import TaskKind

    hooks = [name for name, f in vars(TaskKind).items() if callable(f) and not name.startswith("_")]
    adding = " ".join((ROOT / "docs" / "adding-a-task.md").read_text(encoding="utf-8").split())
    table = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert [h for h in hooks if f"`{h}`" not in adding] == [], "docs/adding-a-task.md: hooks not named"
    assert [h for h in hooks if f"| `{h}` |" not in table] == [], "docs/architecture.md: hooks not in the table"


def test_every_inline_harness_command_names_real_options():
    """An inline `harness SUB ...` in the prose (not only in ```bash blocks) names a subcommand and options of its
    parser: a renamed option fails here (in-process, from harness.cli's parser: no subprocess)."""
    from harness.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    checked = 0
    for doc in DOCS:
        text = " ".join(doc.read_text(encoding="utf-8").split())
        for span in re.findall(r"`harness ([^`]+)`", text):
            words = span.split()
            if words[0] in ("COMMAND", "SUB"):
                continue
            assert words[0] in subparsers, f"{doc.name}: `harness {span}`: no subcommand {words[0]}"
            known = set(subparsers[words[0]]._option_string_actions)
            unknown = [o for o in options(words[1:]) if o not in known]
            assert not unknown, f"{doc.name}: `harness {span}`: harness {words[0]} has no option {unknown}"
            checked += 1
    assert checked > 30


def test_every_file_the_docs_name_exists():
    """A path of the checkout the prose names (harness/train/dropout.py, tests/store/test_faults.py, bench/...;
    architecture.md's `train/sync.py`, relative to harness/) is there: a file moved or renamed fails here, not in
    front of a reader. Only the task file adding-a-task.md has the reader write is not."""
    written_by_the_reader = {"harness/spec/tasks/scitail.yaml"}
    named = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        named |= {p.rstrip(".,;:") for p in re.findall(r"\b(?:harness|tests|bench|suites|docs)/[\w./*-]+", text)}
        named |= {"harness/" + p for p in re.findall(r"`((?:spec|plan|tasks|train|store|launch|stats|report|analysis|"
                                                     r"board|cli)/[\w./*-]+\.(?:py|yaml))`", text)}
    missing = sorted(p for p in named - written_by_the_reader if not any(ROOT.glob(p)))
    assert not missing, f"paths the docs name that the checkout does not have: {missing}"
    assert len(named) > 40


def test_tracking_md_names_every_tracker_and_every_setting_the_harness_sets():
    """docs/tracking.md listed the trackers without swanlab, and the settings a suite may not give without
    MLflow's nested_run and W&B's reinit, which `harness validate` refuses (harness/spec/trackers.py)."""
    from harness.spec.trackers import RESERVED, TRACKERS

    text = " ".join((ROOT / "docs" / "tracking.md").read_text(encoding="utf-8").split())
    intro = text[:text.index("## Turning it on")]
    assert [t for t in TRACKERS if not re.search(rf"\b{t}\b", intro)] == [], "trackers tracking.md does not list"
    for tracker, names in RESERVED.items():
        line = re.search(rf"- \*\*{tracker}\*\*: (.*?)(?= - \*\*|## )", text)
        assert line, f"tracking.md: no settings line for {tracker}"
        assert [n for n in names if f"`{n}`" not in line.group(1)] == [], f"tracking.md: {tracker}'s own settings"


def test_the_reference_tables_cover_the_registries():
    """The tables a reader looks things up in hold what the code declares: suites.md's hparams (with their
    defaults) and budget keys, methods.md's methods (with their parameters), tasks.md's tasks. adding-a-method.md and
    adding-a-task.md end with "add it to the table"; this is what notices when that step is left out."""
    from harness.spec.hparams import Budget, Hparams
    from harness.spec.methods import METHODS
    from harness.spec.tasks import TASKS

    def rows(name):
        return {m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w,` ]+)` \|(.*)$",
                                                              (ROOT / "docs" / name).read_text(encoding="utf-8"), re.M)}

    hparams = rows("suites.md")
    for name, f in Hparams.model_fields.items():
        assert name in hparams, f"suites.md: no row for hparam {name}"
        default = f.default[0] if isinstance(f.default, list) else f.default
        shown = hparams[name].split("|")[0].strip()
        if isinstance(default, bool):
            assert shown == str(default).lower(), (name, shown, default)
        elif isinstance(default, (int, float)):
            assert float(shown) == default, (name, shown, default)
        elif isinstance(default, str):
            assert shown == default, (name, shown, default)
    budgets = re.search(r"budgets: .*# each: any of (.*)", (ROOT / "docs" / "suites.md").read_text()).group(1)
    assert [b for b in Budget.model_fields if b not in budgets] == [], "suites.md: budget keys left out"
    methods = rows("methods.md")
    for name, spec in METHODS.items():
        assert name in methods, f"methods.md: no row for method {name}"
        assert [p for p in spec.params if f"`{p}`" not in methods[name]] == [], f"methods.md: {name}'s parameters"
    tasks = {t for key in rows("tasks.md") for t in re.split(r"`?, `?", key)}
    assert [t for t in TASKS if t not in tasks] == [], "tasks.md: tasks not in the table"


def test_the_readme_command_table_lists_every_subcommand():
    from harness.cli import SUBCOMMANDS

    listed = set(re.findall(r"^\| `harness (\w+)", (ROOT / "README.md").read_text(encoding="utf-8"), re.M))
    assert listed == set(SUBCOMMANDS), (sorted(set(SUBCOMMANDS) - listed), sorted(listed - set(SUBCOMMANDS)))


def test_the_import_diagram_has_every_import():
    """architecture.md's "Imports go one way" drew launch without analysis and stats (it runs a suite's ablations)
    and the board without plan (the Grid page's data): every import of a folder of harness/ (lazy ones too) is an
    arrow of the diagram, spec and atomic being open to all."""
    import ast

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## Imports go one way", 1)[1].split("```")[1]
    allowed: dict[str, set] = {}
    for line in block.splitlines():
        parts = [p.strip() for p in re.split(r"\s+\(", line, maxsplit=1)[0].split("<-")]
        for lower, upper in zip(parts, parts[1:]):
            allowed.setdefault(upper, set()).update(n.strip() for n in lower.split(","))
    assert "launch" in allowed and allowed.pop("cli") == {"everything"}, allowed
    for folder, may in allowed.items():
        used = set()
        for path in (ROOT / "harness" / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
                used |= {n.split(".")[1] for n in names if n.startswith("harness.")}
        extra = used - may - {folder, "spec", "atomic"}
        assert not extra, f"architecture.md: {folder} imports {sorted(extra)}, which the diagram does not draw"


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    assert "## Run the tests" in lines
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", "\n".join(lines)))
    pages = {f"docs/{p.name}" for p in ROOT.glob("docs/*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def test_quickstart_has_at_most_five_commands():
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("## Quickstart")
    first_block_line = text[:start].count("\n") + 1
    block = next(b for b in commands(readme) if b and int(b[0].where.split(":")[1]) > first_block_line)
    assert len(block) <= 5, [c.text for c in block]


def test_links_between_docs_resolve():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


def test_no_machine_paths_in_tracked_files():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = []
    for name in filter(None, files.stdout.split("\0")):
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue   # binary (the screenshot), or deleted in the work tree
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not found, "paths of a particular machine (use /path/to/checkout, /path/to/glue, $VENV/bin/python):\n" \
                      + "\n".join(found)


def test_the_stop_signal_times_in_the_docs_are_the_constants():
    """The docs give the stop signal's warning and slack as numbers (WARNING_S, SIGNAL_SLACK_S of
    harness.launch.slurm, which the script, `--help` and the --time check use): one fact, so a changed constant
    fails here until every doc says the new one."""
    from harness.launch.slurm import SIGNAL_SLACK_S, WARNING_S

    text = " ".join("\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
                    .split())
    checks = [(r"USR2@(\d+)", WARNING_S), (r"signal comes (\d+) s before", WARNING_S),
              (r"up to (\d+) s earlier", SIGNAL_SLACK_S), (r"`--time` of (\d+) s or less", WARNING_S + SIGNAL_SLACK_S)]
    for pattern, value in checks:
        numbers = [int(n) for n in re.findall(pattern, text)]
        assert numbers and set(numbers) == {value}, (pattern, numbers, value)


def _constant(module: str, name: str):
    """A module-level constant read from its source (the board's modules import Streamlit: not imported here)."""
    import ast

    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets
                       for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for target, value in zip(targets, values if len(values) == len(targets) else [node.value] * len(targets)):
                if isinstance(target, ast.Name) and target.id == name:
                    return ast.literal_eval(value)
    raise AssertionError(f"{module}: no constant {name}")


def test_the_other_numbers_the_docs_quote_are_the_constants():
    """As the stop signal's times above: each number the prose gives for a constant of the code (the board's reread
    and refresh periods, the loop's sync interval, squeue and finish retries (the longest wait of the latter, the
    poll's floor), the PostgreSQL connect timeout, the lease defaults, compile's threshold, the grid cap, the
    tracker and pilot defaults) is that constant, wherever the docs say it; a changed constant fails here until
    they say the new one."""
    text = " ".join("\n".join(p.read_text(encoding="utf-8") for p in DOCS).split())
    board, status = "harness/board/grid_page.py", "harness/spec/status.py"
    checks = [
        (r"re-reads the store every (\d+) seconds", _constant(board, "REFRESH_S")),
        (r"reads the store itself, every (\d+) s", _constant(board, "REFRESH_S")),
        (r"whenever a cell changes state, else every (\d+) s", _constant(board, "ESTIMATE_TTL_S")),
        (r"made again after (\d+) minutes", _constant("harness/board/app.py", "READ_S") / 60),
        (r"`SYNC_EVERY` \((\d+)\)|at most (\d+) steps on|within (\d+) steps", _constant("harness/train/sync.py",
                                                                                        "SYNC_EVERY")),
        (r"(\d+) failures in a row", _constant("harness/launch/slurm.py", "SQUEUE_TRIES")),
        (r"PostgreSQL connection \(psycopg\) gives up after (\d+) s", _constant("harness/store/engine.py",
                                                                                 "PG_CONNECT_TIMEOUT_S")),
        (r"\((\d+) tries over about a minute", _constant("harness/launch/attempt.py", "DEFAULT_FINISH_TRIES")),
        (r"the first wait, doubled up to (\d+) minutes",
         _constant("harness/launch/attempt.py", "MAX_RETRY_WAIT_S") / 60),
        (r"`\$HARNESS_SLURM_POLL_S` seconds where set, at least (\d+)", _constant("harness/launch/slurm.py",
                                                                                "MIN_POLL_S")),
        (r"`--heartbeat-s` \((\d+)\)", _constant(status, "DEFAULT_HEARTBEAT_S")),
        (r"`--lease-timeout-s` \((\d+);|\(default (\d+) s\) in the board",
         _constant(status, "DEFAULT_LEASE_TIMEOUT_S")),
        (r"([\d,]+) optimizer steps \(`AUTO_MIN_STEPS`|cells of ([\d,]+) planned steps",
         _constant("harness/train/compiling.py", "AUTO_MIN_STEPS")),
        (r"a grid above ([\d,]+) cells", _constant(status, "DEFAULT_MAX_CELLS")),
        (r"train-loss points \(default (\d+)\)", _constant("harness/spec/trackers.py", "DEFAULT_LOG_EVERY")),
        (r"`--pilot-steps` steps \(default (\d+)\)", _constant("harness/cli/estimate.py", "PILOT_STEPS")),
        (r"no answer within (\d+) s, locked or out of reach", _constant("harness/launch/worker.py", "LOST_NOW_WAIT_S")),
    ]
    for pattern, value in checks:
        numbers = [float(n.replace(",", "")) for m in re.findall(pattern, text)
                   for n in (m if isinstance(m, tuple) else (m,)) if n]
        assert numbers and set(numbers) == {value}, (pattern, numbers, value)


def test_the_readme_lists_every_exit_code():
    """The README's exit-code line gave 0, 1, 2 and 3: `harness run`'s 4 (a result kept for ingest), `harness
    slurm --wait`'s 5 and a closed pipe's 141 were in no list. Every EXIT_ name of harness/spec/errors.py, where the
    codes are defined, is in that line, and no other number."""
    from harness.spec import errors

    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    line = re.search(r"Exit codes \(all of them, defined in `harness/spec/errors.py`\): (.*?)\.(?: |$)(?=[A-Z#`]|$)",
                     text)
    assert line, "README.md: no 'Exit codes (all of them, defined in `harness/spec/errors.py`): ...' line"
    listed = [int(n) for n in re.findall(r"(?:^|; )(\d+) ", line.group(1))]
    defined = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert sorted(listed) == sorted(defined), (listed, sorted(defined))
