"""Exports for papers: LaTeX structure and escaping, CSV formula injection, Markdown alignment."""

import csv
import io
import re
import shutil
import subprocess

import pandas as pd
import pytest

from tests.helpers import assert_refused, fixture_store, run_cli
from harness.report.export import latex_escape, neutralise_formula, to_csv, to_latex, to_markdown
from harness.report.tables import best_table, leaderboard_table, runs_frame
from harness.store.db import Store


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    return fixture_store.build(tmp_path_factory.mktemp("export") / "h.db")


def test_latex_is_a_booktabs_table_with_best_in_bold(url):
    board = leaderboard_table(best_table(runs_frame(Store(url, read_only=True))))
    tex = to_latex("leaderboard", board, caption="GLUE dev, 50% of_runs & more")
    lines = tex.splitlines()
    assert lines[1] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert r"\begin{tabular}{lrrrrr}" in lines
    header = lines[lines.index(r"\toprule") + 1]
    assert header == r"method & mrpc & rte & GLUE avg & \% trained & params (all tasks) \\"
    full = next(l for l in lines if l.startswith("full &"))
    # the fixture's dev curves rise by 5 points at their last evaluation: still improving (double dagger)
    assert r"\textbf{72.0 $\pm$ 2.0 $^\ddagger$}" in full and r"\textbf{79.0}" in full
    houlsby = next(l for l in lines if l.startswith("houlsby"))
    assert "71.5 $\\pm$ 0.5" in houlsby and r"\textbf{71.5" not in houlsby
    assert r"\caption{GLUE dev, 50\% of\_runs \& more}" in tex
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert all(l.count("&") == 5 and l.endswith(r"\\") for l in body)


def test_latex_escapes_every_special_character():
    assert latex_escape(r"a_b & 5% $x$ #1 {y} ~ ^ \z") == (r"a\_b \& 5\% \$x\$ \#1 \{y\} \textasciitilde{} "
                                                           r"\textasciicircum{} \textbackslash{}z")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles(url, tmp_path):
    board = leaderboard_table(best_table(runs_frame(Store(url, read_only=True))))
    doc = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage[utf8]{inputenc}\\begin{document}\n"
           + to_latex("leaderboard", board) + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0, proc.stdout[-2000:]


SPECIALS = "_%&#$~^\\{}|<>"   # LaTeX's specials, and what its default font encoding misprints (| < >)


def store_with_special_names(folder) -> str:
    """The fixture store with a model, task and method names holding every LaTeX special: a suite's model may be
    any local folder, a method label holds its parameters (pretrained_adapter's path: any text), and a task
    is named by its entry's file (or by a store from elsewhere)."""
    from sqlalchemy import text

    url = fixture_store.build(folder / "h.db")
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET model = :m, task = task || :t, method_label = method_label || :l"),
                     {"m": f"/models/m {SPECIALS}", "t": f"_t{SPECIALS}", "l": f"(path=a {SPECIALS})"})
    store.engine.dispose()
    return url


def store_with_names(folder, name: str, columns=("model", "method_label")) -> Store:
    """The fixture store, read-only, with `name` appended to each of `columns` of every run (the names a user's
    models and methods may carry)."""
    from sqlalchemy import text

    url = fixture_store.build(folder / "h.db")
    store = Store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET " + ", ".join(f"{c} = {c} || :n" for c in columns)), {"n": name})
    store.engine.dispose()
    return Store(url, read_only=True)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_every_latex_table_compiles_with_every_special_character_in_its_names(tmp_path):
    from harness.report.export import export

    url = store_with_special_names(tmp_path)
    store = Store(url, read_only=True)
    tables = {kind: export(store, "latex", kind, "fx") for kind in ("runs", "leaderboard", "best", "ablation")}
    store.engine.dispose()
    for kind, tex in tables.items():
        assert "\\textbar{}" in tex and "\\textless{}" in tex and "|" not in tex.replace("\\textbar{}", ""), kind
    doc = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage[utf8]{inputenc}\\begin{document}\n"
           + "\n".join(tables.values()) + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log, log[-3000:]


