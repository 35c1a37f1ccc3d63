"""Where a run's files live: the one object every module asks for a path (the runner, the loop, the store's
ingest, compare, ablate, the board, Slurm). Nothing else joins these names.

    OUTPUT_DIR/                      --output-dir (default results/)
      harness.db                     the default store (SQLite), sqlite:///results/harness.db
      cache/                         tokenized data; cache/features/ the frozen encoder's outputs (linear probe)
      slurm/  slurm-logs/            generated batch scripts and their logs (`harness slurm`)
      .harness-store.json            the store whose runs this folder holds (its id): another store is refused
      SUITE/KEY/                     one cell
        record.json                  the run record (the store's row, as a file)
        predictions.npz              every dev prediction, for paired comparisons and re-scoring
        predictions.json null_odds.json   SQuAD: the official formats
        adapter/                     the trained adapter (adapters' format) + harness_head.safetensors
        checkpoint.pt checkpoint/    a preempted cell's checkpoint (gone once the cell is recorded); it stays in
                                     the cell folder (not an attempt's), so whoever claims the cell next resumes it
        stageI-TASK/                 earlier stages of a sequential cell; TASK/: members of a multi-task cell
        .cell.lock                   locked while an attempt's files move in (harness.launch.attempt)
        .attempt-N-WORKER/           everything one attempt writes (record.json, predictions, adapter/, error.log,
                                     stage / member folders); moved into the cell folder above only by the
                                     accepted finish, after the store committed it (record.json last). So a
                                     record.json in the cell folder proper is one the store accepted, except a
                                     fallback record marked "ingest_only" (the store was unreachable at finish)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

DEFAULT_OUTPUT_DIR = "results"
DB_FILE = "harness.db"
DEFAULT_DB_URL = f"sqlite:///{DEFAULT_OUTPUT_DIR}/{DB_FILE}"

# a suite's name: a folder of the output directory (SUITE/KEY/), so never a path of its own ("../x", "a/b")
SUITE_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
SUITE_NAME_MAX = 100

STORE_MARK = ".harness-store.json"   # {"store_id", "db"}: OUTPUT_DIR's store (harness/launch/output_binding.py)
RECORD = "record.json"
PREDICTIONS = "predictions.npz"
ADAPTER = "adapter"
HEAD_FILE = "harness_head.safetensors"   # the task head, saved beside the adapter
CHECKPOINT = "checkpoint.pt"             # trainable weights, optimizer, scheduler, RNG, position
CHECKPOINT_DIR = "checkpoint"            # DeepSpeed's engine state (accelerate's save_state)


ATTEMPT_PREFIX = ".attempt-"
CELL_LOCK = ".cell.lock"      # held (flock) by whoever moves an attempt's files into the cell folder
REPLACED_PREFIX = ".replaced-"   # an older file set aside while an attempt's one moves into its place
INGEST_ONLY = "ingest_only"   # a record.json written while the store was unreachable: for `harness ingest` only


def attempt_dir(cell_dir: str, attempt: int, worker_id: str) -> str:
    """The private folder of one attempt at a cell (its claim's attempt number and worker id)."""
    worker = re.sub(r"[^A-Za-z0-9._-]+", "_", worker_id).strip("._") or "worker"
    return os.path.join(cell_dir, f"{ATTEMPT_PREFIX}{attempt}-{worker}")


def is_attempt_dir(path: str) -> bool:
    """True for an attempt's private folder (or a path inside one): its files are not results (ingest skips
    them)."""
    return any(part.startswith(ATTEMPT_PREFIX) for part in os.path.normpath(path).split(os.sep))


def attempt_number(path: str) -> int | None:
    """The claim's attempt number an attempt folder is named by (attempt_dir); None for another name."""
    m = re.match(re.escape(ATTEMPT_PREFIX) + r"(\d+)-", os.path.basename(os.path.normpath(path)))
    return int(m.group(1)) if m else None


def attempt_dirs(cell_dir: str) -> list[str]:
    """Every attempt folder in a cell folder."""
    try:
        names = os.listdir(cell_dir)
    except OSError:
        return []
    return sorted(os.path.join(cell_dir, n) for n in names if n.startswith(ATTEMPT_PREFIX))


def checkpoint_paths(folder: str) -> list[str]:
    """Every checkpoint in a cell's output folder (its stage and member folders included), and the temporary
    files of checkpoints a kill interrupted (harness.atomic's `.checkpoint.pt.tmp-*`)."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f == CHECKPOINT or f.startswith(f".{CHECKPOINT}.tmp-")]
        if CHECKPOINT_DIR in dirs:
            found.append(os.path.join(root, CHECKPOINT_DIR))
            dirs.remove(CHECKPOINT_DIR)
    return found


def stage_dir(cell_dir: str, index: int, task: str) -> str:
    """An earlier stage of a sequential cell (the last stage is the cell's own folder)."""
    return os.path.join(cell_dir, f"stage{index}-{task}")


def member_dir(cell_dir: str, task: str) -> str:
    """One member task of a multi-task cell."""
    return os.path.join(cell_dir, task)


@dataclass(frozen=True)
class RunLayout:
    """The folders under one output directory (see the module's docstring)."""

    root: str = DEFAULT_OUTPUT_DIR

    def cell_dir(self, suite: str, key: str) -> str:
        return os.path.join(self.root, suite, key)

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.root, "cache")

    @property
    def slurm_scripts(self) -> str:
        return os.path.join(os.path.abspath(self.root), "slurm")

    @property
    def slurm_logs(self) -> str:
        return os.path.join(os.path.abspath(self.root), "slurm-logs")


def features_dir(cache_dir: str) -> str:
    """The frozen encoder's cached outputs inside a cache folder."""
    return os.path.join(cache_dir, "features")
