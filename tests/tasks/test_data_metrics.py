"""Reading the real GLUE files (quoting off, CoLA without header, MRPC's BOM) and the official metrics."""

import numpy as np
import pytest

from harness.tasks.data import load_task_data, read_glue_tsv
from harness.spec.errors import DataNotFoundError, InputError
from harness.tasks.metrics import compute_metrics
from harness.spec.tasks import TASKS, get_task


@pytest.mark.parametrize("task, train, dev", [
    ("cola", 8551, 1043), ("sst2", 67349, 872), ("mrpc", 3668, 408), ("stsb", 5749, 1500),
    ("rte", 2490, 277), ("wnli", 635, 71),
])
def test_real_glue_row_counts_match_the_manifest(glue_dir, task, train, dev):
    data = load_task_data(get_task(task), str(glue_dir))
    assert len(data["train"]) == train and len(data["validation"]) == dev
    for split in data.values():
        assert all(len(col) == len(split.labels) for col in split.columns.values())


def test_labels_follow_the_hub_ids(glue_dir):
    rte = load_task_data(get_task("rte"), str(glue_dir))["train"]
    assert set(rte.labels) == {0, 1} and rte.labels.count(0) == 1249  # 1249 entailment (MANIFEST)
    mrpc = load_task_data(get_task("mrpc"), str(glue_dir))["train"]
    assert mrpc.labels.count(1) == 2474 and mrpc.columns["sentence1"][0].startswith("Amrozi accused his brother")
    cola = load_task_data(get_task("cola"), str(glue_dir))["train"]
    assert cola.labels.count(1) == 6023 and cola.columns["sentence"][0].startswith("Our friends won't buy")
    stsb = load_task_data(get_task("stsb"), str(glue_dir))["validation"]
    assert isinstance(stsb.labels[0], float) and 0 <= min(stsb.labels) and max(stsb.labels) <= 5


def test_unbalanced_quotes_do_not_swallow_rows(tmp_path):
    (tmp_path / "MRPC").mkdir()
    (tmp_path / "MRPC" / "train.tsv").write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t1\t2\the said " the witness\tsame\n0\t3\t4\tsecond row\tother "\n1\t5\t6\tthird\trow\n')
    split = read_glue_tsv(get_task("mrpc"), str(tmp_path / "MRPC" / "train.tsv"))
    assert split.labels == [1, 0, 1] and split.columns["sentence1"][0] == 'he said " the witness'


def test_missing_local_task_says_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"MNLI/train.tsv not found; point the harness at local GLUE "
                                                r"files .* --data-dir DIR"):
        load_task_data(get_task("mnli"), str(tmp_path))
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_task_data(get_task("rte"), str(tmp_path / "nope"))


def test_hub_unreachable_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataNotFoundError) as err:
        load_task_data(get_task("wnli"), None)
    text = str(err.value)
    assert "\n" not in text and "nyu-mll/glue" in text and "--data-dir" in text


def test_task_names_and_aliases():
    assert get_task("SST-2").name == "sst2" and get_task("sts-b").name == "stsb"
    with pytest.raises(InputError, match='did you mean "qnli"'):
        get_task("qnlii")
    assert TASKS["mnli"].metric_names() == ["accuracy_matched", "accuracy_mismatched"]


def test_metrics_against_hand_computed_values():
    mrpc = get_task("mrpc")
    preds, labels = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1])
    m = compute_metrics(mrpc, preds, labels)
    assert m == {"f1": pytest.approx(50.0), "accuracy": pytest.approx(50.0)}
    assert mrpc.main_score({"f1": 80.0, "accuracy": 70.0}) == 75.0
    cola = get_task("cola")
    assert compute_metrics(cola, np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0]))["mcc"] == pytest.approx(100.0)
    assert compute_metrics(cola, np.array([1, 1, 1, 1]), np.array([1, 0, 1, 0]))["mcc"] == 0.0
    stsb = get_task("stsb")
    m = compute_metrics(stsb, np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 9.0]))
    assert m["spearman"] == pytest.approx(100.0) and 95 < m["pearson"] < 100
    assert compute_metrics(stsb, np.zeros(4), np.arange(4.0))["pearson"] == 0.0  # constant: 0, not NaN
    mnli = get_task("mnli")
    assert mnli.main_score({"accuracy_matched": 80.0, "accuracy_mismatched": 78.0}) == 79.0