def test_a_pipe_or_backslash_in_a_name_keeps_every_markdown_row_s_cells(tmp_path):
    """Every row of every Markdown table has the header's number of cells when its names hold `|` and `\\`, as
    Python-Markdown's tables (a pipe after a backslash is escaped) read it, and the names come back whole."""
    import html as html_lib

    from harness.report.export import export

    markdown = pytest.importorskip("markdown")
    url = store_with_special_names(tmp_path)
    store = Store(url, read_only=True)
    for kind in ("runs", "leaderboard", "best", "ablation"):
        md = export(store, "markdown", kind, "fx")
        html = markdown.markdown(md, extensions=["tables"])
        rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
        widths = {len(re.findall(r"<t[hd][ >]", r)) for r in rows}
        assert len(rows) > 2 and len(widths) == 1, (kind, widths, md)
        assert f"/models/m {SPECIALS}" in html_lib.unescape(html), kind   # (`<`, `&`, `~`, `$` as entities)
    store.engine.dispose()


def test_html_or_markdown_in_a_name_is_shown_as_text_in_every_markdown_table(tmp_path):
    """A variant named `<b>x</b>` rendered bold on GitHub, one with `<script>` as a script element (raw HTML passed
    through), `*y*` in italics: names are text, in the cells, the caption and the footnote."""
    from harness.report.export import export

    markdown = pytest.importorskip("markdown")
    name = " <b>x</b><script>alert(1)</script> *y* [z](u) `c`"
    store = store_with_names(tmp_path, name)
    for kind in ("runs", "leaderboard", "best", "ablation"):
        html = markdown.markdown(export(store, "markdown", kind, "fx"), extensions=["tables"])
        assert not re.search(r"<(b|script|em|a|code)[ >]", html), (kind, html)
        assert "&lt;b&gt;x&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt; *y* [z](u) `c`" in html, (kind, html)
    store.engine.dispose()


def test_csv_neutralises_formulas_but_round_trips_numbers():
    frame = pd.DataFrame({"method": ["=HYPERLINK(\"x\")", "+1+1", "@SUM(A1)", "-cmd", "full", "-3.5"],
                          "score": [1.5, -2.25, 3.0, 4.0, 5.0, 6.0]})
    text = to_csv(frame)
    back = pd.read_csv(io.StringIO(text), dtype={"method": str})
    assert list(back["method"]) == ["'=HYPERLINK(\"x\")", "'+1+1", "'@SUM(A1)", "'-cmd", "full", "-3.5"]
    assert list(back["score"]) == [1.5, -2.25, 3.0, 4.0, 5.0, 6.0]  # numbers, negative ones too, round-trip
    for row in csv.reader(io.StringIO(text)):
        assert not row[0].startswith(("=", "+", "@")) and not (row[0].startswith("-") and row[0] != "-3.5")
    assert neutralise_formula(-2.0) == -2.0


def test_markdown_columns_are_aligned(url):
    board = leaderboard_table(best_table(runs_frame(Store(url, read_only=True))))
    md = [l for l in to_markdown("leaderboard", board).splitlines() if l.startswith("|")]   # the footnote follows
    assert len(md) == 4 and len({len(l) for l in md}) == 1  # every row padded to the same width
    rule = [c.strip() for c in md[1].strip("|").split("|")]
    assert rule[0].startswith(":") and all(c.endswith(":") and not c.startswith(":") for c in rule[1:])
    assert "**72.0 ± 2.0 ‡**" in md[2] and md[0].startswith("| method ")


