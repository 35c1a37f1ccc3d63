"""`harness slurm SUITE --workers N`: an sbatch array of N workers on one store, from the templates shipped in
the package (harness/launch/templates/, with the accelerate/DeepSpeed configs).

Slurm schedules, accelerate launches, the store arbitrates: each array task is one worker (one process, a
multi-GPU group, or a multi-node group) that claims cells until none is left (harness.launch.runner). Jobs ask for
a warning signal WARNING_S seconds before their time limit and may be requeued; a worker stopped by a signal
checkpoints its cell, gives it back and requeues its own task (requeue_slurm_task), and whoever claims the cell
next resumes it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from harness.spec.errors import EXIT_INPUT, InputError
from harness.spec.layout import DEFAULT_OUTPUT_DIR, RunLayout

TEMPLATES = resources.files("harness.launch") / "templates"   # package data: works from a wheel as from a checkout
ARRAY, MULTI_GPU, MULTI_NODE = "array.sbatch", "multi_gpu.sbatch", "multi_node.sbatch"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass
class SlurmRequest:
    suite_path: str
    suite_name: str
    workers: int
    gpus_per_worker: int = 1
    nodes_per_worker: int = 1
    partition: str | None = None
    time: str | None = None
    db: str | None = None
    output_dir: str = DEFAULT_OUTPUT_DIR
    sbatch_args: list[str] = field(default_factory=list)
    accelerate_config: str | None = None
    throttle: int | None = None
    run_args: list[str] = field(default_factory=list)
    data_dir: str | None = None
    data_env: str | None = None   # the $HARNESS_DATA_DIR folder the submitting side checked (absolute), if it used it

    def validate(self) -> None:
        for name, value, least in (("--workers", self.workers, 1), ("--gpus-per-worker", self.gpus_per_worker, 0),
                                   ("--nodes-per-worker", self.nodes_per_worker, 1), ("--throttle", self.throttle, 1)):
            if value is not None and value < least:
                raise InputError(f"{name}: must be at least {least}, not {value}")
        if self.nodes_per_worker > 1 and self.gpus_per_worker < 1:
            raise InputError("--nodes-per-worker > 1 needs --gpus-per-worker >= 1 (one rank per GPU)")
        from harness.spec.status import MAX_PROCESSES

        if self.world > MAX_PROCESSES:   # 10**20 GPUs printed a script sbatch refuses (--nodes too, above INT_MAX)
            raise InputError(f"--{'nodes' if self.nodes_per_worker > MAX_PROCESSES else 'gpus'}-per-worker: "
                             f"{max(1, self.gpus_per_worker)} GPU(s) x {self.nodes_per_worker} node(s) is "
                             f"{self.world} processes per worker; at most {MAX_PROCESSES}, the process count a "
                             f"run's row records")
        # refused, not lowered: sbatch takes %K above the array's size and it limits nothing (above 2**31 - 1 it
        # drops it without a word); a K larger than --workers says the array is not the size meant, as a --workers
        # beyond the suite's cells does (check_workers)
        if self.throttle is not None and self.throttle > self.workers:
            raise InputError(f"--throttle: {self.throttle} above --workers {self.workers}: an array of "
                             f"{self.workers} task(s) never runs more than {self.workers} at once")
        for option, value in self.texts():
            refuse_control_characters(option, value)
        if self.time is not None and not slurm_time_ok(self.time):
            raise InputError(f"--time: not a Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                             f"D-HH:MM:SS): {self.time!r}")
        limit_s = slurm_time_s(self.time) if self.time is not None else None
        if limit_s is not None and limit_s <= WARNING_S + SIGNAL_SLACK_S:
            raise InputError(f"--time: {self.time} ({limit_s} s) leaves no time to train: every task gets its stop "
                             f"signal {WARNING_S} s before its limit (Slurm may send it {SIGNAL_SLACK_S} s earlier), "
                             f"then checkpoints and requeues itself, again and again; give more than "
                             f"{WARNING_S + SIGNAL_SLACK_S} s")
        if self.partition is not None and not re.fullmatch(r"[\w.,+-]+", self.partition):
            raise InputError(f"--partition: not a partition name (letters, digits, '_', '-', '.', ',' for a list): "
                             f"{self.partition!r}")
        for arg in self.sbatch_args:
            if not arg.startswith("-"):
                raise InputError(f"--sbatch-arg: not an sbatch option (e.g. --mem=32G): {arg!r}")
            refuse_own_option(arg)
        self.cpus_per_task   # a --cpus-per-task that is not a number: refused here, not by every array task
        check_worker_db(self.db_url)
        if self.accelerate_config and not os.path.isfile(self.accelerate_config):
            shipped = shipped_config(self.accelerate_config)
            if shipped is None:
                what = "a folder, not a config file" if os.path.isdir(self.accelerate_config) else "no such file"
                raise InputError(f"--accelerate-config: {what}: {self.accelerate_config} (shipped configs: "
                                 f"{', '.join(SHIPPED_CONFIGS)})")
            self.accelerate_config = shipped
        if self.accelerate_config:
            check_accelerate_config(self.accelerate_config)

    @property
    def db_url(self) -> str:
        from harness.store.engine import absolute_db_url, default_db_url

        return absolute_db_url(self.db or default_db_url())

    def texts(self):
        """(option, value) of every text that reaches the script."""
        yield "SUITE", self.suite_path
        yield "suite name", self.suite_name
        for option, value in (("--partition", self.partition), ("--time", self.time), ("--db", self.db),
                              ("--output-dir", self.output_dir), ("--accelerate-config", self.accelerate_config),
                              ("--data-dir", self.data_dir), ("$HARNESS_DATA_DIR", self.data_env)):
            if value is not None:
                yield option, value
        yield "$HARNESS_DB", self.db_url
        for arg in self.sbatch_args:
            yield "--sbatch-arg", arg
        for arg in self.run_args:
            yield "run argument", arg
        yield "the current directory", os.getcwd()
        yield "the Python executable", sys.executable

    @property
    def cpus_per_task(self) -> int | None:
        """The CPUs each task asked for with --sbatch-arg (the last --cpus-per-task / -c, as sbatch takes it), else
        None. Written into the script rather than read from $SLURM_CPUS_PER_TASK there: one inherited from the
        allocation `harness slurm` ran in (srun -c 8 --pty bash) reaches a job that asked for none (--export=ALL)."""
        cpus = None
        for arg in self.sbatch_args:
            m = re.fullmatch(r"--([\w-]+)(?:[= ](.*))?|-c(?: ?(.*))", arg, re.S)
            if m is None or (m.group(1) is not None and not (
                    len(m.group(1)) >= len("cpus-per-t") and "cpus-per-task".startswith(m.group(1)))):
                continue
            value = (m.group(2) if m.group(1) is not None else m.group(3)) or ""
            if not value.isdigit() or int(value) < 1:
                raise InputError(f"--sbatch-arg: {arg!r}: --cpus-per-task takes a number of CPUs, at least 1")
            cpus = int(value)
        return cpus

    @property
    def template(self) -> str:
        if self.nodes_per_worker > 1:
            return MULTI_NODE
        return MULTI_GPU if self.gpus_per_worker > 1 else ARRAY

    @property
    def world(self) -> int:
        return max(1, self.gpus_per_worker) * self.nodes_per_worker


SHIPPED_CONFIGS = ("deepspeed_zero2", "deepspeed_zero3")
# the templates' warning signal (#SBATCH --signal=USR2@WARNING_S), and how much earlier Slurm may send it
# (sbatch(1), --signal)
WARNING_S, SIGNAL_SLACK_S = 90, 60
# Slurm's --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
# days-hours:minutes:seconds (and no limit: infinite / unlimited)
_SLURM_TIME = re.compile(r"(?P<m>\d+)(:(?P<s>\d{1,2}))?|(?P<h>\d+):(?P<m2>\d{1,2}):(?P<s2>\d{1,2})"
                         r"|(?P<d>\d+)-(?P<h3>\d{1,2})(:(?P<m3>\d{1,2})(:(?P<s3>\d{1,2}))?)?")
WORKER_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb", "mssql", "oracle")   # SQLAlchemy's own dialects


def slurm_time_ok(text: str) -> bool:
    if text.lower() in ("infinite", "unlimited"):
        return True
    m = _SLURM_TIME.fullmatch(text)
    if m is None:
        return False
    below_60 = [m.group(k) for k in ("s", "m2", "s2", "m3", "s3") if m.group(k) is not None]
    return all(int(v) < 60 for v in below_60) and (m.group("h3") is None or int(m.group("h3")) < 24)


def slurm_time_s(text: str) -> int | None:
    """A time limit slurm_time_ok accepts, in seconds; None: no limit (infinite, unlimited, 0)."""
    m = _SLURM_TIME.fullmatch(text)
    if m is None:
        return None
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    s = (g.get("d", 0) * 86400 + (g.get("h", 0) + g.get("h3", 0)) * 3600
         + (g.get("m", 0) + g.get("m2", 0) + g.get("m3", 0)) * 60 + g.get("s", 0) + g.get("s2", 0) + g.get("s3", 0))
    return s or None   # Slurm: a time limit of 0 is none


def refuse_control_characters(option: str, value: str) -> None:
    """A newline (or any control character) in a value would start a new line of the batch script: refused."""
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        from harness.store.redact import redact_text

        raise InputError(f"{option}: contains a control character ({bad!r}); refused, since it would put a line of "
                         f"its own into the batch script: {redact_text(value)!r}")


# The #SBATCH options the templates set themselves, and what sets them. sbatch takes the last of two lines, so an
# --sbatch-arg repeating one overrode it silently (--array=0-4 ran 5 workers where --workers said 2; --no-requeue
# or --signal=B:... undid the preemption handling; --output moved the logs away from slurm-logs/).
OWN_OPTIONS = {"array": "use --workers and --throttle", "time": "use --time", "partition": "use --partition",
               "nodes": "use --nodes-per-worker", "gpus-per-node": "use --gpus-per-worker",
               "ntasks-per-node": "one worker launch per node", "job-name": "it names the logs",
               "output": "the logs are OUTPUT_DIR/slurm-logs/", "open-mode": "a requeued task appends to its log",
               "signal": "the warning before the time limit", "requeue": "a stopped worker requeues its task",
               "no-requeue": "a stopped worker requeues its task"}
OWN_SHORT = {"a": "array", "t": "time", "p": "partition", "N": "nodes", "J": "job-name", "o": "output"}
# sbatch options of their own that are also the beginning of one above (getopt takes an exact name first)
_NOT_ABBREVIATIONS = ("gpus", "ntasks")


def refuse_own_option(arg: str) -> None:
    """An --sbatch-arg that sets an option the script sets itself: refused, naming what to use instead. sbatch
    (getopt) also takes a long option by any unambiguous beginning of its name (--arr=0-4)."""
    if arg.startswith("--"):
        name = re.split(r"[= ]", arg[2:], maxsplit=1)[0]
        owns = [o for o in OWN_OPTIONS if o == name or (o.startswith(name) and name not in _NOT_ABBREVIATIONS)]
        own = name if name in OWN_OPTIONS else (owns[0] if name and owns else None)
    else:
        own = OWN_SHORT.get(arg[1:2])
    if own is not None:
        raise InputError(f"--sbatch-arg: {arg!r} sets --{own}, which the script sets itself ({OWN_OPTIONS[own]})")


def sbatch_quote(option: str, value: str) -> str:
    """A value on an #SBATCH line. sbatch reads those lines itself, not the shell: it takes double quotes (not
    single ones) around a value with spaces, so a value that needs quoting is double-quoted, and one holding a
    double quote or a backslash is refused."""
    if shlex.quote(value) == value:
        return value
    if '"' in value or "\\" in value:
        raise InputError(f"{option}: a double quote or backslash cannot be passed on an #SBATCH line: {value!r}")
    return f'"{value}"'


def check_worker_db(url: str) -> None:
    """The store must be one that workers on other nodes can open: a URL of a known database, not in memory, and
    an SQLite file that is there a database (probed read-only: creates and migrates nothing). A server database is
    left to the array tasks (a login node may not reach it), as is an SQLite file not created yet (the first task
    creates it)."""
    from sqlalchemy.engine import make_url

    from harness.store.engine import make_engine, new_sqlite_file
    from harness.store.redact import redact_text

    try:
        parsed = make_url(url)
    except Exception:
        raise InputError(f"--db: not a database URL: {redact_text(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend not in WORKER_BACKENDS:
        raise InputError(f"--db: unknown database {backend!r} in {parsed.render_as_string(hide_password=True)} "
                         f"(the workers open sqlite:///FILE or postgresql+psycopg://USER@HOST/DB)")
    if backend == "sqlite" and (not parsed.database or parsed.database == ":memory:"
                                or parsed.query.get("mode") == "memory"):
        raise InputError(f"--db: {parsed.render_as_string(hide_password=True)} is an in-memory SQLite store: "
                         f"each worker would get its own, empty one and every result would be lost; give a file "
                         f"(sqlite:///path/to/harness.db) or a PostgreSQL server")
    if backend == "sqlite" and not new_sqlite_file(url):
        make_engine(url, read_only=True).dispose()


def _duplicate_key(node) -> tuple[str, int, int] | None:
    """The first key given twice in one mapping of a YAML node tree: (key, its line, the first one's line)."""
    from yaml.nodes import MappingNode, SequenceNode

    if isinstance(node, MappingNode):
        seen = {}
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                return name, key.start_mark.line + 1, seen[name]
            seen[name] = key.start_mark.line + 1
        children = [value for _, value in node.value]
    else:
        children = node.value if isinstance(node, SequenceNode) else []
    return next(filter(None, map(_duplicate_key, children)), None)


def check_accelerate_config(path: str) -> None:
    """A config `accelerate launch` can read (it parses it with yaml.safe_load into a mapping of settings): one
    that does not parse is refused here, not by every array task."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            loader = yaml.SafeLoader(f.read())   # yaml.safe_load in its two steps: one parse gives both
        try:
            node = loader.get_single_node()   # the node tree, with lines: where a key is given twice
            # read before the value is built: building a `<<: *base` merge rewrites the tree in place, and a key
            # overriding a merged one (which YAML allows) would then read as given twice
            duplicate = _duplicate_key(node)
            config = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"--accelerate-config: {path}{f':{mark.line + 1}' if mark else ''}: not YAML "
                         f"({getattr(e, 'problem', None) or str(e).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--accelerate-config: cannot read {path} ({getattr(e, 'strerror', None) or e})") from None
    except RecursionError:   # PyYAML builds nested values recursively: 5,000 brackets were a traceback
        raise InputError(f"--accelerate-config: {path}: nested too deep to be accelerate settings") from None
    if not isinstance(config, dict):
        raise InputError(f"--accelerate-config: {path} is not a mapping of accelerate settings")
    if duplicate:   # accelerate keeps the last one silently
        key, line, first = duplicate
        raise InputError(f"--accelerate-config: {path}:{line}: {key}: duplicate key (first at line {first}); YAML "
                         f"would silently keep only the last one")
    # what `accelerate launch --config_file` refuses in every array task (a misspelt setting, no distributed_type):
    # read here as accelerate reads it
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    from harness.spec.errors import did_you_mean

    known = set(ClusterConfig.__dataclass_fields__) | {"fp16", "dynamo_backend"}   # (old spellings it converts)
    unknown = [str(k) for k in config if str(k) not in known]
    if unknown and config.get("compute_environment", "LOCAL_MACHINE") == "LOCAL_MACHINE":
        raise InputError(f"--accelerate-config: {path}: {unknown[0]}: not an accelerate setting"
                         f"{did_you_mean(unknown[0], known)}")
    try:
        load_config_from_file(path)
    except (ValueError, TypeError, KeyError) as e:
        raise InputError(f"--accelerate-config: {path}: accelerate refuses it: {str(e).splitlines()[0]}") from None


def shipped_config(name: str) -> str | None:
    """The path of an accelerate config shipped with the package, by name (deepspeed_zero2 or
    deepspeed_zero2.yaml); None for any other name."""
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    return str(TEMPLATES / f"{stem}.yaml") if stem in SHIPPED_CONFIGS else None


def db_export(url: str, python: str) -> str:
    """The script's HARNESS_DB line. A URL without a password is written; one with a password never is: the
    script takes $HARNESS_DB from the environment sbatch was called from (sbatch's default --export=ALL; `harness
    slurm` submits with it set), else the URL without its password, for libpq's PGPASSFILE / PGPASSWORD; then
    `python -m harness.launch.slurm same-store` stops the task where that $HARNESS_DB names another store."""
    from sqlalchemy.engine import make_url

    q = shlex.quote
    try:
        parsed = make_url(url)
    except Exception:
        parsed = None
    if parsed is None or (parsed.password is None and "password" not in parsed.query):
        return f"export HARNESS_DB={q(url)}"
    bare = parsed._replace(password=None).difference_update_query(["password"]).render_as_string(
        hide_password=False)
    return ("# the store's URL has a password, so it is not written here: $HARNESS_DB comes from the environment\n"
            "# sbatch was called from (its default --export=ALL), else the URL below, with the password from\n"
            "# libpq's PGPASSFILE or PGPASSWORD (docs/cluster.md); one that names another store stops the task\n"
            f'if [ -z "${{HARNESS_DB:-}}" ]; then export HARNESS_DB={q(bare)}; fi\n'
            f"{q(python)} -m harness.launch.slurm same-store {q(bare)} || exit 2")


# what names a store: its database, host, port, user and database name (not the password, not the driver)
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def _store_key(u) -> tuple:
    """What names the store URL `u` names. The host and port may sit in the query (`?host=db1&port=5433`, or
    `?host=/run/postgresql`, a unix socket's folder; libpq lets them outrank the netloc's), so they count from there
    too: a host name in any case, a socket folder as written (less a trailing slash), ports as numbers."""
    def values(name):
        v = u.query.get(name)
        return tuple(v) if isinstance(v, tuple) else (v,) if v is not None else ()

    backend = u.get_backend_name()
    hosts = values("host") or ((u.host,) if u.host else ())
    hosts = tuple(os.path.normpath(h) if h.startswith("/") else h.lower() for h in hosts)
    ports = values("port") or ((u.port,) if u.port else ())
    ports = tuple(int(p) if str(p).isdigit() else p for p in ports) or (_DEFAULT_PORTS.get(backend),)
    return backend, hosts, ports, u.database, u.username


def other_store(given: str, written: str) -> str | None:
    """None when URL `given` names the store URL `written` names; else why not, in one line (no password)."""
    from sqlalchemy.engine import make_url

    from harness.store.redact import redact_text

    try:
        a = make_url(given)
    except Exception:
        return f"$HARNESS_DB: not a database URL: {redact_text(given)!r}"
    b = make_url(written)

    if _store_key(a) == _store_key(b):
        return None
    return (f"$HARNESS_DB names the store {a.render_as_string(hide_password=True)}, but this script was written for "
            f"{b.render_as_string(hide_password=True)} (database, host, port, name and user must match); unset "
            f"HARNESS_DB or export that store's URL before sbatch")


def render(req: SlurmRequest) -> str:
    """The filled template. A line whose placeholder has no value (no --partition, no --time, no GPU) is left
    out, so the script shows only what was asked for. Every value is shell-quoted (#SBATCH lines: sbatch_quote)
    or a number; one with a newline or another control character is refused (InputError) before anything is
    written; a store password is never written (db_export)."""
    req.validate()
    q = shlex.quote
    output_dir = os.path.abspath(req.output_dir)
    accelerate_config = os.path.abspath(req.accelerate_config) if req.accelerate_config else None
    deepspeed = bool(req.accelerate_config) and "DEEPSPEED" in Path(req.accelerate_config).read_text()
    values = {
        "workers": str(req.workers), "last_task": str(req.workers - 1), "warning_s": str(WARNING_S),
        "throttle": f"%{req.throttle}" if req.throttle else "",
        "job_name": re.sub(r"[^A-Za-z0-9_.-]", "_", f"harness-{req.suite_name}"),
        "gpus": str(req.gpus_per_worker) if req.gpus_per_worker else None,
        "gpus_text": f"{req.gpus_per_worker} GPU" if req.gpus_per_worker else "CPUs only",
        "nodes": str(req.nodes_per_worker), "world": str(req.world),
        "multi_gpu": "" if deepspeed else "--multi_gpu ",   # a DeepSpeed config picks its own launcher
        "partition": sbatch_quote("--partition", req.partition) if req.partition else None,
        "time": sbatch_quote("--time", req.time) if req.time else None,
        # sbatch expands %x, %j, ... in the whole --output path: a % of the folder's own name is written %%
        "log_dir": sbatch_quote("--output-dir", f"{RunLayout(output_dir).slurm_logs.replace('%', '%%')}/%x-%A_%a.out"),
        "sbatch_args": "\n".join(f"#SBATCH {sbatch_quote('--sbatch-arg', a)}" for a in req.sbatch_args) or None,
        "workdir": q(os.getcwd()), "db_export": db_export(req.db_url, sys.executable),
        "suite": q(os.path.abspath(req.suite_path)), "suite_name": q(req.suite_name), "output_dir": q(output_dir),
        "python": q(sys.executable),
        "accelerate_args": f"--config_file {q(accelerate_config)}" if accelerate_config else "",
        "accelerate_config": f"export HARNESS_ACCELERATE_CONFIG={q(accelerate_config)}" if accelerate_config
        else "unset HARNESS_ACCELERATE_CONFIG",
        # $HARNESS_DATA_DIR pinned as it was checked: not lost to --export=NONE or another submitting shell; still
        # a variable, so a suite's own data_dir outranks it as it did here
        "data_export": f"export HARNESS_DATA_DIR={q(req.data_env)}" if req.data_env else None,
        # --data-dir as an option of the worker, not $HARNESS_DATA_DIR: a suite's own data_dir outranks the variable
        "run_args": " ".join(q(a) for a in req.run_args + (["--data-dir", os.path.abspath(req.data_dir)]
                                                           if req.data_dir else [])),
    }
    cpus = req.cpus_per_task
    values["cpus"] = str(cpus) if cpus else None
    # each rank's threads: the task's CPUs shared out among its ranks on the node
    values["threads"] = str(max(1, cpus // max(1, req.gpus_per_worker))) if cpus else None
    values["no_cpus"] = None if cpus else ""
    values["cpu_only"] = "" if req.gpus_per_worker == 0 else None
    if req.gpus_per_worker == 0 and req.template == ARRAY:
        values["multi_gpu"] = ""
    text = (TEMPLATES / req.template).read_text()
    lines = []
    for line in text.splitlines():
        names = _PLACEHOLDER.findall(line)
        if any(values.get(n) is None for n in names):
            unknown = [n for n in names if n not in values]
            if unknown:
                raise KeyError(f"{req.template}: unknown placeholder {unknown[0]}")
            continue
        if not names:
            lines.append(line)
            continue
        # an empty value leaves no double space behind (indentation kept); spaces inside values stay as they are
        held: list[str] = []

        def hold(m: re.Match) -> str:
            value = values[m.group(1)]
            if not value:
                return ""
            held.append(value)
            return f"\0{len(held) - 1}\0"

        skeleton = _PLACEHOLDER.sub(hold, line)
        indent = len(skeleton) - len(skeleton.lstrip(" "))
        skeleton = skeleton[:indent] + re.sub(r" {2,}", " ", skeleton[indent:]).rstrip()
        lines.append(re.sub(r"\0(\d+)\0", lambda m: held[int(m.group(1))], skeleton))
    return "\n".join(lines) + "\n"


def script_path(output_dir: str, suite_name: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(RunLayout(output_dir).slurm_scripts, f"{suite_name}-{stamp}.sbatch")


SBATCH_TIMEOUT_S = 120   # a controller that does not answer sbatch in this long is down or overloaded


SBATCH_NOT_FOUND = "sbatch: not found; run this on a Slurm login node (or print the script with --dry-run)"


def check_sbatch() -> None:
    """sbatch is there to run: decided before the script and its folders are written. Refused only after, they
    were removed again, and a folder made and removed under a worker writing into the same output folder (its
    makedirs done, its file not yet) failed that worker."""
    import shutil

    if shutil.which("sbatch") is None:
        raise InputError(SBATCH_NOT_FOUND)


def submit(script_file: str, db_url: str | None = None) -> str:
    """sbatch the script; returns the job id. The store's URL goes to sbatch in its environment (HARNESS_DB), which
    sbatch passes on to the job (--export=ALL): a URL with a password is never written into the script."""
    env = dict(os.environ)
    if db_url:
        env["HARNESS_DB"] = db_url
    try:
        done = subprocess.run(["sbatch", "--parsable", script_file], capture_output=True, text=True,
                              timeout=SBATCH_TIMEOUT_S, env=env)
    except FileNotFoundError:
        raise InputError(SBATCH_NOT_FOUND) from None   # (sbatch removed since check_sbatch found it)
    if done.returncode != 0:   # what sbatch refused (a partition, an --sbatch-arg, the cluster): its first line
        from harness.store.redact import redact_text

        lines = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()
        said = next((line for line in lines if "error" in line.lower()), lines[0])   # not a warning before it
        said = said.removeprefix("sbatch: ").removeprefix("error: ")
        raise InputError(f"sbatch: refused the job: {redact_text(said)}")
    return done.stdout.strip().split(";")[0]


# squeue failing this many polls in a row (a minute at the default 10 s poll) ends `harness slurm --wait`: a
# controller that is restarting or busy answers again within it
SQUEUE_TRIES = 6
SQUEUE_TIMEOUT_S = 120


class SlurmUnreachable(Exception):
    """squeue failed SQUEUE_TRIES polls in a row: whether the job still runs is unknown."""


# `harness slurm --wait`: seconds between two squeue calls. Each is a request to the Slurm controller, which every
# user of the cluster shares: 0 was a busy loop (4,488 calls of a fake squeue in 5 s), so at least MIN_POLL_S
POLL_ENV, DEFAULT_POLL_S, MIN_POLL_S = "HARNESS_SLURM_POLL_S", 10.0, 1.0


def wait_for(job_id: str, poll_s: float = DEFAULT_POLL_S) -> None:
    """Until no task of the array is pending, running or requeued (a requeued task shows as pending again). A
    failed squeue is tried again at the next poll; SlurmUnreachable after SQUEUE_TRIES failures in a row."""
    failures = 0
    while True:
        try:
            done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True,
                                  timeout=SQUEUE_TIMEOUT_S)
            # a job that ended long enough ago is no longer known to squeue: it ended
            error = None if done.returncode == 0 or "Invalid job id" in done.stderr else (
                (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[0])
        except (OSError, subprocess.TimeoutExpired) as exc:
            done, error = None, str(exc)
        if error is None:
            if not done.stdout.strip():
                return
            failures = 0
        else:
            failures += 1
            if failures >= SQUEUE_TRIES:
                raise SlurmUnreachable(f"squeue failed {failures} times in a row, {poll_s:g} s apart (last: "
                                       f"{error.removeprefix('squeue: ')})")
        time.sleep(poll_s)


def slurm_task_id() -> str | None:
    """The id `scontrol requeue` takes for this job or array task (123_4 for task 4 of array 123)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_cancelled(job: str, fields: dict[str, str] | None = None) -> bool:
    """True when Slurm is ending `job` for another reason than its time limit: `scancel` (scontrol shows the job
    COMPLETING, reason None, while its processes get SIGTERM). `scontrol requeue` takes back even a cancelled job, so
    a worker that requeued itself on scancel's SIGTERM undid the cancel (Slurm 22.05: the task ran again and trained
    its cell to the end). At its time limit a job is COMPLETING too, with reason TimeLimit: requeued, as is a job
    still RUNNING (the --signal warning, `scancel --signal`), and a job being preempted (PreemptTime set: Slurm's
    PreemptMode=CANCEL ends it as scancel does, and the task is to run again). False when scontrol does not answer:
    requeued, as before. Seen on Slurm 22.05 (tests/launch/test_slurm.py): a suspension (gang scheduling, scontrol
    suspend) leaves PreemptTime None, so a later scancel is still a cancel; PreemptMode=REQUEUE shows no PreemptTime
    and reads as a cancel, but Slurm requeues that job itself; a node set down shows a --requeue job PENDING
    (requeued by Slurm) and another NODE_FAIL: neither is a cancel (docs/cluster.md). A job Slurm requeued is told
    apart before this (already_requeued). `fields`: job_fields(job), where read already."""
    fields = job_fields(job) if fields is None else fields
    return (fields.get("JobState") in ("COMPLETING", "CANCELLED") and fields.get("Reason") != "TimeLimit"
            and fields.get("PreemptTime", "None") in ("None", "Unknown"))


def job_fields(job: str) -> dict[str, str]:
    """What `scontrol show job -o` says of `job`, field by field; {} when scontrol does not answer."""
    try:
        done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields: dict[str, str] = {}
    for word in done.stdout.split() if done.returncode == 0 else ():
        name, _, value = word.partition("=")
        fields.setdefault(name, value)   # the job's own fields come first, before paths that may hold a '='
    return fields


# states of a job Slurm has put back in the queue itself
REQUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED")


def already_requeued(fields: dict[str, str]) -> bool:
    """Slurm requeued the job since this worker started (a node set down under --requeue, PreemptMode=REQUEUE): it
    is back in the queue (Slurm 22.05 shows it COMPLETING while its processes end, then PENDING), and its restart
    count is past this incarnation's ($SLURM_RESTART_COUNT, unset before the first requeue). `scontrol requeue`
    then fails ("Job is pending execution")."""
    try:
        restarts, mine = int(fields.get("Restarts", "0")), int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return False
    return fields.get("JobState") in REQUEUED_STATES or restarts > mine


ENV_SLURM_REQUEUE = "HARNESS_SLURM_REQUEUE"   # "1": the templates' workers requeue their own task when stopped


def requeue_slurm_task() -> bool:
    """After a stop signal, rank 0 of a worker asks Slurm to put its own job (array task) back in the queue, as
    submitit does from its handler: Slurm itself does not requeue a job that ends at its time limit. Only when
    HARNESS_SLURM_REQUEUE=1 (the sbatch templates set it) inside a Slurm job submitted with --requeue.
    scontrol then ends this job's processes: called last, after the checkpoint and the release of the claim."""
    job = slurm_task_id()
    if not job or os.environ.get(ENV_SLURM_REQUEUE) != "1":
        return False
    fields = job_fields(job)
    if already_requeued(fields):
        print(f"harness: Slurm job {job} is already back in the queue ({fields.get('JobState')}, restart "
              f"{fields.get('Restarts', '?')}): not requeued again", file=sys.stderr, flush=True)
        return True
    if slurm_cancelled(job, fields):
        print(f"harness: Slurm job {job} was cancelled (scancel): not requeued; submitting the suite again resumes "
              f"its cells", file=sys.stderr, flush=True)
        return False
    print(f"harness: requeueing Slurm job {job} (scontrol requeue)", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"warning: scontrol requeue {job} failed: {exc}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        print(f"warning: scontrol requeue {job} failed: {done.stderr.strip()}", file=sys.stderr, flush=True)
        return False
    return True


if __name__ == "__main__":   # the scripts' store check: python -m harness.launch.slurm same-store URL
    if len(sys.argv) != 3 or sys.argv[1] != "same-store":
        sys.exit("usage: python -m harness.launch.slurm same-store URL")
    why = other_store(os.environ.get("HARNESS_DB", ""), sys.argv[2])
    if why:
        print(f"error: {why}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INPUT)
