"""No store password is kept or shown: the one redaction (harness.store.redact) in the environment every record
carries, its record.json, the reproduce command and error messages."""

from __future__ import annotations

import json
import sys

import pytest

SECRET = "s3cr3t-pw"
URL = f"postgresql+psycopg://alice:{SECRET}@db.example:5432/harness"


@pytest.mark.parametrize("text", [URL, f"error: cannot reach {URL} (timeout)", "mysql://:x%40y@h/d",
                                  f"postgresql://alice@h/d?password={SECRET}"])
def test_redact_text_hides_every_url_password(text):
    from harness.store.redact import redact_text, redact_url

    for shown in (redact_text(text), redact_url(text)):
        assert SECRET not in shown and "x%40y" not in shown and "***" in shown, shown


@pytest.mark.parametrize("password", ["pa ss", "pa'ss", 'pa"ss', "p 'a\" s"])
def test_redact_text_hides_a_password_with_spaces_or_quotes(password):
    """SQLAlchemy reads a URL's password up to its "@", spaces and quotes included: so does the redaction."""
    from harness.store.redact import redact_text

    text = f"error: cannot reach postgresql://alice:{password}@db.example/harness (timeout)"
    assert redact_text(text) == "error: cannot reach postgresql://alice:***@db.example/harness (timeout)"


@pytest.mark.parametrize("text", ["harness.run s.yaml --db postgresql://h:5432/db --output-dir /home/j@corp/out",
                                  "API request to http://mlflow.lab:5000/api failed (as alice@corp)",
                                  "http://h:5000/x\nmail alice@corp"])
def test_redact_text_keeps_a_url_without_password_before_an_unrelated_at(text):
    """A port is not a password: the text after it up to a later "@" (a path, a mail address) stays."""
    from harness.store.redact import redact_text

    assert redact_text(text) == text


def test_redact_argv_hides_db_values_in_both_forms():
    from harness.store.redact import redact_argv

    argv = ["harness", "run", "s.yaml", "--db", URL, f"--db={URL}", "--output-dir", "out"]
    shown = redact_argv(argv)
    assert SECRET not in json.dumps(shown)
    assert shown[:4] == argv[:4] and shown[-2:] == ["--output-dir", "out"]
    assert shown[4] == "postgresql+psycopg://alice:***@db.example:5432/harness"
    assert redact_argv(["x", "--db", "sqlite:////a/b.db"]) == ["x", "--db", "sqlite:////a/b.db"]


def test_environment_of_a_record_has_no_password(monkeypatch):
    from harness.store.env import environment

    monkeypatch.setattr(sys, "argv", ["/x/harness/run.py", "s.yaml", "--db", URL, f"--db={URL}"])
    env = environment()
    assert SECRET not in json.dumps(env) and "--db" in env["argv"]


def test_reproduce_command_names_store_output_folder_and_suite(tmp_path, monkeypatch):
    import hashlib
    import shlex

    from harness.launch.runner import reproduce_command

    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "my suite.yaml"
    suite.write_text("name: s\n")
    command = reproduce_command("my suite.yaml", 2, URL, "out")
    assert SECRET not in command
    words = shlex.split(command, comments=True)
    assert words[words.index("harness.run") + 1] == str(suite)
    assert words[words.index("--db") + 1] == "postgresql+psycopg://alice:***@db.example:5432/harness"
    assert words[words.index("--output-dir") + 1] == str(tmp_path / "out")
    assert "--num_processes" in words and "--retry-failed" in words
    assert "--data-dir" not in words and "--cache-dir" not in words   # not given: the suite's or the default
    command = reproduce_command("my suite.yaml", 1, URL, "out", data_dir="glue", cache_dir="c")
    words = shlex.split(command, comments=True)
    assert words[words.index("--data-dir") + 1] == str(tmp_path / "glue")   # the data it read, wherever it runs from
    assert words[words.index("--cache-dir") + 1] == str(tmp_path / "c")
    assert f"sha256:{hashlib.sha256(suite.read_bytes()).hexdigest()}" in command
    monkeypatch.setenv("HARNESS_DB", URL)   # the default store, from the environment: redacted the same way
    assert SECRET not in reproduce_command("my suite.yaml", 1) and "--db" in reproduce_command("my suite.yaml", 1)


def test_a_malformed_url_in_an_error_is_redacted():
    from harness.spec.errors import InputError
    from harness.store.engine import make_engine

    with pytest.raises(InputError) as info:
        make_engine(f"postgresql://alice:{SECRET}@host:notaport/db")
    assert SECRET not in str(info.value)


SUITE = "name: sec\nmodels: [minilm]\ntasks: [rte, mrpc]\nmethods: [full]\n"


def _raw(url: str) -> str:
    """Every run and analysis row as the database holds it (no column type in between)."""
    import sqlalchemy as sa

    from harness.store.db import Store

    with Store(url).engine.connect() as conn:
        rows = [conn.execute(sa.text(f"select * from {t}")).all() for t in ("runs", "analyses")]
    return repr(rows)