def test_cli_exports_every_table_and_format(url, tmp_path):
    for table in ("runs", "leaderboard", "best"):
        for fmt in ("csv", "latex", "markdown"):
            out = tmp_path / f"{table}.{fmt}"
            proc = run_cli("export", "--db", url, "--table", table, "--format", fmt, "--suite", "fx", "-o", out)
            assert proc.returncode == 0, proc.stderr
            assert out.stat().st_size > 100
    best = list(csv.DictReader(open(tmp_path / "best.csv")))
    assert len(best) == 4
    row = next(r for r in best if r["task"] == "rte" and r["method"] == "full")
    assert float(row["mean"]) == 72.0 and float(row["std"]) == 2.0 and row["n_seeds"] == "3"
    assert float(row["learning_rate"]) == 2e-5
    runs = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert len(runs) == 24 and {r["env_torch"] for r in runs if r["status"] == "completed"} == {"2.13.0"}
    proc = run_cli("export", "--db", url, "--suite", "nope", "--table", "leaderboard", "--format", "markdown")
    assert_refused(proc, "--suite: the store has no runs of suite 'nope' (it has: fx)")   # not an empty table


def test_squad_shows_em_and_f1_beside_glue_and_the_glue_average_stays_glue_only(tmp_path):
    """A store with rte and squad runs (written through the store API): the leaderboard has squad EM and F1
    columns, the average is over rte only and says so, and every format carries both."""
    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from harness.train.result import RunResult
    from harness.store.schema import RUN_COLUMNS

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    suite = parse_suite("name: mix\nmodels: [minilm]\ntasks: [rte, squad]\nmethods: [full, bitfit]\n", "mix.yaml")
    scores = {("rte", "full"): ({"accuracy": 70.0}, 70.0), ("rte", "bitfit"): ({"accuracy": 66.0}, 66.0),
              ("squad", "full"): ({"exact": 60.0, "f1": 71.0}, 71.0),
              ("squad", "bitfit"): ({"exact": 50.0, "f1": 62.5}, 62.5)}
    for cell in suite.cells():
        metrics, score = scores[(cell.task, cell.method)]
        rid = store.start(cell, cell.config(), "cmd", None)
        result = RunResult(score=score, metrics=metrics, best_score=score, best_metrics=metrics, total_params=100,
                           trainable_params=100 if cell.method == "full" else 1, added_params=0,
                           trainable_pct=100.0 if cell.method == "full" else 1.0, train_time_s=1.0)
        store.finish(rid, Status.COMPLETED, result.columns(RUN_COLUMNS))
    assert {c.hparams["max_length"] for c in suite.cells() if c.task == "squad"} == {384}   # QA's default
    assert {c.hparams["max_length"] for c in suite.cells() if c.task == "rte"} == {128}
    board = leaderboard_table(best_table(runs_frame(store)))
    assert board.attrs["avg_tasks"] == ["rte"] and board.attrs["avg_name"] == "GLUE avg (rte)"
    md = to_markdown("leaderboard", board)
    header = md.splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == ["method", "rte", "squad EM", "squad F1",
                                                                  "GLUE avg (rte)", "% trained", "params (all tasks)"]
    full = next(l for l in md.splitlines() if l.startswith("| full"))
    # EM is shown beside F1, SQuAD's main score: bold and the marks are F1's (an EM below another variant's F1-best
    # row's EM would otherwise be bold for a test it never had)
    assert " 60.0 |" in full and "**60.0**" not in full and "**71.0**" in full
    assert "**70.0**" in full.split("|")[5]   # avg = rte alone
    assert "EM (exact match) is shown beside F1, the main score" in md
    tex = to_latex("leaderboard", board)
    assert r"squad EM & squad F1 & GLUE avg (rte)" in tex
    csv_text = to_csv(board)
    assert "squad_em_mean" in csv_text.splitlines()[0] and "squad_mean" in csv_text.splitlines()[0]
    runs = runs_frame(store)
    assert set(runs.loc[runs["task"] == "squad", "metric_exact"]) == {60.0, 50.0}
    proc = run_cli("export", "--db", url, "--table", "leaderboard", "--format", "markdown")
    assert proc.returncode == 0 and "squad F1" in proc.stdout and "GLUE avg (rte)" in proc.stdout


