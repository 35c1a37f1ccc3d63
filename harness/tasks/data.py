"""Task data: local GLUE files (classic download_glue_data.py layout) or the Hugging Face hub, tokenized
once per (tokenizer, task, max length, padding, data source) and cached on disk for every later cell."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass

from harness.spec.errors import DataNotFoundError
from harness.spec.tasks import Task

log = logging.getLogger(__name__)

HOW_TO_POINT = ("point the harness at local GLUE files (classic download_glue_data.py layout) with --data-dir DIR, "
                "the suite's data_dir, or HARNESS_DATA_DIR=DIR")


# (path, inode, size, mtime, ctime) -> sha256, per process: a file is hashed once. ctime and the inode change
# when a file is rewritten or replaced even where its mtime is kept (cp -p, rsync -t)
_DIGESTS: dict[tuple, str] = {}


def file_source(path: str) -> str:
    """A local data file by its content: `file:PATH:sha256:DIGEST`. The run's record keeps it, so a score says
    which bytes it came from (the offline SQuAD folder's train-v1.1.json is a split of the dev set, under the
    official file's name; only its digest tells them apart); the feature cache keys on it too."""
    path = os.path.abspath(path)
    return f"file:{path}:sha256:{file_digest(path)}"


def file_digest(path: str) -> str:
    """A file's sha256 (hex), hashed once per process while the file stays as it is (a model directory's files
    are digested this way too: harness/train/models.py model_source)."""
    path = os.path.abspath(path)
    st = os.stat(path)
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


# a record names at most this many of a split's skipped rows (its count is always whole)
SKIPPED_SHOWN = 5


@dataclass(frozen=True)
class SkippedRow:
    """A row of a data file that holds no example: its line in the file, why, and how many examples came before
    it (a cap of n examples read the rows before the n-th, so a head(n) keeps only the skipped rows among those)."""

    line: int
    why: str
    before: int


@dataclass
class RawSplit:
    """Texts and labels of one split; `columns` maps the task's text column names to lists of strings. `skipped`:
    the rows of its file read as no example (malformed), so that a run's record says its split is smaller than
    the file; `source` stays the file's identity (its digest), which the skipped rows do not change."""

    columns: dict[str, list[str]]
    labels: list
    source: str            # what was read (file_source, or the hub's fingerprint): the cache key and the record
    skipped: tuple[SkippedRow, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> "RawSplit":
        if n is None or n >= len(self):
            return self
        return RawSplit({k: v[:n] for k, v in self.columns.items()}, self.labels[:n], f"{self.source}[:{n}]",
                        tuple(r for r in self.skipped if r.before < n))


def skipped_record(skipped) -> dict:
    """What a run's record keeps of a split's skipped rows: their count and the first SKIPPED_SHOWN of them."""
    return {"rows": len(skipped), "first": [{"line": r.line, "why": r.why} for r in skipped[:SKIPPED_SHOWN]]}


def _parse_label(task: Task, raw: str):
    """The label of a row; ValueError (its message says why) where it is none of the task's."""
    raw = raw.strip()
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"label {raw!r} is not a number") from None
        if not math.isfinite(value):   # "nan" parses, and would make the loss NaN at the first step
            raise ValueError(f"label {raw!r} is not a finite number")
        return value
    if raw in task.label_names:
        return task.label_names.index(raw)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < task.num_labels:
        raise ValueError(f"label {raw!r} is not one of {', '.join(task.label_names)} "
                         f"(or 0-{task.num_labels - 1})")
    return value


def read_glue_tsv(task: Task, path: str) -> RawSplit:
    """Read one GLUE TSV. Quoting is off (MRPC, STS-B, QNLI hold unbalanced quotes); utf-8-sig drops MRPC's BOM;
    CoLA has no header. Rows that are too short or carry no valid label hold no example: they are skipped (some
    upstream GLUE files hold a few), named in the split's `skipped` and so in the run's record and the tables'
    notes; refusing them would leave such a task untrainable from its official files. So is a row with more fields
    than the header (a file without one: than up to the last column the task reads, CoLA's sentence): a tab inside
    a text shifts every column after it, so MRPC read half a sentence as the other and CoLA a cut sentence, both
    with a valid label (none of the files MANIFEST.md lists has one; other tasks' files are not checked here)."""
    if not os.path.isfile(path):
        raise DataNotFoundError(f"task {task.name}: {path} not found; {HOW_TO_POINT}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            rows = [(reader.line_num, row) for row in reader]   # line_num: the file's line, whatever came before
        except UnicodeDecodeError as e:   # (its position counts from the chunk being decoded, not the file)
            raise DataNotFoundError(f"task {task.name}: {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x}: "
                                    f"{e.reason}); expected the classic GLUE layout") from None
        except csv.Error as e:   # a field of 128 KiB or more (csv's limit): no GLUE text is, so no GLUE file
            raise DataNotFoundError(f"task {task.name}: {path}: line {reader.line_num}: {e}; expected the classic "
                                    f"GLUE layout (tab-separated lines)") from None
    if task.local_header:
        header, rows = [h.strip() for h in rows[0][1]] if rows else [], rows[1:]
        missing = [c for c in task.local_columns if c not in header]
        if missing:
            raise DataNotFoundError(f"task {task.name}: {path} has no column(s) {', '.join(missing)}; "
                                    f"expected the classic GLUE layout")
        index = [header.index(c) for c in task.local_columns]
    else:
        index = list(task.local_columns)
    *text_idx, label_idx = index
    width = len(header) if task.local_header else max(index) + 1
    columns = {c: [] for c in task.text_columns}
    labels, skipped = [], []
    for line, row in rows:
        if not any(field.strip() for field in row):   # a blank line holds no example, and none is missing
            continue
        if len(row) > width:   # its columns cannot be told apart
            skipped.append(SkippedRow(line, f"{len(row)} fields, more than the {width} of the "
                                            f"{'header' if task.local_header else 'classic GLUE layout'} (a tab "
                                            f"inside a text?)", len(labels)))
            continue
        if len(row) <= max(index):
            skipped.append(SkippedRow(line, f"{len(row)} field(s), {max(index) + 1} needed", len(labels)))
            continue
        try:
            labels.append(_parse_label(task, row[label_idx]))
        except ValueError as e:
            skipped.append(SkippedRow(line, str(e), len(labels)))
            continue
        for name, i in zip(task.text_columns, text_idx):
            columns[name].append(row[i])
    if skipped:
        first = skipped[0]
        log.warning("%s: skipped %d malformed row(s) of %s (line %d: %s); the run's record counts them",
                    task.name, len(skipped), path, first.line, first.why)
    return RawSplit(columns, labels, file_source(path), tuple(skipped))


def load_task_data(task: Task, data_dir: str | None) -> dict[str, RawSplit]:
    """{'train': ..., <eval split name>: ...} from `data_dir` if given, else from the hub."""
    if data_dir:
        if not os.path.isdir(data_dir):
            raise DataNotFoundError(f"data directory {data_dir} does not exist; {HOW_TO_POINT}")
        folder = os.path.join(data_dir, task.local_dir)
        out = {"train": read_glue_tsv(task, os.path.join(folder, "train.tsv"))}
        for split in task.eval_splits:
            out[split.hub_split] = read_glue_tsv(task, os.path.join(folder, split.local_file))
        return out
    return _load_from_hub(task)


def load_hub_dataset(task_name: str, how_to_point: str, *name_and_config: str):
    """datasets.load_dataset, failing the way every task kind fails: one line, and how to use local files."""
    import datasets

    try:
        return datasets.load_dataset(*name_and_config)
    except Exception as e:  # offline, hub down, no such dataset: all end the same way for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataNotFoundError(f"task {task_name}: cannot load {'/'.join(name_and_config)} from the Hugging Face "
                                f"hub ({first[:200]}); {how_to_point}") from None


def _load_from_hub(task: Task) -> dict[str, RawSplit]:
    dd = load_hub_dataset(task.name, HOW_TO_POINT, task.hub_id, task.hub_config)
    out = {}
    for split in ["train"] + [s.hub_split for s in task.eval_splits]:
        ds = dd[split]
        out[split] = RawSplit({c: list(ds[c]) for c in task.text_columns}, list(ds["label"]),
                              f"hub:{task.hub_id}/{task.hub_config}/{split}:{ds._fingerprint}")
    return out


# a fast tokenizer's serialized form (hashed) -> its fingerprint, per process: re-serializing a 30,000-entry
# vocabulary in key order costs 30 ms, and about 200 ms when its objects set off a full garbage collection, at
# every split of every cell; its serialized form costs 3 ms
_FINGERPRINTS: dict[str, str] = {}


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies a tokenizer by what it does, not by where it was loaded from."""
    name = type(tokenizer).__name__
    # which end a cut pair loses and which end padding goes on are the Python object's, not the backend's (each
    # call writes them into the backend state popped below): a tokenizer_config.json with truncation_side "left"
    # got the right-side tokenizer's cached features. Named only where not "right", so a tokenizer that cuts and
    # pads at the right keeps the fingerprint, and the cache, it had (one whose class pads at the left, as Llama's
    # and Gemma's do, builds its features once more)
    sides = [f"{side}={getattr(tokenizer, side, 'right')}" for side in ("truncation_side", "padding_side")
             if getattr(tokenizer, side, "right") != "right"]
    name = "|".join([name, *sides])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return hashlib.sha256((name + repr(sorted(tokenizer.get_vocab().items()))).encode()).hexdigest()[:16]
    serialized = backend.to_str()
    seen = hashlib.sha256((name + serialized).encode()).hexdigest()
    if seen not in _FINGERPRINTS:
        spec = json.loads(serialized)
        spec.pop("truncation", None)  # call state: set by the first encode, not part of what it does
        spec.pop("padding", None)
        body = json.dumps(spec, sort_keys=True)
        _FINGERPRINTS[seen] = hashlib.sha256((name + body).encode()).hexdigest()[:16]
    return _FINGERPRINTS[seen]


class TokenizedCache:
    """Tokenized splits on disk (datasets' save_to_disk), reused across cells and runs."""

    def __init__(self, cache_dir: str | None):
        self.cache_dir = cache_dir
        self._memory: dict[str, object] = {}

    def get(self, task: Task, split: RawSplit, tokenizer, max_length: int, padding: str):
        """A GLUE split tokenized as text (pair) -> input ids, with labels and example indexes."""

        def build():
            import datasets

            texts = [split.columns[c] for c in task.text_columns]
            enc = tokenizer(*texts, truncation=True, max_length=max_length,
                            padding="max_length" if padding == "max_length" else False)
            data = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
            data["length"] = [len(ids) for ids in enc["input_ids"]]
            # cut at max_length: what a fast tokenizer's encoding still holds beyond it (free to read here)
            data[TRUNCATED] = [bool(e.overflowing) for e in enc.encodings] if enc.encodings else None
            if data[TRUNCATED] is None:   # a slow tokenizer: the untruncated lengths say it
                full = tokenizer(*texts, truncation=False)["input_ids"]
                data[TRUNCATED] = [len(ids) > max_length for ids in full]
            data["labels"] = split.labels
            data["idx"] = list(range(len(split)))
            return datasets.Dataset.from_dict(data)

        # (TRUNCATED in the key: a split cached before the column was kept is built again, once)
        return self.get_or_build([tokenizer_fingerprint(tokenizer), task.name, str(task.version), str(max_length),
                                  padding, split.source, TRUNCATED], build, hidden=(TRUNCATED,))

    def get_or_build(self, parts: list[str], build, hidden: tuple[str, ...] = ()):
        """The dataset `build()` makes, cached under a hash of `parts` (everything that changes its content).
        The returned dataset's format leaves out "length" (read it with lengths(ds)) and the `hidden` columns
        (host-side bookkeeping such as offsets, read from ds.data): what remains is what a batch holds."""
        import datasets

        datasets.disable_progress_bars()
        key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
        if key in self._memory:
            return self._memory[key]
        path = os.path.join(self.cache_dir, "tokenized", key) if self.cache_dir else None
        if path and os.path.isfile(os.path.join(path, "dataset_info.json")):
            ds = datasets.load_from_disk(path)
        else:
            ds = build()
            if path:
                tmp = f"{path}.tmp{os.getpid()}"
                ds.save_to_disk(tmp)
                try:
                    os.replace(tmp, path)  # atomic: a concurrent writer cannot leave half a cache behind
                except OSError:
                    pass  # another process won the race; its copy is identical
                ds = datasets.load_from_disk(path if os.path.isdir(path) else tmp)
        ds = ds.with_format(columns=[c for c in ds.column_names if c != "length" and c not in hidden])
        self._memory[key] = ds
        return ds


def lengths(ds) -> list[int]:
    return ds.data.column("length").to_pylist()


TRUNCATED = "truncated"   # a hidden feature column: the example was cut at max_length


def truncated(ds) -> int | None:
    """How many of a split's examples were cut at max_length (None: its features do not say, e.g. SQuAD's
    windows, which cover the whole context by design)."""
    if TRUNCATED not in ds.column_names:
        return None
    return sum(ds.data.column(TRUNCATED).to_pylist())
