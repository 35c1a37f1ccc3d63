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
