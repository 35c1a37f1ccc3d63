"""Runs a suite as one worker: claims the next free cell from the store, trains it, records it, until no cell
is left. Any number of workers (processes, nodes, Slurm array tasks) can run the same suite on one store: the
store hands each cell to one of them (harness.store.queue).

Every process of an `accelerate launch` runs this; rank 0 claims (and broadcasts the claimed cell), keeps the
lease's heartbeat and is the only one that writes to the store or the output directory: the group of ranks is
one worker.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import sys
import threading
import time
import traceback

from sqlalchemy.exc import SQLAlchemyError

from harness.spec import layout
from harness.spec.errors import (EXIT_FAILED, EXIT_GROUP_BROKEN, EXIT_OK, EXIT_PREEMPTED, EXIT_STORE_UNREACHABLE,
                                 LeaseLostStop, Preempted)
from harness.launch import attempt, broken_group
from harness.launch.output_binding import bind_output_dir
from harness.launch.slurm import requeue_slurm_task
from harness.launch.summary import end_line, queue_summary, start_line
from harness.launch.worker import Heartbeat
from harness.spec.status import lease_timeout, lease_timing
from harness.plan.grid import Suite
from harness.report.progress import cell_states, predict_claimed
from harness.spec.status import Regime, Status
from harness.store.db import Store
from harness.store.engine import sqlite_location_warning
from harness.store.env import cpu_threads_warning, device_name, environment
from harness.store.lease import Claim, current_worker
from harness.store.queue import LeaseLost
from harness.store.schema import RUN_COLUMNS
from harness.train import checkpoint, preempt
from harness.train.context import RunContext, process_state
from harness.train.recipe import train_and_evaluate
from harness.train.progress import Progress
from harness.train.tracking import Trackers
from harness.train.result import RunResult


WAIT = "wait"   # what rank 0 broadcasts while only other workers' cells are left
STOP = "stop"   # ... and after a stop signal (harness.train.preempt): no further claim
NEXT = "next"   # ... when it recorded the claimed cell's kept result (_record_kept): the next claim
GONE = "gone"   # ... when the store stayed unreachable while it recorded that: this worker stops
ABLATION = "adapter_ablation"   # the analysis kind of the suite's `ablate` entries


def suite_digest(suite_path: str) -> str | None:
    """sha256 of the suite file's bytes: which suite a stored command ran, even after the file moved or changed."""
    import hashlib

    try:
        with open(suite_path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def reproduce_command(suite_path: str, num_processes: int, db_url: str | None = None,
                      output_dir: str | None = None, data_dir: str | None = None, cache_dir: str | None = None) -> str:
    """The command that re-runs a cell of this suite into the same store and output folder: the suite's absolute
    path (and its content hash, as a comment), the store's URL with its password hidden (harness.store.redact;
    docs/cluster.md says how to pass it), the absolute output folder, and the absolute data and cache folders
    where the command line named them (without them the re-run reads the suite's or $HARNESS_DATA_DIR's data)."""
    from harness.store.engine import absolute_db_url, default_db_url
    from harness.store.redact import redact_url

    q = shlex.quote
    launcher = ("accelerate launch" if num_processes == 1 else
                f"accelerate launch --multi_gpu --num_processes {num_processes}")
    path = os.path.abspath(suite_path)
    parts = [launcher, "-m harness.run", q(path), "--db", q(redact_url(absolute_db_url(db_url or default_db_url())))]
    for option, folder in (("--output-dir", output_dir), ("--data-dir", data_dir), ("--cache-dir", cache_dir)):
        if folder:
            parts += [option, q(os.path.abspath(folder))]
    parts.append("--retry-failed")
    digest = suite_digest(path)
    return " ".join(parts) + (f"   # suite sha256:{digest}" if digest else "")


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) < 2000 else text[:2000] + " …"