def test_a_data_file_is_named_by_its_content_even_when_swapped_under_the_same_mtime(tmp_path):
    """A run records each split's source by sha256 (a record says which bytes it trained on). The digest is
    cached per process: a file of the same size put in place with its mtime kept (cp -p, rsync -t) must not be
    reported under the old file's digest."""
    import hashlib
    import os

    from harness.tasks.data import file_source

    path, other = tmp_path / "train.tsv", tmp_path / "new.tsv"
    old, new = b"a\t1\n", b"b\t1\n"
    path.write_bytes(old)
    assert file_source(str(path)) == f"file:{path}:sha256:{hashlib.sha256(old).hexdigest()}"
    other.write_bytes(new)
    st = os.stat(path)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    assert file_source(str(path)) == f"file:{path}:sha256:{hashlib.sha256(new).hexdigest()}"


def _stsb_with_malformed_rows(glue_dir, root, n_train: int = 40, n_dev: int = 20):
    """Real STS-B rows under root/STS-B: train with a row whose label is no number, one whose label is NaN and
    one cut short (lines 12, 23, 34 of the file); dev with a short last row (line n_dev + 2)."""
    folder = root / "STS-B"
    folder.mkdir(parents=True)
    train = (glue_dir / "STS-B" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    lines = train[:n_train + 1]
    bad_label = train[n_train + 1].rstrip("\n").split("\t")
    lines.insert(11, "\t".join(bad_label[:-1] + ["notanumber"]) + "\n")
    lines.insert(22, "\t".join(bad_label[:-1] + ["nan"]) + "\n")
    lines.insert(33, "\t".join(bad_label[:4]) + "\n")
    (folder / "train.tsv").write_text("".join(lines), encoding="utf-8")
    dev = (glue_dir / "STS-B" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "dev.tsv").write_text("".join(dev[:n_dev + 1]) + "cut\tshort\n", encoding="utf-8")
    return root


def test_malformed_rows_are_skipped_and_named_by_line(glue_dir, tmp_path):
    """A row without a valid label (no number, NaN: a NaN target makes the loss NaN) or too short holds no example:
    it is skipped, and the split names it by its line, so a run's record can say the split is smaller than the
    file. The source stays the file's digest (data identity is the bytes); a cap keeps the skipped rows it read."""
    import hashlib

    root = _stsb_with_malformed_rows(glue_dir, tmp_path)
    task = get_task("stsb")
    path = root / "STS-B" / "train.tsv"
    train = read_glue_tsv(task, str(path))
    assert len(train) == 40 and all(np.isfinite(train.labels))
    assert [(r.line, r.why, r.before) for r in train.skipped] == [
        (12, "label 'notanumber' is not a number", 10), (23, "label 'nan' is not a finite number", 20),
        (34, "4 field(s), 10 needed", 30)]
    assert train.source == f"file:{path}:sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert [r.line for r in train.head(20).skipped] == [12] and train.head(30).source.endswith("[:30]")
    assert [r.line for r in train.head(31).skipped] == [12, 23, 34]
    dev = read_glue_tsv(task, str(root / "STS-B" / "dev.tsv"))
    assert len(dev) == 20 and [(r.line, r.why) for r in dev.skipped] == [(22, "2 field(s), 10 needed")]
    rte = read_glue_tsv(get_task("rte"), str(glue_dir / "RTE" / "dev.tsv"))   # the real files skip nothing
    assert len(rte) == 277 and rte.skipped == ()
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
                                              "1\tc\td\tmaybe\n", encoding="utf-8")
    (row,) = read_glue_tsv(get_task("rte"), str(tmp_path / "RTE" / "dev.tsv")).skipped
    assert row.line == 3 and row.why == "label 'maybe' is not one of entailment, not_entailment (or 0-1)"
    # a blank line (a file ending in two newlines, a hand-edited copy) holds no example and none is missing: it
    # was counted as a malformed row, and every run on such a file said it scored on fewer examples (review)
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n\n"
                                              "1\tc\td\tnot_entailment\n\n", encoding="utf-8")
    blank = read_glue_tsv(get_task("rte"), str(tmp_path / "RTE" / "dev.tsv"))
    assert len(blank) == 2 and blank.skipped == ()



