"""squad_v2_synth: a SQuAD v2.0-style set built from the v1.1 files at load time. On the real offline split: the
same seed gives the same set and another seed another, a third of each split unanswerable, every unanswerable
question paired with another article's paragraph of its own split (train and dev stay article-disjoint), the
answerable ones exactly their v1.1 entries; the hub path builds what the files build; the trivial baselines; and
one `harness run` of a tiny model through the v2.0 scoring (null odds, threshold, HasAns / NoAns) on real text."""

import dataclasses
import json

import pytest

from harness.spec.tasks import get_task
from harness.tasks.squad import load_squad
from harness.tasks.squad_metrics import squad_metrics
from harness.tasks.squad_synth import hub_to_json, synthesize_v2

TASK = get_task("squad_v2_synth")


def _v1(glue_dir, split: str) -> dict:
    return json.loads((glue_dir / "SQuAD" / f"{split}-v1.1.json").read_text(encoding="utf-8"))


def _index(v1: dict) -> tuple[dict, dict]:
    """({question id: (title, question, context, answers)}, {context: title}) of a v1.1 file."""
    questions, titles = {}, {}
    for article in v1["data"]:
        for p in article["paragraphs"]:
            titles[p["context"]] = article["title"]
            for qa in p["qas"]:
                questions[qa["id"]] = (article["title"], qa["question"], p["context"],
                                       [(a["text"], a["answer_start"]) for a in qa["answers"]])
    return questions, titles


@pytest.fixture(scope="module")
def synth(glue_dir):
    return load_squad(TASK, str(glue_dir))


def test_the_task_entry_says_it_is_synthetic():
    assert TASK.unanswerable and TASK.synthetic and 0.33 <= TASK.synthetic_unanswerable < 0.34
    assert "synthetic" in TASK.note and "another article's paragraph" in TASK.note
    assert (TASK.local_train, TASK.eval_splits[0].local_file) == ("train-v1.1.json", "dev-v1.1.json")
    assert "not the official split" in get_task("squad").note   # the offline v1.1 split says what it is
    assert get_task("sst2").note == ""


def test_a_third_unanswerable_each_paired_with_another_article(glue_dir, synth):
    titles_by_split = {}
    for split, file in (("train", "train"), ("validation", "dev")):
        data = synth[split]
        questions, titles = _index(_v1(glue_dir, file))
        assert sorted(data.ids) == sorted(questions)             # every v1.1 question, once
        impossible = [i for i, a in enumerate(data.answer_texts) if not a]
        assert len(impossible) == round(len(data) * TASK.synthetic_unanswerable)   # train 2860 / 8582, dev 663 / 1988
        for i, qid in enumerate(data.ids):
            title, question, context, answers = questions[qid]
            assert data.questions[i] == question
            if i in impossible:   # a real question on a paragraph of another article of the same split
                assert data.answer_starts[i] == [] and data.contexts[i] in titles
                assert titles[data.contexts[i]] != title
            else:                 # the v1.1 entry unchanged
                assert data.contexts[i] == context
                assert list(zip(data.answer_texts[i], data.answer_starts[i])) == answers
        titles_by_split[split] = {titles[c] for c in data.contexts}
        # a question budget (the first N questions) holds unanswerable ones in about the split's share
        head = data.head(300)
        assert 0.25 < sum(not a for a in head.answer_texts) / len(head) < 0.42
    assert not titles_by_split["train"] & titles_by_split["validation"]   # still split by article
    assert len(titles_by_split["train"]) == 38 and len(titles_by_split["validation"]) == 10


def test_the_same_seed_builds_the_same_set_another_seed_another(glue_dir, synth):
    again = load_squad(TASK, str(glue_dir))
    for split in ("train", "validation"):
        assert dataclasses.asdict(again[split]) == dataclasses.asdict(synth[split])
    v1 = _v1(glue_dir, "dev")

    def unanswerable(seed):
        built = synthesize_v2(v1, TASK.synthetic_unanswerable, seed)
        return {qa["id"]: p["context"] for a in built["data"] for p in a["paragraphs"] for qa in p["qas"]
                if qa["is_impossible"]}

    assert unanswerable(TASK.synthetic_seed) == unanswerable(TASK.synthetic_seed)
    assert set(unanswerable(TASK.synthetic_seed)) == {q for q, a in zip(synth["validation"].ids,
                                                                         synth["validation"].answer_texts) if not a}
    other = unanswerable(TASK.synthetic_seed + 1)
    assert len(other) == 663 and set(other) != set(unanswerable(TASK.synthetic_seed))
    # another seed or share is other data: the tokenized cache tells them apart by the split's source
    assert synth["validation"].source.startswith(f"synthetic-v2:{TASK.synthetic_unanswerable}:{TASK.synthetic_seed}:")
    assert synthesize_v2(v1, 0.5, TASK.synthetic_seed)["version"] == "v2.0"


def _article(title: str, n_paragraphs: int, n_questions: int) -> dict:
    return {"title": title, "paragraphs": [
        {"context": f"{title} paragraph {p} says {title}{p}.", "qas": [
            {"id": f"{title}-{p}-{q}", "question": f"what does {title} {p} say ({q})?",
             "answers": [{"text": f"{title}{p}", "answer_start": len(f"{title} paragraph {p} says ")}]}
            for q in range(n_questions)]} for p in range(n_paragraphs)]}