def report_failure(exc: BaseException, cell, cell_dir: str, took: float, bar: Progress, verbose: bool,
                   rank: int, write_dir: str | None = None) -> str:
    """A failed cell: one line on screen (type, message, the cell's label), the full traceback in the cell's
    error.log (and on screen with --verbose). Returns the store's error text: that line's reason, then the
    traceback (status and the leaderboard show the first line). `rank`: this process's in its DDP world; rank 0
    writes the file and the line, every other rank a line of its own: a failure of its own (its memory, its GPU)
    breaks the group, and rank 0's record then names only the broken connection."""
    from harness.store.redact import redact_text

    # a URL's password in an exception (a tracker's, a store's) never reaches the log file or the screen
    reason = redact_text(_error_text(exc).splitlines()[0]) if str(exc).strip() else type(exc).__name__
    trace = redact_text("".join(traceback.format_exception(exc)))
    log = os.path.join(cell_dir, attempt.ERROR_LOG)   # written in the attempt's folder, moved here on finish
    if rank != 0:
        print(f"rank {rank}: cell {cell.key}: FAILED after {took:.0f}s: {reason}", file=sys.stderr, flush=True)
        if verbose:
            print(trace, file=sys.stderr, end="", flush=True)
    else:
        try:
            os.makedirs(write_dir or cell_dir, exist_ok=True)
            with open(os.path.join(write_dir or cell_dir, attempt.ERROR_LOG), "w", encoding="utf-8") as f:
                f.write(f"cell {cell.key}: {cell.label}\n{trace}")
        except OSError as e:   # the failure is still recorded in the store
            log = f"(not written: {e.strerror})"
        if verbose:
            print(trace, file=sys.stderr, end="", flush=True)
        bar.write(f"cell {cell.key}: FAILED after {took:.0f}s: {reason} [{cell.label}] (traceback: {log})")
    return f"{reason}\n{trace}"


def run_suite(suite: Suite, db_url: str | None, data_dir: str | None, output_dir: str, retry_failed: bool,
              cache_dir: str | None = None, show_progress: bool = True, heartbeat_s: float | None = None,
              lease_timeout_s: float | None = None, verbose: bool = False, trackers: dict | None = None) -> int:
    """_run_suite on the store, opened on rank 0 only and closed however the worker ends: on SQLite its last
    connection closing writes the -wal into the file and removes it, so the file alone holds every run (left
    open, a worker's commits stayed in harness.db-wal after it ended, and a copy of harness.db held none).
    A worker stopped by a signal, or by a store out of reach, then requeues its Slurm task: `scontrol requeue`
    ends this job's processes, so it comes only once the store is closed (before it, the cell given back was
    left in the -wal of a process killed with the store open). The requeue comes however the close ends: a close
    that raised skipped it, and the task stayed out of the queue until someone submitted the suite again."""
    with _joining():
        main = process_state().is_main_process
    store = Store(db_url) if main else None
    code = None
    try:
        code = _run_suite(store, suite, db_url, data_dir, output_dir, retry_failed, cache_dir, show_progress,
                          heartbeat_s, lease_timeout_s, verbose, trackers)
    finally:
        try:
            if store is not None:
                _close(store)
        finally:
            if main and code in (EXIT_PREEMPTED, EXIT_STORE_UNREACHABLE):
                requeue_slurm_task()
    return code


def _joining():
    """Around the first join of a launcher's ranks (torch's rendezvous): a stop signal ends a rank whose peers never
    come (harness.train.preempt.ends_wait), and its rank 0 requeues the Slurm task, as run_suite's end does."""
    from harness.launch.workers import launcher_rank, launcher_ranks

    if launcher_ranks() <= 1:
        return contextlib.nullcontext()
    # the launcher's own rank variable: accelerate sets RANK only inside the join (an MPI launcher never does)
    return preempt.ends_wait("waiting for the other ranks to join",
                             lambda: requeue_slurm_task() if launcher_rank() == 0 else None)


def _close(store: Store) -> None:
    """The store's connections closed. An error doing so is a warning: what the worker committed is in the store
    (on SQLite at worst still in its -wal, written back by the next connection), and the exit code stays what the
    worker did (a stopped one's 3, which its requeue and `harness run --workers`' parent go by)."""
    from harness.store.redact import redact_text

    try:
        store.engine.dispose()
    except Exception as exc:   # noqa: BLE001 -- SQLAlchemy's, the driver's, an OSError
        reason = redact_text(str(exc).splitlines()[0]) if str(exc).strip() else ""
        print(f"warning: closing the store failed ({type(exc).__name__}: {reason}); on SQLite its last commits may "
              f"be only in its -wal file until the next worker opens it", file=sys.stderr, flush=True)


