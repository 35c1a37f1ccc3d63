"""The tokenizer fingerprint that keys the tokenized-data cache (harness/tasks/data.py): the same for the same
tokenizer whatever its call state or where it was loaded from, different for one that tokenizes differently, and
computed once per serialized form in a process (a worker asks for it at every split of every cell)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from harness.tasks import data


@pytest.fixture()
def cold(monkeypatch):
    """A process that has fingerprinted nothing yet; counts the serializations the fingerprint makes."""
    monkeypatch.setattr(data, "_FINGERPRINTS", {})
    calls = []

    def counting(obj, *args, **kwargs):
        calls.append(kwargs.get("sort_keys"))
        return json.dumps(obj, *args, **kwargs)

    monkeypatch.setattr(data, "json", SimpleNamespace(loads=json.loads, dumps=counting))
    return calls


def test_one_tokenizer_one_fingerprint_whatever_its_call_state_or_folder(tiny_bert, tmp_path, cold):
    first = AutoTokenizer.from_pretrained(tiny_bert)
    before = data.tokenizer_fingerprint(first)
    first("a sentence to encode", truncation=True, max_length=8, padding="max_length")   # sets call state
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_bert, copy)
    again = [data.tokenizer_fingerprint(first), data.tokenizer_fingerprint(AutoTokenizer.from_pretrained(copy))]
    assert again == [before, before]
    # two serialized forms (without and with call state), each put in key order once: later calls reuse it
    assert cold == [True, True]
    # a cold process computes the same from scratch as the memo returned
    data._FINGERPRINTS.clear()
    assert data.tokenizer_fingerprint(first) == before


def test_a_tokenizer_that_tokenizes_differently_gets_another_fingerprint(tiny_bert, cold):
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    before = data.tokenizer_fingerprint(tok)
    assert tok.tokenize("harnessing") != ["harnessing"]   # word pieces
    tok.add_tokens(["harnessing"])   # the same object, changed after its fingerprint was memoized
    assert tok.tokenize("harnessing") == ["harnessing"]
    assert data.tokenizer_fingerprint(tok) != before
    cased = AutoTokenizer.from_pretrained(tiny_bert, do_lower_case=False)
    assert data.tokenizer_fingerprint(cased) not in (before, data.tokenizer_fingerprint(tok))



@pytest.mark.parametrize("side, padding", [("truncation_side", "dynamic"), ("padding_side", "max_length")])
def test_a_tokenizer_that_cuts_or_pads_the_other_end_gets_its_own_cached_features(glue_dir, tiny_bert, tmp_path,
                                                                                   side, padding):
    """truncation_side / padding_side live on the Python object (a model's tokenizer_config.json may set them),
    not in the backend's serialized form: a left-cutting tokenizer and the default one shared a fingerprint, so a
    worker read the other's cached RTE features (the pair cut at the other end, or padded on the other side)."""
    from harness.spec.tasks import get_task

    rte = get_task("rte")
    dev = data.load_task_data(rte, str(glue_dir))["validation"]
    default = AutoTokenizer.from_pretrained(tiny_bert)
    left = AutoTokenizer.from_pretrained(tiny_bert, **{side: "left"})

    def encoded(tok):
        return tok(*[dev.columns[c] for c in rte.text_columns], truncation=True, max_length=128,
                   padding="max_length" if padding == "max_length" else False)["input_ids"]

    own, other = encoded(default), encoded(left)
    # RTE dev: 33 pairs cut at 128 (docs/tasks.md); padded to 128, nearly every pair differs
    assert sum(a != b for a, b in zip(own, other)) >= 33
    first = data.TokenizedCache(str(tmp_path)).get(rte, dev, left, 128, padding)        # one worker, then another
    second = data.TokenizedCache(str(tmp_path)).get(rte, dev, default, 128, padding)
    assert [list(ids) for ids in first["input_ids"]] == other
    assert [list(ids) for ids in second["input_ids"]] == own
    assert data.tokenizer_fingerprint(left) != data.tokenizer_fingerprint(default)