def test_tables_carry_the_notes_of_the_tasks_they_show():
    """A task entry's note (squad: the offline split is not the official one) goes under every table showing it,
    once per task; tasks without a note, and tasks this install does not declare (a store from elsewhere), add
    nothing."""
    from harness.report.export import task_notes
    from harness.spec.tasks import get_task

    best = pd.DataFrame({"task": ["squad", "sst2", "squad", "no_such_task"]})
    assert task_notes("best", best) == [f"squad: {get_task('squad').note}."]
    board = pd.DataFrame({"method": ["full"]})
    board.attrs["tasks"] = ["sst2", "squad_v2_synth"]
    (line,) = task_notes("leaderboard", board)
    assert line.startswith("squad_v2_synth: synthetic v2")


def test_json_export_keeps_every_number_exactly_as_the_csv_does(tmp_path):
    """pandas' to_json rounds to 10 significant digits (1.2345678901234567e18 FLOPs became 1.23456789e+18):
    the JSON export gives every number back exactly, like the CSV; NaN stays null."""
    import json

    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from tests.helpers import call_cli

    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    cell = parse_suite("name: ex\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "ex.yaml").cells()[0]
    claim = store.start(cell, cell.config(), "cmd", None)
    exact = {"score": 0.1 + 0.2, "train_flops": 1.2345678901234567e18, "trainable_pct": 1.234567890123e-7,
             "train_time_s": 12345.678901234567}
    store.finish(claim, Status.COMPLETED, {**exact, "metrics": {"accuracy": 1 / 3}})

    (row,) = json.loads(call_cli("export", "--table", "runs", "--format", "json", "--db", url).stdout)["rows"]
    (csv_row,) = csv.DictReader(io.StringIO(call_cli("export", "--table", "runs", "--format", "csv",
                                                     "--db", url).stdout))
    for name, value in {**exact, "metric_accuracy": 1 / 3}.items():
        assert row[name] == value and float(csv_row[name]) == value, (name, row[name], csv_row[name])
    assert row["mfu"] is None and row["learning_rate"] == cell.hparams["learning_rate"]


def test_exports_keep_the_stored_times_to_the_microsecond_in_utc(tmp_path, db_url):
    """A store keeps its times to the microsecond (PostgreSQL's clock, an ingested record's): the JSON export gives
    them back as the CSV and record.json do, where pandas' to_json cut them to milliseconds (10:00:00.123456 came
    out as 10:00:00.123)."""
    import datetime as dt
    import json

    from harness.plan.suite import parse_suite
    from harness.spec.status import Status
    from tests.helpers import call_cli

    store = Store(db_url)
    cell = parse_suite("name: ex\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "ex.yaml").cells()[0]
    claim = store.start(cell, cell.config(), "cmd", None)
    started = dt.datetime(2026, 1, 2, 3, 4, 5, 123456)
    store.finish(claim, Status.COMPLETED, {"score": 70.0, "started_at": started})
    finished = store.get(claim.id).finished_at
    store.engine.dispose()

    (row,) = json.loads(call_cli("export", "--table", "runs", "--format", "json", "--db", db_url).stdout)["rows"]
    (csv_row,) = csv.DictReader(io.StringIO(call_cli("export", "--table", "runs", "--format", "csv",
                                                     "--db", db_url).stdout))
    # and they say they are UTC (the store's clock), for a reader in another time zone: they were naive
    utc = dt.timezone.utc
    assert (dt.datetime.fromisoformat(row["started_at"]) == started.replace(tzinfo=utc)
            == dt.datetime.fromisoformat(csv_row["started_at"]))
    assert dt.datetime.fromisoformat(row["finished_at"]) == finished.replace(tzinfo=utc)


def test_the_runs_table_keeps_whole_numbers_whole_beside_a_failed_run(tmp_path):
    """A failed run has no parameter counts: pandas made the whole column float and the runs CSV read
    "100.0" trainable parameters, the JSON 100.0; the store's integer columns stay integers in both."""
    import json

    from tests.report.test_table_claims import store_of

    url = store_of(tmp_path, ["name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full, bitfit]\n"],
                   lambda c: 70.0 if c.method == "full" else None)
    text = run_cli("export", "--db", url, "--table", "runs", "--format", "csv").stdout
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (rows["full"]["trainable_params"], rows["full"]["total_params"], rows["full"]["seed"]) == ("100", "1000", "1")
    assert rows["bitfit"]["trainable_params"] == "" and rows["full"]["score"] == "70.0"
    rows = {r["method"]: r for r in json.loads(run_cli("export", "--db", url, "--table", "runs", "--format",
                                                       "json").stdout)["rows"]}
    assert type(rows["full"]["trainable_params"]) is int and rows["bitfit"]["trainable_params"] is None


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_the_commands_a_latex_footnote_names_print_as_typed(tmp_path):
    """LaTeX sets "--" as an en dash and a backtick as an opening quote: the footnote's `harness status --all` and
    `harness export --table best` printed as ‘harness status –all‘ (T1 ligature ^^U), a command that fails when
    typed from the PDF, and so did a name holding "--" (a model folder's). Their text in the typeset box: hyphens."""
    from tests.report.test_table_claims import export, store_of

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1, 2]\n"
            "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    tex = export(url, "leaderboard", "latex")
    assert "harness status" in tex and "harness export" in tex, tex   # the footnote lines that name a command
    assert "--" not in tex and "`" not in tex, tex
    (note,) = [line for line in tex.splitlines() if line.startswith("\\par\\smallskip\\footnotesize ")]
    doc = ("\\documentclass{article}\\usepackage[T1]{fontenc}\\begin{document}\n\\showboxdepth=100 "
           "\\showboxbreadth=100000\n\\setbox0\\vbox{\\hsize=100cm " + note + "}\\showbox0\n\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    box = (tmp_path / "t.log").read_text(errors="replace").split("> \\box0=", 1)[1]
    assert "(ligature --" not in box and box.count("\\T1/cmr/") > 500, box[-2000:]   # (the box typeset the note)


def test_json_writes_every_count_the_csv_writes_whole_as_a_whole_number(tmp_path):
    """bitfit's mrpc runs failed: the leaderboard's JSON gave full's mrpc seeds and settings, its average's seeds and
    bitfit's failed settings as 2.0, 2.0, 4.0 and 1.0, where its CSV writes 2, 2, 4, 1; both gave the best table's
    parameter counts as 100.0. Every cell the CSV writes as a whole number is a JSON int."""
    import json

    from tests.report.test_table_claims import export, store_of

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1, 2]\n"
            "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    for kind in ("leaderboard", "best"):
        rows = json.loads(export(url, kind, "json"))["rows"]
        cells = list(csv.DictReader(io.StringIO(export(url, kind, "csv"))))
        assert len(rows) == len(cells)
        for row, cell in zip(rows, cells):
            for name, value in row.items():
                counts = ("_n", "_settings", "_failed_settings", "seeds_planned", "_params", "n_seeds")
                assert not (isinstance(value, float) and value.is_integer() and name.endswith(counts)), (kind, name)
                if re.fullmatch(r"-?\d+", cell[name]):
                    assert type(value) is int and value == int(cell[name]), (kind, name, value, cell[name])
                assert not re.fullmatch(r"-?\d+\.0", cell[name]) or not name.endswith(("_n", "_params")), (kind, name)
    (full,) = [r for r in json.loads(export(url, "leaderboard", "json"))["rows"] if r["method"] == "full"]
    assert (full["mrpc_n"], full["mrpc_settings"], full["avg_n"]) == (2, 2, 4)
    (best,) = [r for r in json.loads(export(url, "best", "json"))["rows"]
               if (r["task"], r["method"]) == ("rte", "full")]
    assert (best["trainable_params"], best["total_params"]) == (100, 1000)


def test_a_csv_s_notes_go_beside_it_or_to_standard_error_and_pandas_still_reads_it(tmp_path):
    """The CSV had no place for the footnote Markdown prints and JSON carries (budgets differ, a failed cell, the
    average refused): a reader of the CSV lost them. With -o they are in FILE.notes.txt beside it, without it on
    standard error; the CSV itself stays what pandas.read_csv reads; a later export without notes removes the file."""
    import json

    from tests.report.test_table_claims import store_of

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1, 2]\n"
            "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0 + c.seed)
    notes = json.loads(run_cli("export", "--db", url, "--table", "leaderboard", "--format", "json").stdout)["footnote"]
    assert any(line.startswith("Tuning budgets differ on rte") for line in notes), notes
    out = tmp_path / "lb.csv"
    proc = run_cli("export", "--db", url, "--table", "leaderboard", "-o", out)
    assert proc.returncode == 0 and proc.stderr == f"wrote {out} and its notes {tmp_path / 'lb.notes.txt'}\n"
    assert (tmp_path / "lb.notes.txt").read_text().splitlines()[1:] == notes
    assert list(pd.read_csv(out)["method"]) == ["full", "bitfit"]
    proc = run_cli("export", "--db", url, "--table", "leaderboard")
    assert list(pd.read_csv(io.StringIO(proc.stdout))["method"]) == ["full", "bitfit"]
    assert proc.stderr.splitlines()[1:] == notes, proc.stderr
    proc = run_cli("export", "--db", url, "--table", "runs", "-o", out)   # no squad: no notes; not the old ones
    assert proc.returncode == 0 and not (tmp_path / "lb.notes.txt").exists() and proc.stderr == f"wrote {out}\n"
    (tmp_path / "lb.notes.txt").mkdir()
    assert_refused(run_cli("export", "--db", url, "--table", "leaderboard", "-o", out), "lb.notes.txt is a folder")