def test_the_store_keeps_no_password_in_error_command_or_env(tmp_path, db_url):
    """What a queue, a finish and an ingest write (the error, the command, the environment's argv) is redacted at
    the store's boundary, record.json (written from the finished row) included, whoever called it."""
    from harness import atomic
    from harness.plan.suite import parse_suite
    from harness.spec.layout import RECORD
    from harness.store.db import Store
    from tests.helpers import call_cli

    first, second = parse_suite(SUITE, "sec.yaml").cells()
    store = Store(db_url)
    command = f"harness run sec.yaml --db {URL}"
    store.enqueue([first, second], command)
    claim = store.start(first, first.config(), command, None)
    record = tmp_path / "out" / RECORD
    record.parent.mkdir()
    store.finish(claim, "failed", {"error": f"OperationalError: cannot reach {URL}\nTraceback ...",
                                   "env": {"argv": ["harness/run.py", "--db", URL], "note": f"via {URL}"}},
                 before_commit=lambda rec, kids: atomic.write_json(str(record), {**rec, "children": kids}))
    store.add_analysis(claim.id, "adapter_ablation", {"num_layers": 1, "baseline": 1.0, "spans": []})
    claim = store.start(second, second.config(), command, None)
    store.release(claim)
    assert SECRET not in record.read_text() and "alice:***@" in record.read_text()
    assert SECRET not in _raw(db_url) and "alice:***@" in _raw(db_url)

    # a record from elsewhere (another tool, an older harness) with the password in all three
    rec = json.loads(record.read_text())
    rec.update(cell_key=second.key, config=second.config(), task="mrpc", setting_key=second.setting_key,
               attempts=5, command=command, error=f"failed at {URL}", env={"argv": ["x", f"--db={URL}"]})
    record.write_text(json.dumps(rec))
    proc = call_cli("ingest", record, "--db", db_url)
    assert proc.returncode == 0 and "1 updated" in proc.stdout, proc.stdout + proc.stderr
    assert Store(db_url).by_key("sec")[second.key].attempts == 5   # the record went in
    assert SECRET not in _raw(db_url)


def test_no_reader_shows_a_password_of_a_row_written_before_redaction(tmp_path):
    """A store written before redaction (or by another tool) keeps the password in its rows: the exports (CSV,
    JSON), `harness status` (failures, --all, --json) and the store's own reads still never show it."""
    import sqlalchemy as sa

    from harness.plan.suite import parse_suite
    from harness.store.db import Store
    from tests.helpers import call_cli

    url = f"sqlite:///{tmp_path / 's.db'}"
    suite = tmp_path / "sec.yaml"
    suite.write_text(SUITE)
    cell = parse_suite(SUITE, str(suite)).cells()[0]
    store = Store(url)
    claim = store.start(cell, cell.config(), "cmd", None)
    store.finish(claim, "failed", {"error": "boom"})
    with store.engine.begin() as conn:   # as an earlier harness wrote it: no column type in between
        conn.execute(sa.text("update runs set error = :e, command = :c, env = :v"),
                     {"e": f"MlflowException: request to {URL} failed", "c": f"harness run --db {URL}",
                      "v": json.dumps({"argv": ["run.py", "--db", URL], "git_commit": f"x {URL}"})})
    assert SECRET in _raw(url)

    shown = [call_cli("export", "--table", "runs", "--format", fmt, "--db", url) for fmt in ("csv", "json")]
    shown += [call_cli("status", suite, "--db", url, *extra) for extra in ([], ["--all"], ["--json"])]
    for proc in shown:
        assert proc.returncode in (0, 1) and "request to" in proc.stdout, (proc.args, proc.stdout, proc.stderr)
        assert SECRET not in proc.stdout + proc.stderr, (proc.args, proc.stdout)
    (row,) = Store(url).records()
    assert SECRET not in repr(row.as_dict()) and "alice:***@" in row.error


def test_a_failed_cell_s_error_log_and_screen_line_hide_a_url_password(tmp_path, capsys):
    """The store hides a password in a run's error, but the traceback in the cell's error.log and the line on
    screen were written as the exception said them (a tracker's or a store's URL, password included)."""
    from harness.launch.attempt import ERROR_LOG
    from harness.launch.runner import report_failure
    from harness.plan.suite import parse_suite
    from harness.train.progress import Progress

    cell = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "s.yaml").cells()[0]
    try:
        raise ConnectionError("cannot reach postgresql://alice:hunter2@db.example/harness")
    except ConnectionError as e:
        text = report_failure(e, cell, str(tmp_path), 1.0, Progress(1, "x", enabled=True, bars=False), verbose=True,
                              rank=0)
    log = (tmp_path / ERROR_LOG).read_text()
    shown = capsys.readouterr()
    assert "ConnectionError" in log and "alice:***@db.example" in log
    for where in (log, text, shown.out, shown.err):
        assert "hunter2" not in where


@pytest.mark.parametrize("env", [[f"--db={URL}"], {"tracker": {"uri": URL}}, f"launched with {URL}"])
def test_an_env_of_another_shape_is_read_and_redacted(tmp_path, env):
    """The env column redacts on every read, and redaction took a dict: a row whose env another tool stored as a
    list or a text made every read of the column fail (the runs export, the board, estimate); a nested value kept
    its password."""
    import sqlalchemy as sa

    from harness.plan.suite import parse_suite
    from harness.store.db import Store
    from tests.helpers import call_cli

    url = f"sqlite:///{tmp_path / 's.db'}"
    cell = parse_suite(SUITE, str(tmp_path / "sec.yaml")).cells()[0]
    store = Store(url)
    store.finish(store.start(cell, cell.config(), "cmd", None), "completed", {"score": 70.0})
    with store.engine.begin() as conn:
        conn.execute(sa.text("update runs set env = :v"), {"v": json.dumps(env)})
    proc = call_cli("export", "--table", "runs", "--format", "csv", "--db", url)
    assert proc.returncode == 0, proc.stderr
    (row,) = Store(url).records()
    assert SECRET not in repr(row.env) and "alice:***@" in json.dumps(row.env)
