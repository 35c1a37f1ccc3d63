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