def test_a_csv_export_never_replaces_or_removes_a_notes_file_it_did_not_write(tmp_path):
    """-o lb.csv overwrote a hand-written lb.notes.txt with the table's notes, and removed it where the table had none.
    An export's notes file starts with NOTES_MARK's line; any other file there is refused before anything is written."""
    from harness.report.export import NOTES_MARK
    from tests.helpers import call_cli
    from tests.report.test_table_claims import store_of

    text = ("name: s\nmodels: [minilm]\ntasks: [rte, mrpc]\nseeds: [1]\n"
            "methods: [{name: full, learning_rate: [1e-5, 2e-5]}, bitfit]\n")
    url = store_of(tmp_path, [text], lambda c: None if (c.method, c.task) == ("bitfit", "mrpc") else 60.0)
    out, mine = tmp_path / "lb.csv", tmp_path / "lb.notes.txt"
    mine.write_text("my own notes on lb.csv\n")
    for table in ("leaderboard", "runs"):   # notes to write; none (the file would be removed)
        assert_refused(call_cli("export", "--db", url, "--table", table, "-o", out), f"{mine} exists and is not")
        assert mine.read_text() == "my own notes on lb.csv\n" and not out.exists()
    mine.unlink()
    assert call_cli("export", "--db", url, "--table", "leaderboard", "-o", out).returncode == 0
    assert mine.read_text().startswith(f"{NOTES_MARK}lb.csv ") and len(mine.read_text().splitlines()) > 2
    # the notes file of a release before the first line: refused as well, and the line says what to do with it
    earlier = "".join(mine.read_text().splitlines(keepends=True)[1:])
    mine.write_text(earlier)
    out.unlink()
    assert_refused(call_cli("export", "--db", url, "--table", "leaderboard", "-o", out),
                   "notes an earlier release's export wrote lack that line: delete them")
    assert mine.read_text() == earlier and not out.exists()
    mine.unlink()
    assert call_cli("export", "--db", url, "--table", "leaderboard", "-o", out).returncode == 0
    assert call_cli("export", "--db", url, "--table", "runs", "-o", out).returncode == 0 and not mine.exists()