def _run_suite(store: Store | None, suite: Suite, db_url: str | None, data_dir: str | None, output_dir: str,
               retry_failed: bool, cache_dir: str | None, show_progress: bool, heartbeat_s: float | None,
               lease_timeout_s: float | None, verbose: bool, trackers: dict | None) -> int:
    """Returns the exit code: 1 if a cell failed in this worker, EXIT_PREEMPTED if a stop signal came (the cell
    in progress was checkpointed and given back), EXIT_GROUP_BROKEN if another rank's process ended
    (harness.launch.broken_group), else 0. `trackers`: tracker name -> settings (one tracker run
    per cell, harness/train/tracking.py)."""
    from accelerate.utils import broadcast_object_list

    beat_s, timeout_s = lease_timing(heartbeat_s, lease_timeout_s)
    state = process_state()
    main = state.is_main_process
    output_dir = os.path.abspath(output_dir)
    cells = suite.cells(num_processes=state.num_processes)
    by_key = {c.key: c for c in cells}
    keys = [c.key for c in cells]
    command = reproduce_command(suite.path, state.num_processes, db_url, output_dir,
                                suite.data_dir(data_dir) if data_dir else None, cache_dir)
    worker = current_worker()

    def say(line: str) -> None:
        if main:
            print(line, file=sys.stderr, flush=True)

    def share(holder: list) -> RuntimeError | None:
        """Rank 0's holder to every rank; the collective's error when the group broke in between (a rank's
        process ended, or one hung past the group's timeout: broken_group.timed_out), else None."""
        try:
            broadcast_object_list(holder, from_process=0)
        except RuntimeError as exc:
            if not broken_group.broke(exc):
                raise
            return exc
        return None

    if main:
        bind_output_dir(output_dir, store)   # before any cell folder: another store's folder is refused
        for warning in (sqlite_location_warning(store.url), cpu_threads_warning(state.num_processes)):
            if warning:
                say(f"warning: {warning}")
        store.enqueue(cells, command, output_dir)
        n = queue_summary(store, suite, set(keys), output_dir)
        say(start_line(suite, len(cells), n, retry_failed, worker, state.num_processes))
    ctx = RunContext(data_dir=suite.data_dir(data_dir), cache_dir=cache_dir or layout.RunLayout(output_dir).cache_dir,
                     model_base_dir=os.path.dirname(os.path.abspath(suite.path)), show_progress=show_progress,
                     trackers=Trackers(suite.name, trackers, output_dir, suite.model.log_every) if trackers else None)
    total = n[Status.PENDING] + (n[Status.FAILED] if retry_failed else 0) if main else 0
    suite_bar = Progress(total, f"suite {suite.name}", enabled=main, unit="cell", bars=show_progress)
    done = failures = 0
    other_hosts_said = False
    poll_s = min(max(beat_s, 1.0), timeout_s / 3)
    waiting_said = False
    while True:
        holder = [None]
        if main and preempt.requested():
            holder[0] = STOP
        elif main:
            try:
                claim = attempt.with_store_retry(lambda: store.claim_next(
                    suite.name, keys, worker, retry_failed=retry_failed, lease_timeout_s=timeout_s, command=command,
                    output_root=output_dir), "claiming the next cell", say)
                if claim is not None:   # an earlier attempt's result kept in the cell folder is recorded, not trained
                    claim = _record_kept(store, claim, output_dir, suite_bar, say, beat_s) or claim
                if isinstance(claim, Claim):   # before any rank trains: a store gone now ends the worker here
                    _drop_failed_training(claim, output_dir)
                    try:
                        leased = _leased(store, claim, by_key[claim.cell_key], ctx.data_dir, say)
                    except attempt.StoreUnreachable as exc:
                        say(f"cell {claim.cell_key}: {exc}; the store is unreachable: this worker stops and keeps "
                            f"its lease (its requeued Slurm task takes the cell at once, any worker after the lease "
                            f"timeout)")
                        claim = GONE
                # nothing claimable but cells still running elsewhere (or given back since the claim): wait, since a
                # worker that dies leaves its cell to whoever is still there once its lease goes stale (a suite
                # finishes while one worker lives)
                holder[0] = claim if claim is not None else (WAIT if attempt.with_store_retry(
                    lambda: store.unfinished_count(suite.name, keys), "asking which cells still run", say) else None)
            except attempt.StoreUnreachable as exc:   # no cell held: nothing to keep
                say(f"suite {suite.name}: {exc}; the store is unreachable: this worker stops")
                holder[0] = GONE
            if store.backend == "sqlite" and not other_hosts_said and holder[0] is not GONE:
                try:   # advice only: a store that does not answer it now is asked again at the next claim
                    others = store.hosts_holding_leases(suite.name) - {worker.host}
                except SQLAlchemyError:
                    others = set()
                if others:
                    other_hosts_said = True
                    say(f"warning: workers on other hosts ({', '.join(sorted(others))}) share this SQLite store: "
                        f"its locking is only safe on one host; use PostgreSQL for several machines")
        broke = share(holder) if state.num_processes > 1 else None
        if broke is not None:   # a claimed cell did not start: it is given back
            left = holder[0]
            before = (f"cell {left.cell_key} {_give_back(store, left)}; " if main and isinstance(left, Claim)
                      else "")
            say(broken_group.stop_line(suite.name, preempt.signal_name(), before, hung=broken_group.timed_out(broke)))
            return EXIT_GROUP_BROKEN
        claim = holder[0]
        if claim is None:
            break
        if claim == STOP:
            say(f"suite {suite.name}: {preempt.signal_name() or 'stop signal'} received; no further cell claimed")
            return EXIT_PREEMPTED   # (run_suite requeues the Slurm task, once the store is closed)
        if claim == GONE:
            return _store_gone()
        if claim == NEXT:
            done += 1
            suite_bar.update(1)
            continue
        if claim == WAIT:
            if not waiting_said:
                waiting_said = True
                # (unfinished_count counts pending cells too: one given back since the claim is taken next poll)
                say(f"suite {suite.name}: no cell left to claim; waiting for the cells still unfinished (running on "
                    f"other workers, or given back since this worker's claim; a stale lease is taken over after "
                    f"{timeout_s:g}s without a heartbeat)")
            time.sleep(poll_s)
            continue
        waiting_said = False
        cell = by_key[claim.cell_key]
        cell_dir = layout.RunLayout(output_dir).cell_dir(suite.name, cell.key)
        attempt_dir = attempt.folder(cell_dir, claim)   # every file of this attempt; moved into place on finish
        how = {Status.RUNNING: ", taking over a stale lease", Status.FAILED: ", retrying a failure"}.get(
            claim.previous_status, "")
        suite_bar.write(f"cell {cell.key}: {cell.label} (attempt {claim.attempt}{how})")
        _freeze_libraries()   # (once per process)
        t0 = time.perf_counter()
        broken = hung = False   # another rank's process ended, or timed out (harness.launch.broken_group)
        try:
            with (Heartbeat(store, claim, beat_s) if main else contextlib.nullcontext()) as beat:
                # after a stop signal the store is asked at once (Heartbeat.lost_now): no checkpoint on a lost lease
                lost = (lambda stopping: beat.lost_now() if stopping else beat.lost) if beat is not None else None
                result = train_and_evaluate(cell, ctx, output_dir=attempt_dir, checkpoint_dir=cell_dir,
                                            lease_lost=lost, started_over=_started_over(store, claim, leased)
                                            if main else None)
            status, error = Status.COMPLETED, None
        except LeaseLostStop as exc:   # another worker holds the cell: nothing recorded, nothing moved
            if main:
                attempt.discard(attempt_dir)
                suite_bar.write(f"cell {cell.key}: {exc}")
            _release_memory()
            done += 1
            continue
        except (Preempted, KeyboardInterrupt) as stop:
            if main:
                attempt.discard(attempt_dir)   # the checkpoint is in the cell folder: the next claim resumes it
                why = "stopped by a signal, checkpointed" if isinstance(stop, Preempted) else "interrupted"
                say(f"cell {cell.key}: {why}; {_give_back(store, claim, _progress(cell, stop))}")
            if isinstance(stop, Preempted):
                return EXIT_PREEMPTED   # (run_suite requeues the Slurm task, once the store is closed)
            raise
        except (SystemExit, GeneratorExit):   # the process is ending: the worker with it, as on an interrupt
            raise
        # recorded, and the suite goes on (not after a rank's process ended); a BaseException too: the tokenizers
        # library's Rust panics are pyo3_runtime.PanicException, which is no Exception, and ended the worker with
        # its cell left running until the lease went stale
        except BaseException as exc:
            failures += 1
            status, result = Status.FAILED, RunResult()
            broken = state.num_processes > 1 and broken_group.broke(exc)
            if broken:   # its reason names what happened, not only the connection the collective found closed
                hung = broken_group.timed_out(exc)
                exc = broken_group.explained(exc, preempt.signal_name(), checkpoint.any_held(cell_dir))
            error = report_failure(exc, cell, cell_dir, time.perf_counter() - t0, suite_bar, verbose,
                                   state.process_index, write_dir=attempt_dir)
        gone = False
        if main:
            try:
                # recorded: a completed cell keeps no checkpoint, nor does a failed one (a retry starts over),
                # except after a rank's process ended: an earlier stop's checkpoint (every rank wrote it) is as
                # good as before, and a retry resumes it where its setup matches (harness.launch.broken_group)
                _record(store, claim, cell_dir, attempt_dir, status, error, result, state.num_processes,
                        suite_bar, time.perf_counter() - t0, say, beat_s, drop_checkpoint=not broken)
            except attempt.StoreUnreachable as exc:
                fields, children = result_fields(result, status, error, state.num_processes)
                path = attempt.keep_for_ingest(leased, claim, status, fields, children, attempt_dir, cell_dir)
                say(f"cell {cell.key}: {exc}; the store is unreachable: the result is kept in {path} "
                    f"(ingest_only: load it with `harness ingest`); this worker stops")
                gone = True
        if state.num_processes > 1 and not broken:   # every rank learns whether rank 0 could record
            holder = [gone]
            broke = share(holder)
            broken, hung, gone = broke is not None, broke is not None and broken_group.timed_out(broke), holder[0]
        if gone:
            return _store_gone()
        if broken:   # no further collective: no further cell
            say(broken_group.stop_line(suite.name, preempt.signal_name(), hung=hung))
            return EXIT_GROUP_BROKEN
        done += 1
        suite_bar.update(1)
        del result
        _release_memory()
    suite_bar.close()
    say(end_line(suite, done, failures))
    if state.num_processes > 1:
        # the ablations below are rank 0's alone and run no collective: every rank leaves the group first, so the
        # others end now instead of waiting for them at a barrier the group's timeout bounds (torch's 30 minutes:
        # past it they failed with a traceback, their launcher stopped rank 0 in its ablations, and the run ended 1)
        leave_process_group()
    if main and suite.model.ablate:
        try:
            failures += run_ablations(suite, store, ctx, say, worker, beat_s, timeout_s)
        except attempt.StoreUnreachable as exc:
            say(f"suite {suite.name}: {exc}; the store is unreachable: this worker stops (the next worker to finish "
                f"the suite runs the ablations left; one this worker held, once its lease goes stale)")
            return _store_gone()
        except Preempted as stop:   # the ablation it ran is recorded; those left go to whoever finishes the suite next
            say(f"suite {suite.name}: {stop}; the ablations left are run by the next worker to finish the suite "
                f"(this one's requeued Slurm task, where it has one)")
            return EXIT_PREEMPTED   # (run_suite requeues the Slurm task, once the store is closed)
    return EXIT_FAILED if failures else EXIT_OK