def test_hand_made_files_and_the_hub_build_the_same_set(tmp_path, monkeypatch):
    from harness.spec.errors import DataNotFoundError
    from harness.tasks import data as task_data

    (tmp_path / "SQuAD").mkdir()
    files = {"train": {"version": "1.1", "data": [_article("a", 3, 4), _article("b", 2, 3), _article("c", 1, 5)]},
             "validation": {"version": "1.1", "data": [_article("d", 2, 3), _article("e", 2, 3)]}}
    (tmp_path / "SQuAD" / "train-v1.1.json").write_text(json.dumps(files["train"]))
    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps(files["validation"]))
    local = load_squad(TASK, str(tmp_path))
    assert [len(local[s]) for s in ("train", "validation")] == [23, 12]
    assert [sum(not a for a in local[s].answer_texts) for s in ("train", "validation")] == [8, 4]   # round(n/3)
    for split in local.values():
        for qid, context, answers in zip(split.ids, split.contexts, split.answer_texts):
            assert (context.split()[0] == qid.split("-")[0]) == bool(answers)   # unanswerable: another article

    class Rows(list):   # a hub split: rows, and the fingerprint the cache key reads
        _fingerprint = "f"

    hub = {s: Rows({"id": qa["id"], "title": a["title"], "context": p["context"], "question": qa["question"],
                    "answers": {"text": [x["text"] for x in qa["answers"]],
                                "answer_start": [x["answer_start"] for x in qa["answers"]]}}
                   for a in f["data"] for p in a["paragraphs"] for qa in p["qas"]) for s, f in files.items()}
    assert hub_to_json(hub["train"]) == files["train"]
    monkeypatch.setattr(task_data, "load_hub_dataset", lambda *args: hub)
    from_hub = load_squad(TASK, None)
    for split in local:
        assert from_hub[split].source == "synthetic-v2:0.3333:1:hub:rajpurkar/squad/" + split + ":f"
        assert (dataclasses.replace(from_hub[split], source="") == dataclasses.replace(local[split], source=""))

    (tmp_path / "SQuAD" / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": [_article("d", 2, 3)]}))
    with pytest.raises(DataNotFoundError, match="dev-v1.1.json: a synthetic v2.0 split needs at least two articles"):
        load_squad(TASK, str(tmp_path))


def test_trivial_baselines_on_the_synthetic_dev(synth):
    from harness.tasks.kinds import kind_of

    dev = synth["validation"].head(500)
    unanswerable = sum(not a for a in dev.answer_texts)
    scores = kind_of(TASK).trivial_baselines(TASK, synth["train"], [("", dev)])
    assert scores["empty"] == pytest.approx(100.0 * unanswerable / 500)   # right exactly on the unanswerable ones
    assert 0.0 < scores["first_span"] < scores["empty"]


def test_harness_run_scores_v2_on_real_text(tmp_path, tiny_bert, glue_dir, synth):
    """A tiny random model through `harness run` on squad_v2_synth: the record holds the v2.0 metrics, a
    threshold and the trivial baselines, and equals an official re-score of predictions.json and null_odds.json."""
    from harness.store.db import Store
    from tests.helpers import call_cli, run_cli, write_suite

    suite = write_suite(tmp_path / "v2s.yaml", f"""
name: v2s
models: ["{tiny_bert}"]
tasks: [squad_v2_synth]
methods: [full]
budgets: [{{epochs: 1, max_train_samples: 48, max_eval_samples: 36}}]
hparams: {{batch_size: 16, max_length: 96, doc_stride: 32, learning_rate: 1e-3}}
""")
    proc = run_cli("run", suite, "--db", f"sqlite:///{tmp_path / 'h.db'}", "--output-dir", tmp_path / "out",
                   "--data-dir", glue_dir, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = Store(f"sqlite:///{tmp_path / 'h.db'}").records()
    assert r.status == "completed" and r.task == "squad_v2_synth"
    assert r.train_examples == 48 and r.eval_examples == 36
    assert set(TASK.metrics) <= set(r.metrics)     # HasAns_* and NoAns_* both present: the head holds both kinds
    dev = synth["validation"].head(36)
    out = tmp_path / "out" / "v2s" / r.cell_key
    predictions, odds = (json.loads((out / f).read_text()) for f in ("predictions.json", "null_odds.json"))
    assert set(predictions) == set(odds) == set(dev.ids)
    rescored, _, _ = squad_metrics(dev.golds(), predictions, 2, odds)
    assert rescored == pytest.approx(r.metrics) and r.score == pytest.approx(r.metrics["f1"])
    assert r.metrics["best_f1_thresh"] in set(odds.values()) | {0.0}   # a threshold the null odds give
    assert r.trivial_scores["empty"] == pytest.approx(100.0 * sum(not a for a in dev.answer_texts) / 36)

    listed = call_cli("ls")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["squad_v2_synth"])
    assert lines[at + 1].split() == ["note:", *TASK.note.split()]   # the note, under its task
