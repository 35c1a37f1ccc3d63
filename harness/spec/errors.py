"""Errors the CLI turns into one-line messages, and every exit code of `harness` (the EXIT_ names below: README's
"Exit codes" line lists each one, tests/package/test_docs.py checks it)."""

import difflib

EXIT_OK = 0
EXIT_FAILED = 1   # a cell failed (run), a record was left alone or conflicted (ingest), something is missing
                  # (prefetch --check), not every cell completed (slurm --wait), a store read at rest was
                  # written during the read (engine.StoreChanged)
EXIT_INPUT = 2    # bad input: one line naming the file / field / option, nothing written


class InputError(Exception):
    """Bad user input (suite file, flag, name). The CLI prints it on one line and exits EXIT_INPUT."""

    exit_code = EXIT_INPUT


class DataNotFoundError(RuntimeError):
    """A task's data could not be loaded from a local directory or the hub."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean "x"?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Preempted(Exception):
    """A stop signal (SIGUSR1, SIGUSR2 or SIGTERM: Slurm's warning before a time limit or preemption) arrived
    while a cell trained. The loop checkpointed the cell in its output directory before raising this; the runner
    gives the cell's claim back (it stays pending, so the next worker resumes it) and the worker exits with
    EXIT_PREEMPTED so a requeued Slurm task carries on. `step` of `total_steps`: where its loop checkpointed."""

    def __init__(self, message: str, step: int | None = None, total_steps: int | None = None):
        super().__init__(message)
        self.step, self.total_steps = step, total_steps


EXIT_PREEMPTED = 3
EXIT_STORE_UNREACHABLE = 4   # the store stayed out of reach: a result (kept on disk for `harness ingest`), or a
                             # claim of the next cell (no cell held)
EXIT_SLURM_UNREACHABLE = 5   # `harness slurm --wait`: squeue kept failing, so whether the job still runs is unknown
EXIT_GROUP_BROKEN = 6   # another rank's process ended: the cell was recorded failed and the worker can run no other
EXIT_BROKEN_PIPE = 141   # the reader of the output went away: what a shell reports for a command killed by SIGPIPE
                         # (128 + 13), as `yes | head -1` gives


class GroupBroken(RuntimeError):
    """Another rank of the worker's DDP group ended mid-cell (harness.launch.broken_group): the record's reason."""


class LeaseLostStop(Exception):
    """Another worker took this worker's cell over (its lease went stale) while it trained: the loop stopped at
    an optimizer step boundary (all ranks agree). The runner records nothing and moves no file into place."""