def test_underscores_tildes_and_dollars_in_a_name_are_text_in_every_markdown_table(tmp_path):
    """A variant named `_x_` was in italics (GitHub, Pandoc, Python-Markdown), `~~y~~` struck through and `$z$` math on
    GitHub: they print as typed, in the cells, the caption and the footnote; the numbers, the marks and the
    footnote's commands stay as they were (a snake_case name too: no reader takes its `_` for emphasis)."""
    import html as html_lib

    from harness.report.export import export

    markdown = pytest.importorskip("markdown")
    name = " _x_ ~~y~~ $z$ snake_case"
    store = store_with_names(tmp_path, name)
    for kind in ("runs", "leaderboard", "best", "ablation"):
        md = export(store, "markdown", kind, "fx")
        assert "~" not in md and "$" not in md and "snake_case" in md, (kind, md)
        html = markdown.markdown(md, extensions=["tables"])
        assert not re.search(r"<(em|del|s)[ >]", html), (kind, html)   # (bold, <strong>, is the tables' own)
        assert html_lib.unescape(html).count(name) >= 2, (kind, html)   # the model's and the method's
    md = export(store, "markdown", "leaderboard", "fx")
    assert "**72.0 ± 2.0 ‡**" in md
    store.engine.dispose()


def test_a_reader_that_goes_away_ends_every_export_quietly(url):
    """`harness export ... | head -1`: without -o every format stopped quietly (141, as README says); with -o
    /dev/stdout the closed pipe was refused as bad input: exit 2, "error: -o: cannot write /dev/stdout: Broken
    pipe". Both stop without a word on stderr (a CSV's notes neither), 141; one code path writes every format."""
    import os
    import sys

    from tests.helpers import ROOT

    for fmt, more in (("csv", []), ("csv", ["-o", "/dev/stdout"]), ("latex", ["-o", "/dev/stdout"])):
        read_end, write_end = os.pipe()
        os.close(read_end)   # gone before the first byte: every write to the pipe fails (EPIPE)
        try:
            proc = subprocess.run([sys.executable, "-m", "harness", "export", "--db", url, "--table", "leaderboard",
                                   "--format", fmt, *more], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                  timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        finally:
            os.close(write_end)
        assert (proc.returncode, proc.stderr) == (141, ""), (fmt, more, proc.stderr)


def test_a_name_that_no_markdown_reads_as_a_link_or_an_emoji_is_exported_byte_for_byte(tmp_path):
    """md_escape puts an invisible WORD JOINER (U+2060) where Streamlit or GitHub would make a name's text a link or
    an emoji (56b8a09). It put one after every `@`, every `://` and every `www`, markup or not: `lora@r8`,
    `s3://bucket`, `postgresql://host/db` and `awww.x` were exported with it (invisible, but a grep or a paste of
    the name found nothing). Only GFM's autolinks (an e-mail address, an @mention, http(s)/ftp://, a www. that
    starts a word) and the shortcodes get one; every other name is exported as typed."""
    from harness.report.export import WORD_JOINER, export, md_escape

    name = " lora@r8 s3://bucket/x postgresql://host/db awww.x ratio 3:1 sha256:ab12"
    store = store_with_names(tmp_path, name, columns=("method_label",))
    for kind in ("runs", "leaderboard", "best"):
        md = export(store, "markdown", kind, "fx")
        assert WORD_JOINER not in md and name in md, (kind, md)
    store.engine.dispose()
    for markup in ("a@b.org", "see @someone", "http://e.org", "HTTPS://e.org", "ftp://e.org", "www.e.org",
                   "(www.e.org)", ":smile:", ":red[x]", ":material/home:"):
        assert WORD_JOINER in md_escape(markup), markup