def result_fields(result: RunResult, status: str, error: str | None, num_processes: int) -> tuple[dict, list]:
    """The row's fields and its (key suffix, fields) stage / member rows."""
    env = environment(num_processes, result.mixed_precision, result.distributed_type)
    fields = {**result.columns(RUN_COLUMNS), "error": error, "env": env}
    children = [(suffix, {**child.columns(RUN_COLUMNS), "status": str(status), "env": env})
                for suffix, child in result.child_rows()]
    return fields, children


def _record(store: Store, claim: Claim, cell_dir: str, attempt_dir: str, status: str, error: str | None,
            result: RunResult, num_processes: int, bar: Progress, took: float, say, heartbeat_s: float,
            drop_checkpoint: bool = True) -> None:
    """One transaction: the row, its stage / member rows and the status; record.json is written (atomically)
    into the attempt's folder inside it, and the attempt's files are moved into the cell folder (record.json
    last) only after the commit (harness.launch.attempt); with `drop_checkpoint` the cell's checkpoint goes between
    the two. A lost lease records nothing and leaves the checkpoint (the new holder's). A store error is retried
    with backoff; raises attempt.StoreUnreachable when it persists (the lease renewed every `heartbeat_s`
    meanwhile)."""
    attempt.relocate(result, attempt_dir, cell_dir)
    fields, children = result_fields(result, status, error, num_processes)
    try:
        rec = attempt.finish_with_retry(store, claim, status, fields, children, attempt.record_writer(attempt_dir),
                                        say, heartbeat_s=heartbeat_s)
    except LeaseLost as exc:
        attempt.discard(attempt_dir)
        bar.write(f"cell {claim.cell_key}: {exc}")
        return
    if drop_checkpoint:   # after the commit, before the moves (attempt.settle relies on that order)
        attempt.remove_checkpoints(cell_dir)
    attempt.promote(attempt_dir, cell_dir)
    if status == Status.COMPLETED:
        bar.write(f"cell {claim.cell_key}: completed in {took:.0f}s, score {rec.score:.2f} "
                  f"(best {rec.best_score:.2f}), {rec.trainable_pct:.3g}% of {rec.total_params:,} params trainable")