def test_a_row_with_more_fields_than_the_header_is_skipped_naming_its_line(glue_dir, tmp_path):
    """A tab inside a text shifts the columns after it: MRPC (label first) read "The cat sat" / "on the mat ." as
    the pair, CoLA (no header) a cut sentence, both with a valid label and no word; RTE skipped it as "label 'A man
    sleeps .' is not one of ...". Such a row is skipped as a short one is, named by its line (so in the run's
    record and the tables' notes), not read shifted; the real files, with no such row, still load whole
    (test_real_glue_row_counts_match_the_manifest)."""
    rows = {"MRPC": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t3\t4\tx\ty\n"
                    "1\t1\t2\tThe cat sat\ton the mat .\tA cat was on a mat .\n",
            "CoLA": "src\t0\t*\tcat the\nsrc\t1\t\tThe cat\tsat .\n",
            "RTE": "index\tsentence1\tsentence2\tlabel\n0\tA\tB\tentailment\n"
                   "1\tA man\tsleeps .\tA man rests .\tentailment\n"}
    for folder, text in rows.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.tsv").write_text(text, encoding="utf-8")
        split = read_glue_tsv(get_task(folder.lower()), str(tmp_path / folder / "train.tsv"))
        width = {"MRPC": 5, "CoLA": 4, "RTE": 4}[folder]
        assert len(split) == 1 and [(r.line, r.why) for r in split.skipped] == [
            (3 if folder != "CoLA" else 2, f"{width + 1} fields, more than the {width} of the "
                                           f"{'classic GLUE layout' if folder == 'CoLA' else 'header'} (a tab inside a "
                                           f"text?)")], (folder, split.skipped)


