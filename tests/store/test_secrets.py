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
    assert f"sha256:{hashlib.sha256(suite.read_bytes()).hexdigest()}" in command
    monkeypatch.setenv("HARNESS_DB", URL)   # the default store, from the environment: redacted the same way
    assert SECRET not in reproduce_command("my suite.yaml", 1) and "--db" in reproduce_command("my suite.yaml", 1)


def test_a_malformed_url_in_an_error_is_redacted():
    from harness.spec.errors import InputError
    from harness.store.engine import make_engine

    with pytest.raises(InputError) as info:
        make_engine(f"postgresql://alice:{SECRET}@host:notaport/db")
    assert SECRET not in str(info.value)