def _progress(cell, stop: BaseException) -> tuple[int, int] | None:
    """(step, total steps) of the checkpoint a stop signal wrote, as the store keeps it for `harness status` to
    price the steps left. None for a sequential cell: its stages are loops of their own, and resuming a later
    stage trains the stages before it again, so one stage's step says little of the cell's time left."""
    step, total = getattr(stop, "step", None), getattr(stop, "total_steps", None)
    if step is None or not total or cell.regime == Regime.SEQUENTIAL:
        return None
    return step, total


def _started_over(store: Store, claim: Claim, leased: dict):
    """What the loop calls when it starts the claimed cell from step 0 (train_and_evaluate's started_over): the
    claim kept the step of the checkpoint it was to resume (Store.release), which `harness status` prices as done;
    refused (a requeue onto another device, another precision or code), that checkpoint is not what this attempt
    runs, and the row is emptied. None where the row holds no step. Advice only: a store that does not answer
    leaves it (the finish empties it)."""
    if leased.get("checkpoint_step") is None:
        return None

    def forget() -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            store.forget_checkpoint(claim)
        except (SQLAlchemyError, OSError):
            pass
    return forget


def _give_back(store: Store, claim: Claim, progress: tuple[int, int] | None = None) -> str:
    """Release a stopped cell's claim; what became of it, for the worker's line. A store that cannot be reached
    (the stop signal of a maintenance that takes the database down too) keeps the lease: the worker still stops
    and requeues its Slurm task, whose next incarnation takes its own lease at once (queue.claim_next), and any
    worker takes it after the lease timeout; either resumes the checkpoint. Raising here instead would end the
    worker before its requeue: the cell would wait out the timeout, and with every task of an array stopped at
    once, for a worker nobody starts."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        released = store.release(claim, progress)
    except (SQLAlchemyError, OSError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return (f"the store is unreachable ({reason}), so it keeps this worker's lease: a requeued task of this "
                f"worker, or any worker after the lease timeout, resumes it")
    if not released:
        return "its lease was no longer this worker's (another worker holds the cell now)"
    return "given back to the queue (the next worker resumes it)"


def _drop_failed_training(claim: Claim, output_dir: str) -> None:
    """A retried failure starts over, unless another rank's process ended it (harness.launch.broken_group: the
    stop's checkpoint it kept is what every rank wrote). Its checkpoint is normally gone at its finish, or at a
    worker start's settle; not where the failing worker was killed before that and this worker read the rows
    before the failure's commit, or where `harness ingest` recorded a failure kept while the store was
    unreachable: the retry resumed the failed training. Removed here, under this claim's lease (no other worker
    trains the cell) and before any rank reads it."""
    if claim.previous_status == Status.FAILED and not broken_group.recorded(claim.previous_error):
        attempt.remove_checkpoints(layout.RunLayout(output_dir).cell_dir(claim.suite, claim.cell_key))


def _leased(store: Store, claim: Claim, cell, data_dir: str | None, say) -> dict:
    """Right after a claim: the cell's time predicted from the store's runs on this device so far, written into its
    row (advice: `harness status` shows it beside the actual), then the row as leased, its prediction included:
    the base of a record kept for ingest when the store is unreachable at the finish (attempt.keep_for_ingest).
    That read is retried as a claim is; it was not, and a store that went down right after the claim ended the
    worker in a traceback, its lease held until it went stale. Raises attempt.StoreUnreachable."""
    predict_claimed(store, claim, cell, device_name(), data_dir)
    return attempt.with_store_retry(lambda: store.get(claim.id).as_dict(), "reading the claimed cell's row", say)


def _record_kept(store: Store, claim: Claim, output_dir: str, bar: Progress, say, heartbeat_s: float) -> str | None:
    """Right after a claim: the cell folder may hold the completed result of an earlier attempt, kept while the
    store was unreachable (its worker kept the lease and requeued its Slurm task; the requeued task, a worker on
    the host or any worker after the lease timeout claims the cell next). That result is recorded under this
    claim (attempt.record_kept) instead of training the cell again. NEXT when recorded, or when another worker
    took the cell meanwhile; GONE when the store stayed unreachable; None: nothing kept, train it."""
    cell_dir = layout.RunLayout(output_dir).cell_dir(claim.suite, claim.cell_key)
    attempt_dir = attempt.folder(cell_dir, claim)
    try:
        rec = attempt.record_kept(store, claim, attempt_dir, cell_dir, say, heartbeat_s)
    except LeaseLost as exc:
        attempt.discard(attempt_dir)
        bar.write(f"cell {claim.cell_key}: {exc}")
        return NEXT
    except attempt.StoreUnreachable as exc:   # its record.json stays: settle finds it if the commit went through
        say(f"cell {claim.cell_key}: {exc}; the store is unreachable: the kept result stays in {cell_dir} "
            f"(ingest_only); this worker stops")
        return GONE
    if rec is None:
        return None
    by = rec.extra["trained_by"]
    bar.write(f"cell {claim.cell_key}: recorded the result of attempt {by['attempt']} by {by['worker_id']}, kept in "
              f"its folder while the store was unreachable: score {rec.score:.2f}; not trained again")
    return NEXT


def _store_gone() -> int:
    """The store stayed unreachable: the lease is kept (not given back), since the cell's result is on disk and
    must not be trained again; the worker's Slurm task is requeued (run_suite) and its claim takes the result
    (_record_kept)."""
    return EXIT_STORE_UNREACHABLE


def run_ablations(suite: Suite, store: Store, ctx: RunContext, say, worker=None, heartbeat_s: float | None = None,
                  lease_timeout_s: float | None = None) -> int:
    """The suite's `ablate` entries: every matching completed single-task run without an ablation gets one.
    Every worker that finishes the suite comes here; each ablation is a work item claimed by one of them
    (Store.claim_analysis), leased while it runs; the others skip it. Returns the number that failed in this
    worker (each is reported; the others go on). Every store call is retried as a cell's are; raises
    attempt.StoreUnreachable when the store stays out of reach (an ablation claimed then keeps its lease until it
    goes stale), and Preempted when a stop signal has come: no further ablation is claimed (a worker that got
    Slurm's warning here ran every ablation left, past its time limit, and ended 0 without requeueing its task:
    the ones it had not reached waited for someone to run the suite again)."""
    from harness.analysis.ablate import ablate

    from harness.report.tables import best_setting_runs, runs_frame
    from harness.spec.methods import methods_with
    from harness.stats.selection import selectable_runs
    from harness.store.analyses import RunChanged

    def retried(call, what: str):   # as a cell's claim and finish: a short outage is waited out
        return attempt.with_store_retry(call, what, say)

    beat_s, timeout_s = lease_timing(heartbeat_s, lease_timeout_s)
    worker = worker or current_worker()
    done = {a.run_id for a in retried(lambda: store.analyses(suite.name, ABLATION), "reading the ablations done")}
    # the runs the tables choose from
    runs, _ = selectable_runs(retried(lambda: runs_frame(store, suite.name), "reading the suite's runs"))
    runs = runs[runs["regime"].isna() & runs["method"].isin(methods_with("ablatable"))]
    wanted: set[int] = set()
    for e in suite.model.ablate:
        match = runs[(runs["task"] == e.task if e.task else True) & (runs["method"] == e.method if e.method else True)]
        if e.runs == "all":
            wanted.update(int(i) for i in match["id"])
            continue
        for _, group in match.groupby(["model", "task", "method_label"]):
            wanted.add(int(best_setting_runs(group).sort_values("seed").iloc[0]["id"]))
    # from the suite file, never from the stored row
    trusted = {m.name: m.trust_remote_code for m in suite.model.models}
    failed = 0
    for run_id in sorted(wanted - done):
        if preempt.requested():   # Slurm's warning: the task's time is nearly up, and it must requeue (run_suite)
            raise Preempted(f"{preempt.signal_name() or 'a stop signal'} received; no further ablation claimed")
        try:
            claim = retried(lambda: store.claim_analysis(run_id, ABLATION, worker, timeout_s),
                            f"claiming the ablation of run {run_id}")
        except RunChanged as exc:   # deleted by hand since the runs were read (each ablation before it: minutes)
            failed += 1
            say(f"ablation of run {run_id} FAILED: {exc}")
            continue
        if claim is None:   # another worker runs it, or ran it
            continue
        rec = retried(lambda: store.get(run_id), f"reading run {run_id}")
        try:
            with _keep_alive(lambda: store.heartbeat_analysis(claim), beat_s):
                payload = ablate(rec, ctx, trust_remote_code=trusted.get(rec.model, False))
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:   # a tokenizers panic too, as in a cell (run_suite)
            failed += 1
            error = _error_text(exc)
            say(f"ablation of run {run_id} FAILED: {error}")   # (rec is None where the run went since the claim)
            retried(lambda: store.fail_analysis(claim, error), f"recording the ablation of run {run_id}")
            continue
        if not retried(lambda: store.finish_analysis(claim, payload), f"recording the ablation of run {run_id}"):
            say(f"ablation of run {run_id}: another worker took it over (this one missed its heartbeats); "
                f"not recorded")
            continue
        worst = min(payload["spans"], key=lambda s: s[2])
        say(f"ablation of run {rec.id} ({rec.task}, {rec.method_label}): {len(payload['spans'])} spans, baseline "
            f"{payload['baseline']:.2f}, worst {worst[2]:.2f} without layers {worst[0]}..{worst[1]}")
    return failed


@contextlib.contextmanager
def _keep_alive(beat, interval_s: float):
    """Calls `beat()` every `interval_s` on a thread while the block runs (a database hiccup: tried next time)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(interval_s):
            with contextlib.suppress(Exception):
                beat()

    thread = threading.Thread(target=loop, name="heartbeat-analysis", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def leave_process_group(code: int = 0) -> None:
    """Every rank waits for the others (rank 0 may still be recording), then the process group is torn down: a
    rank that exits while gloo's threads still serve the group can abort ("terminate called without an active
    exception"). Called at the end of the cells, before rank 0's ablations (then a no-op). `code`: run_suite's;
    after EXIT_GROUP_BROKEN no rank is waited for (one ended: the barrier would fail)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1 and code != EXIT_GROUP_BROKEN:
            dist.barrier()
        dist.destroy_process_group()


@functools.lru_cache(maxsize=1)
def _freeze_libraries() -> None:
    """Before this process's first cell: the libraries every cell imports (transformers and its auto classes,
    which bring its generation code, scikit-learn and SciPy; datasets) imported, and every object the process
    holds then frozen out of later collections (gc.freeze), as _release_memory freezes what survives the first
    cell. Without it the first cell's three full collections as it ends (accelerate's free_memory,
    CellRun._release, _release_memory) each walked them: ~500,000 objects, 0.2-0.3 s each on a 2-core AMD EPYC.
    The collector is off while they import (gc.freeze's documented pattern): its automatic full collections walked
    the process's objects three times more (~0.5 s), to find ~6,000 objects of the imports' garbage, frozen with
    the rest instead, once. What is frozen is the process's own (modules, the store, the suite, the run context)
    and still freed when its last reference goes. An import that fails is left to the cell: its own import raises
    it again, and it is recorded as the cell's failure."""
    import gc
    import importlib

    enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            importlib.import_module("datasets")
            getattr(importlib.import_module("transformers"), "AutoTokenizer")   # (a lazy module: the name imports it)
        except Exception:   # noqa: BLE001 -- see above
            pass
        gc.freeze()
    finally:
        if enabled:
            gc.enable()


@functools.lru_cache(maxsize=1)
def _freeze_first_cell_leftovers() -> None:
    import gc

    gc.freeze()


def _release_memory() -> None:
    """After each cell: what it left in reference cycles collected; after this process's first cell, what
    survives frozen out of every later collection (gc.freeze; the libraries were frozen before it:
    _freeze_libraries).

    Why freeze: a full collection walks every object the collector tracks, and once a cell has run that is about
    470,000 (torch's, transformers', adapters' and the store's modules, classes and caches, most of them imported
    as the first cell runs): 0.25-0.3 s per collection on a 2-core AMD EPYC. A cell collects twice as it ends
    (accelerate's free_memory and CellRun._release, so that its model and optimizer are gone before the next
    cell's peak memory starts counting): about 0.5 s per cell, half a minute of the demo's 56 cells. Frozen, those
    objects are skipped: a cell's collections then take milliseconds. A frozen object is still freed when its last
    reference goes; only a reference cycle among them that turns to garbage later is never collected: at most
    what the first cell left alive, once per process."""
    import gc

    import torch

    gc.collect()
    _freeze_first_cell_leftovers()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def status_rows(suite: Suite, store: Store | None, num_processes: int = 1,
                lease_timeout_s: float | None = None) -> list[dict]:
    """Per cell, its CellState: pending (queued, or not yet seen by any worker), running (a live lease), stale (a
    lease whose heartbeat is older than the lease timeout: the next worker takes it over), completed, failed
    (harness.report.progress.cell_states, as dicts)."""
    return [{"cell": cell, "status": state, "record": rec}
            for cell, state, rec in cell_states(suite, store, num_processes, lease_timeout(lease_timeout_s))]