def test_a_file_that_is_no_utf8_tsv_is_refused_in_one_line(glue_dir, tmp_path):
    """RTE's real train file with one é re-encoded in Latin-1, or one line holding a field past csv's
    128 KiB limit: `harness validate` ended in a UnicodeDecodeError / _csv.Error traceback (exit 1). Now one line
    names the task and file (and the line, where the csv reader knows it), exit 2."""
    from tests.helpers import assert_refused, call_cli, write_suite

    real = (glue_dir / "RTE" / "train.tsv").read_bytes()
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_bytes((glue_dir / "RTE" / "dev.tsv").read_bytes())
    suite = write_suite(tmp_path / "r.yaml", "name: r\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    train = tmp_path / "RTE" / "train.tsv"
    train.write_bytes(real.replace("\u00e9".encode(), b"\xe9", 1))   # its first é as Latin-1 writes it
    assert train.read_bytes() != real
    line = assert_refused(call_cli("validate", suite, "--data-dir", tmp_path), "RTE/train.tsv", where=suite)
    assert line.endswith("RTE/train.tsv is not UTF-8 text (byte 0xe9: invalid continuation byte); expected the "
                         "classic GLUE layout")
    lines = real.split(b"\n")
    train.write_bytes(b"\n".join(lines[:100] + [b"100\t" + b"x" * 200_000 + b"\ty\tentailment"] + lines[100:]))
    line = assert_refused(call_cli("validate", suite, "--data-dir", tmp_path), "RTE/train.tsv", where=suite)
    assert line.endswith("RTE/train.tsv: line 101: field larger than field limit (131072); expected the classic "
                         "GLUE layout (tab-separated lines)")
    train.write_bytes(real)   # the file as it is: valid, nothing skipped
    proc = call_cli("validate", suite, "--data-dir", tmp_path)
    assert proc.returncode == 0 and "malformed" not in proc.stdout + proc.stderr, proc.stderr

def test_a_run_on_a_file_with_malformed_rows_says_so_in_its_record_and_tables(glue_dir, tiny_bert, tmp_path):
    """The rows skipped are in the run's record (record.json and the store's extra.data_skipped, beside
    data_sources, which is unchanged) and in a note under every table that shows its score; `harness validate`
    names them before anything trains."""
    import csv
    import io
    import json

    from harness.store.db import Store
    from tests.helpers import call_cli, run_cli, write_suite

    data = _stsb_with_malformed_rows(glue_dir, tmp_path / "glue")
    suite = write_suite(tmp_path / "s.yaml", f"""
name: rows
models: ["{tiny_bert}"]
tasks: [stsb]
methods: [full]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, learning_rate: 1e-4}}
""")
    proc = run_cli("validate", suite, "--data-dir", data)   # (a process: its log handler writes to its stderr)
    assert proc.returncode == 0, proc.stderr
    train_file, dev_file = data / "STS-B" / "train.tsv", data / "STS-B" / "dev.tsv"
    assert (f"stsb: {train_file}: 3 malformed row(s) skipped (line 12: label 'notanumber' is not a number; line "
            f"23: label 'nan' is not a finite number; line 34: 4 field(s), 10 needed)") in proc.stdout
    assert f"stsb: {dev_file}: 1 malformed row(s) skipped (line 22: 2 field(s), 10 needed)" in proc.stdout
    assert "the run's record counts them" not in proc.stderr   # the loader's own warning, said once above

    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", data, "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = Store(db).records()
    assert rec.status == "completed" and (rec.train_examples, rec.eval_examples) == (40, 20)
    skipped = {"stsb": {
        "train": {"rows": 3, "first": [{"line": 12, "why": "label 'notanumber' is not a number"},
                                       {"line": 23, "why": "label 'nan' is not a finite number"},
                                       {"line": 34, "why": "4 field(s), 10 needed"}]},
        "validation": {"rows": 1, "first": [{"line": 22, "why": "2 field(s), 10 needed"}]}}}
    assert rec.extra["data_skipped"] == skipped
    record = json.loads((tmp_path / "out" / "rows" / rec.cell_key / "record.json").read_text())
    assert record["extra"]["data_skipped"] == skipped
    assert rec.extra["data_sources"]["stsb"]["train"].startswith(f"file:{train_file}:sha256:")

    note = ("stsb: the run shown skipped malformed rows of the data files (train 3 rows; validation 1 row), so "
            "trained or were scored on fewer examples than the files hold (each record's extra.data_skipped names "
            "the rows).")
    for table in ("leaderboard", "best", "runs"):
        proc = call_cli("export", "--db", db, "--table", table, "--format", "markdown")
        assert proc.returncode == 0 and note in proc.stdout.splitlines(), (table, proc.stdout[-1500:])
    proc = call_cli("export", "--db", db, "--table", "runs", "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(proc.stdout))
    assert json.loads(row["rows_skipped"]) == {"train": 3, "validation": 1} and row["task_note"] == note[6:-1]


def test_a_multitask_cells_member_rows_carry_the_rows_skipped_note(glue_dir, tiny_bert, tmp_path):
    """The tables show a multi-task cell's member rows (one per task), not its joint row: a member row carries the
    joint run's data sources and skipped rows (the store gives it the parent's extra), so the note on rows skipped
    goes under its task's score, and only its own task's."""
    from harness.store.db import Store
    from tests.helpers import call_cli, run_cli, write_suite

    data = _stsb_with_malformed_rows(glue_dir, tmp_path / "glue")
    (data / "RTE").mkdir()
    for name, n in (("train.tsv", 40), ("dev.tsv", 20)):
        lines = (glue_dir / "RTE" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (data / "RTE" / name).write_text("".join(lines[:n + 1]), encoding="utf-8")
    suite = write_suite(tmp_path / "s.yaml", f"""
name: mt
models: ["{tiny_bert}"]
tasks: [{{multitask: [stsb, rte]}}]
methods: [full]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, learning_rate: 1e-4}}
""")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", data, "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store(db)
    (joint,) = [r for r in store.records() if r.parent_id is None]
    members = {m.task: m for m in store.children(joint.id)}
    assert set(joint.extra["data_skipped"]) == {"stsb"}
    for task in ("stsb", "rte"):
        assert members[task].extra["data_skipped"] == joint.extra["data_skipped"]
    proc = call_cli("export", "--db", db, "--table", "leaderboard", "--format", "markdown")
    assert proc.returncode == 0
    assert ("stsb: the run shown skipped malformed rows of the data files (train 3 rows; validation 1 row), so "
            "trained or were scored on fewer examples than the files hold (each record's extra.data_skipped names "
            "the rows).") in proc.stdout.splitlines(), proc.stdout[-2000:]
    assert "rte:" not in proc.stdout


def test_a_runs_record_counts_the_examples_cut_at_max_length(glue_dir, tiny_bert, tmp_path):
    """RTE's pairs are long: at max_length 64 many are cut, and the record says how many per split (counted by the
    tokenizer itself, without truncation, here); a cached split says the same as a fresh one."""
    import json

    from transformers import AutoTokenizer

    from harness.store.db import Store
    from tests.helpers import run_cli, write_suite

    data = tmp_path / "glue"
    (data / "RTE").mkdir(parents=True)
    for name, n in (("train.tsv", 40), ("dev.tsv", 20)):
        lines = (glue_dir / "RTE" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (data / "RTE" / name).write_text("".join(lines[:n + 1]), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    expected = {}
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        raw = read_glue_tsv(get_task("rte"), str(data / "RTE" / name))
        ids = tokenizer(raw.columns["sentence1"], raw.columns["sentence2"])["input_ids"]
        expected[split] = sum(len(x) > 64 for x in ids)
    assert 0 < expected["validation"] < 20 and 0 < expected["train"] < 40
    suite = write_suite(tmp_path / "s.yaml", f"""
name: cut
models: ["{tiny_bert}"]
tasks: [rte]
methods: [full, linear_probe]
budgets: [{{epochs: 1}}]
hparams: {{batch_size: 8, learning_rate: 1e-4, max_length: 64}}
""")
    db = f"sqlite:///{tmp_path / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp_path / "out", "--data-dir", data, "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = Store(db).records()
    assert len(records) == 2   # the second cell read the first's cached features
    for rec in records:
        assert rec.extra["data_truncated"] == {"rte": expected}
        record = json.loads((tmp_path / "out" / "cut" / rec.cell_key / "record.json").read_text())
        assert record["extra"]["data_truncated"] == {"rte": expected}
