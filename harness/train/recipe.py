"""The recipe every cell runs: one training loop shared by every method and task kind (on Accelerate: 1
process, DDP, DeepSpeed, mixed precision).

A cell (harness/spec/cell.py) is the config; `CellRun` is the recipe, read top to bottom as named steps:

    set_up_model   load the model for each task, apply the method (what is added, what trains)
                   -> harness/train/model_setup.py
    set_up_data    features (tokenized once, cached), loaders, optimizer, scheduler, the exact step count
                   -> harness/train/loaders.py, harness/train/optim.py
    fit            AdamW with linear warmup and decay, gradient clipping and accumulation, budgets enforced
                   exactly (epochs, optimizer steps, sample caps, wall clock), a checkpoint on a stop signal
    evaluate       every dev split of every task, after each epoch or every eval_steps steps, and at the end
                   -> harness/train/evaluation.py
    record         the typed RunResult (harness/train/result.py) with cost (harness/train/measure.py);
                   predictions and the trained adapter written to the cell's folder

What a schedule asks beyond one task (multi-task mixture, sequential hand-over) lives in
harness/train/schedules.py; `train_and_evaluate` runs a sequential cell's stages one after the other. Raises on
failure (the runner records the reason).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Callable

import numpy as np
import torch

from harness.spec import layout
from harness.spec.cell import Cell
from harness.spec.errors import LeaseLostStop, Preempted
from harness.spec.hparams import COMPILE_DEFAULT
from harness.spec.methods import get_method
from harness.spec.models import ModelSpec
from harness.spec.schedule import Sequence
from harness.spec.status import Regime
from harness.spec.tasks import get_task
from harness.tasks.data import skipped_record, truncated
from harness.tasks.kinds import kind_of
from harness.train import checkpoint, compiling, features, preempt, sync, tracking
from harness.train.checkpoint import CellCheckpoint
from harness.train.context import RunContext, make_accelerator, quiet_libraries
from harness.train.evaluation import evaluate_task, predict
from harness.train.flops import FlopMeter, encoder_pass_flops, flops_fields
from harness.train.host_memory import keep_freed_blocks
from harness.train.loaders import eval_loader, eval_sets_for, train_loader
from harness.train.measure import PeakMemory, batch_counts, cost_fields, real_rows
from harness.train.model_setup import adapter_source, build_model, save_adapter
from harness.train.models import attention_of, dropout_masks, model_source, training_forward
from harness.train.optim import (accumulating, closes_step, make_optimizer, make_scheduler, optimizer_steps,
                                 planned_steps)
from harness.train.peaks import device_peak, override
from harness.train.precision import (cast_frozen_weights, cell_shape, choose_precision, heads_in_full_precision,
                                     model_step)
from harness.train.progress import Progress
from harness.train.result import RunResult
from harness.train.schedules import TaskMixture, encoder_checksum, handover_checksum, handover_state
from harness.train.zero import gathered, numel, under_deepspeed


def train_and_evaluate(cell: Cell, ctx: RunContext, output_dir: str | None = None, checkpoint_dir: str | None = None,
                       lease_lost: Callable[[bool], bool] | None = None,
                       started_over: Callable[[], None] | None = None) -> RunResult:
    """Train and evaluate one cell. A sequential cell runs its stages one after the other, each through the same
    loop, handing the encoder on; the last stage is the cell's result and the others are its `stages`.

    `output_dir` receives the files (predictions, adapter/; the runner passes the attempt's own folder);
    `checkpoint_dir` (default: `output_dir`) is where a stop signal's checkpoint is written and resumed from (the
    runner passes the cell folder, which outlives attempts). `lease_lost` (rank 0 only) is asked at every
    optimizer step, told whether a stop signal came (then it asks the store at once, before any checkpoint): when
    it says True, every rank stops and LeaseLostStop is raised. `started_over` (rank 0 only; a cell that is not a
    sequence: the store keeps no stage's checkpoint step) is called when its loop starts from step 0 without
    resuming a checkpoint."""
    checkpoint_dir = checkpoint_dir or output_dir
    tracked = tracking.for_cell(ctx.trackers, cell)   # one tracker run for the whole cell, stages included
    if not isinstance(cell.schedule, Sequence):
        return CellRun(cell, ctx, [get_task(t) for t in cell.tasks], output_dir, checkpoint_dir=checkpoint_dir,
                       lease_lost=lease_lost, tracked=tracked, started_over=started_over).run()
    stages, handover = [], None

    def within(folder, i):   # a stage's own folder: the last stage's is the cell's
        return folder if i == len(cell.tasks) - 1 or folder is None else layout.stage_dir(folder, i, cell.tasks[i])

    # a later stage's checkpoint: the stages before it are trained again (their hand-over), and the cell's tracker
    # run, which the checkpoint names, already holds their points
    resumes_at = max((i for i in range(len(cell.tasks)) if checkpoint.held(within(checkpoint_dir, i))), default=0)
    for i, task_name in enumerate(cell.tasks):
        last = i == len(cell.tasks) - 1
        stage_dir = within(output_dir, i)
        tracked.replaying = i < resumes_at
        result = CellRun(cell, ctx, [get_task(task_name)], stage_dir, handover=handover, keep_state=not last,
                         checkpoint_dir=within(checkpoint_dir, i), lease_lost=lease_lost, tracked=tracked,
                         metric_prefix=f"{task_name}/", stages_before=stages if last else None).run()
        tracked.step_offset += result.steps   # the next stage's steps follow on in the same tracker run
        if not last:
            handover = {"state": result.state, "mode": cell.schedule.adapter}
            result.state = None
            result.task, result.stage, result.output_dir = task_name, i, stage_dir
            result.regime = Regime.SEQUENTIAL_STAGE
            stages.append(result)
    return result


def whole_sequence(stages: list, result: RunResult, processes: int) -> None:
    """A sequential cell's record: its last stage's result (`result`, changed in place) with the cost of the whole
    sequence (training time, resumes, FLOPs, MFU: its stage rows keep their own) and the earlier stages as rows.
    Done where the last stage records, before its tracker summary, so that the tracker's `final/...` values are
    the record's."""
    whole = stages + [result]
    result.stages = stages
    for name in ("data_sources", "data_skipped", "data_truncated"):   # {task: ...}: each stage's own tasks
        setattr(result, name, {k: v for r in whole for k, v in (getattr(r, name) or {}).items()})
    result.stage_train_time_s = result.train_time_s
    result.train_time_s = sum(r.train_time_s for r in whole)
    resumes = [r.resume_s for r in whole if r.resume_s is not None]
    result.resume_s = sum(resumes) if resumes else None   # ... and of its stages' resumes, outside it
    for name in ("train_flops", "eval_flops"):
        parts = [getattr(r, name) for r in whole]
        setattr(result, name, sum(parts) if all(p is not None for p in parts) else None)
    if result.train_flops and result.train_time_s > 0:
        result.flops_per_s = result.train_flops / result.train_time_s
        peak = (result.device_peak or {}).get("flops_per_s")
        result.mfu = result.flops_per_s / (peak * processes) if peak else None


def data_skipped(tasks, train_raw, eval_sets) -> dict:
    """{task: {split: skipped_record}} of the splits a run read in which rows of the file were skipped as
    malformed (harness/tasks/data.py): {} where none was, so a record says it was checked (older ones say nothing).
    Only the rows among the examples read count: a cap reads the file's first rows."""
    out = {}
    for task, raw, sets in zip(tasks, train_raw, eval_sets):
        splits = {"train": raw.skipped, **{es.split: es.raw.skipped for es in sets}}
        of_task = {split: skipped_record(rows) for split, rows in splits.items() if rows}
        if of_task:
            out[task.name] = of_task
    return out


def data_truncated(tasks, train_sets, eval_sets) -> dict:
    """{task: {split: examples cut at max_length}} of the splits a run read where some were ({} where none was;
    a task kind whose features do not say is left out): a score at max_length 128 on RTE is over 12% of its pairs
    cut short, which only this tells."""
    out = {}
    for task, ds, sets in zip(tasks, train_sets, eval_sets):
        counts = {"train": truncated(ds), **{es.split: truncated(es.dataset) for es in sets}}
        of_task = {split: n for split, n in counts.items() if n}
        if of_task:
            out[task.name] = of_task
    return out


def multitask_trivial(per_task: list[dict]) -> dict | None:
    """A multi-task cell's own row scores the mean over its tasks, so its trivial baseline is the mean over its
    tasks of each task's strongest trivial baseline; each member row keeps its own task's baselines."""
    best = [max(b.values()) for b in per_task if b]
    return {"tasks_mean": float(np.mean(best))} if best and len(best) == len(per_task) else None


class CellRun:
    """One training run over one task (or several, multi-task), read as named steps:

        set_up_model -> set_up_data -> fit (which calls evaluate) -> record

    Every method and every task kind goes through these same steps; a method only decides (in set_up_model)
    what is added and what trains, a task kind (harness/tasks/kinds.py) how data, head, predictions and
    metrics work. Raises on failure (the runner records the reason)."""

    def __init__(self, cell: Cell, ctx: RunContext, tasks: list, output_dir: str | None,
                 handover: dict | None = None, keep_state: bool = False, checkpoint_dir: str | None = None,
                 lease_lost: Callable[[bool], bool] | None = None, tracked=None, metric_prefix: str = "",
                 stages_before: list | None = None, started_over: Callable[[], None] | None = None):
        self.cell, self.ctx, self.tasks, self.output_dir = cell, ctx, tasks, output_dir
        # the cell's tracker run (harness.train.tracking); a sequential cell's stages share one, each stage's dev
        # metrics under its task's name
        self.tracked = tracked if tracked is not None else tracking.for_cell(ctx.trackers, cell)
        self.metric_prefix = metric_prefix
        self.stages_before = stages_before   # a sequential cell's last stage: the earlier stages' results
        self.checkpoint_dir = checkpoint_dir or output_dir
        self.lease_lost = lease_lost
        self.started_over = started_over   # rank 0: the loop starts from step 0 (train_and_evaluate)
        self.handover, self.keep_state = handover, keep_state
        self.method, self.hp, self.budget = get_method(cell.method), cell.hparams, cell.budget
        self.sequential = isinstance(cell.schedule, Sequence)
        self.multi = len(tasks) > 1
        self.kinds = [kind_of(t) for t in tasks]
        self.trains = self.method.trains(cell.method_params)
        self.frozen_cast = None

    def run(self) -> RunResult:
        from accelerate.utils import set_seed

        quiet_libraries()
        if not torch.cuda.is_available():   # before `auto` times its steps: they free what a cell's steps free
            keep_freed_blocks()
        override("bf16")   # a malformed HARNESS_PEAK_FLOPS fails the cell now, not after training
        # the model's own matmul shape: what `auto` measures bf16 against fp32 at, and where MFU's peak is timed
        self.shape = cell_shape(self.cell, self.ctx.model_base_dir)
        self.precision_choice = self._choose_precision()
        self.acc = make_accelerator(self.cell, find_unused_parameters=self.multi,
                                    mixed_precision=self.precision_choice["chosen"], tracking=self.tracked)
        self.flops = FlopMeter()
        self.main = self.acc.is_main_process
        set_seed(self.cell.seed)
        self.memory = PeakMemory(self.acc.device)
        outcome = "failed"
        try:
            self.set_up_model()
            self.set_up_data()
            self.fit()
            result = self.record()
            if self.stages_before is not None:
                whole_sequence(self.stages_before, result, self.acc.num_processes)
            if not self.keep_state:   # the cell's last stage: its summary closes the run
                self.tracked.log_summary(self.acc, result, self.step)
            outcome = "completed"
            return result
        except LeaseLostStop:
            outcome = "lost"
            raise
        except (Preempted, KeyboardInterrupt):
            outcome = "stopped"
            raise
        finally:   # a failure or a stop signal ends the tracker run too (a preempted one is continued on resume)
            self.tracked.finish(self.acc, outcome)
            self._release()

    def _choose_precision(self) -> dict:
        """`auto` resolved by measurement on rank 0 and broadcast: ranks timing at once would share the cores, and
        ranks that chose differently would train different numerics."""
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        state = PartialState()
        choice = None
        if state.is_main_process:
            choice = choose_precision(self.cell.hparams["mixed_precision"], cache_dir=self.ctx.cache_dir,
                                      shape=self.shape, step=model_step(self.cell, self.ctx.model_base_dir))
        if state.num_processes > 1:
            holder = [choice]
            broadcast_object_list(holder, from_process=0)
            choice = holder[0]
        return choice

    # --- steps ------------------------------------------------------------------------------------------------

    def set_up_model(self) -> None:
        """The model with the method applied (adapters added, what trains chosen), a regression head starting
        at the mean of the training targets; optimizer and scheduler come with the data (they need the number
        of steps)."""
        with self.acc.main_process_first():   # the examples the cell trains on (rank 0 fills the caches first)
            self.train_raw = [self.ctx.raw_data(t)["train"].head(self.budget.get("max_train_samples"))
                              for t in self.tasks]
        self.tokenizer, self.model, self.members, self.heads, self.counts = build_model(
            self.cell, self.ctx, self.tasks, self.handover, self.train_raw)
        # as loaded now: a folder edited while the cell trains is not what it trained from
        self.model_source = model_source(ModelSpec(self.cell.model, self.cell.trust_remote_code,
                                                   self.ctx.model_base_dir), self.members[0].config)
        self.adapter_source = adapter_source(self.cell, self.ctx.model_base_dir)
        if self.trains and self.counts["trainable_params"] == 0:
            raise RuntimeError("the method left no trainable parameter")
        self.checksum_start = encoder_checksum(self.members[0]) if self.sequential else None

    def set_up_data(self) -> None:
        """Features tokenized once per (tokenizer, task, length, data): rank 0 first so the others read its cache;
        loaders, the optimizer, the scheduler and the exact number of optimizer steps the budget allows."""
        from transformers import DataCollatorWithPadding

        cell, ctx, hp, budget, acc = self.cell, self.ctx, self.hp, self.budget, self.acc
        with acc.main_process_first():
            self.train_sets = [k.features(t, raw, self.tokenizer, hp, ctx.tokenized, training=True)
                               for t, k, raw in zip(self.tasks, self.kinds, self.train_raw)]
            self.eval_sets = [eval_sets_for(t, ctx, self.tokenizer, hp, budget) for t in self.tasks]
        self.truncated = data_truncated(self.tasks, self.train_sets, self.eval_sets)   # (before any swap below)
        # trivial baselines on the same train and dev examples, computed here (no model, cheap) so that a
        # failure shows before any training time is spent
        self.trivial = [k.trivial_baselines(t, raw, [(es.suffix, es.raw) for es in sets])
                        for t, k, raw, sets in zip(self.tasks, self.kinds, self.train_raw, self.eval_sets)]
        collator = DataCollatorWithPadding(self.tokenizer)
        # nothing below the head trains: the encoder runs once, the head trains on its cached output
        self.frozen = features.plan(cell, self.method, self.kinds, self.model,
                                    not self.multi and not self.sequential, ctx.cache_dir)
        self.masks_drawn: set[str] = set()   # who drew the training forwards' dropout masks (train/dropout.py)
        # torch.compile where the cell asks for it (harness/train/compiling.py; `auto`: on a GPU, for a cell long
        # enough to pay for its compile); never the cached-feature path, whose model is just a head on cached vectors
        self.compiled = not self.frozen and compiling.chosen(
            hp.get("compile", COMPILE_DEFAULT), acc.device.type,
            planned_steps(self.train_sets, hp, budget, acc.num_processes) if self.trains else 0,
            under_deepspeed(acc))
        if self.frozen:
            encoder, tokenized = getattr(self.model, self.model.base_model_prefix), (self.train_sets, self.eval_sets)
            # rank 0 runs the encoder pass and writes the features, the others read them: ranks that all ran it
            # did the same work twice, and each counted it in the summed FLOPs (a rank that cannot see the file,
            # on another node, still runs and counts its own pass)
            with acc.main_process_first():
                self.train_sets, self.eval_sets, collator = self.frozen.swap_in(
                    self.model, self.train_sets, self.eval_sets, collator, hp["eval_batch_size"],
                    acc.mixed_precision, acc.autocast, acc.device)
            self._count_encoder_pass(encoder, *tokenized, collator=DataCollatorWithPadding(self.tokenizer))
        else:   # frozen Linear weights in bf16 once, not cast at every forward (harness/train/precision.py)
            self.frozen_cast = cast_frozen_weights(
                self.members, acc.mixed_precision, bool(acc.native_amp), under_deepspeed(acc),
                self.sequential or self.keep_state or self.handover is not None)
        if self.compiled:   # compiled when it first runs: in the first step's time (train_time_s)
            collator = DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=compiling.pad_multiple(hp))
            compiling.compile_models(self.members)
        train_loaders = [train_loader(ds, hp, collator, cell.seed) for ds in self.train_sets]
        self.flat_eval = [es for sets in self.eval_sets for es in sets]
        for es in self.flat_eval:
            es.loader = eval_loader(es.dataset, hp["eval_batch_size"], collator)

        optimizer = make_optimizer(self.model, hp) if self.trains else None  # evaluation only: nothing to optimise
        if self.trains:
            self.model, optimizer, *loaders = acc.prepare(self.model, optimizer, *train_loaders,
                                                          *[es.loader for es in self.flat_eval])
        else:  # DDP refuses a model without trainable parameters: an evaluation-only model is not wrapped
            self.model = acc.prepare_model(self.model, evaluation_mode=True)
            loaders = list(acc.prepare(*train_loaders, *[es.loader for es in self.flat_eval]))
        self.optimizer = optimizer
        train_loaders = loaders[:len(self.tasks)]
        for es, dl in zip(self.flat_eval, loaders[len(self.tasks):]):
            es.loader = dl
        if any(len(dl) == 0 for dl in train_loaders):
            raise ValueError(f"task {self.tasks[0].name}: the training split is empty")
        self.mixture = TaskMixture.for_cell(cell, train_loaders)
        self.total_steps = optimizer_steps(len(self.mixture), hp, budget) if self.trains else 0
        self.scheduler = make_scheduler(optimizer, hp, self.total_steps) if self.trains else None

    def _count_encoder_pass(self, encoder, train_sets, eval_sets, collator) -> None:
        """The linear probe's encoder pass, where this cell ran it (not where the features came from the cache):
        training splits count as training FLOPs, dev splits as evaluation, as their time does."""
        bs, device, frozen = self.hp["eval_batch_size"], self.acc.device, self.frozen
        if frozen.computed["train"]:
            self.flops.extra_train += sum(encoder_pass_flops(encoder, ds, collator, bs, device) for ds in train_sets)
        n_eval = sum(len(sets) for sets in eval_sets)
        computed_eval = frozen.computed["eval"]
        if computed_eval and n_eval:   # (all dev splits or none in practice: they are cached together)
            total = sum(encoder_pass_flops(encoder, es.dataset, collator, bs, device) for sets in eval_sets
                        for es in sets)
            self.flops.extra_eval += total * computed_eval / n_eval

    def forward(self, t: int, batch: dict):
        return self.model(task_index=t, **batch) if self.multi else self.model(**batch)

    def fit(self) -> None:
        """The optimizer steps the budget allows, evaluating after every epoch (or every eval_steps steps) and
        once at the end; stops early on the time limit, raises on a non-finite loss. The loss and token counts
        add up on the device; the host reads them, and the ranks agree on stopping, at the steps
        harness/train/sync.py names (every SYNC_EVERY steps and wherever something is decided)."""
        hp, budget, acc, mixture = self.hp, self.budget, self.acc, self.mixture
        total_steps, time_limit = self.total_steps, self.budget.get("time_limit_min")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.history, self.eval_time = [], 0.0
        self.per_task = [{"history": [], "best": None, "predictions": {}} for _ in self.tasks]
        label = f"{'+'.join(t.name for t in self.tasks)}/{self.cell.method_label}"
        self.bar = Progress(total_steps, label, enabled=self.main, position=1, bars=self.ctx.show_progress)

        step, examples, loss_n, log_n, read_at = 0, 0, 0, 0, 0
        stopped_by, micro = (None, 0) if self.trains else ("evaluation_only", 0)
        self.model.train()
        epoch_idx = 0
        # --- preemption (harness/train/checkpoint.py): continue from this cell's checkpoint if it has one ---
        # a later stage's checkpoint holds on to the hand-over it was trained on (its frozen part)
        ckpt = CellCheckpoint(self.checkpoint_dir, self.cell.key, acc, self.model, self.optimizer, self.scheduler,
                              total_steps, start=(lambda: handover_checksum(self.handover)) if self.handover else None)
        mixture = ckpt.wrap(mixture)
        t_resume = time.perf_counter()
        saved = ckpt.resume() if self.trains else None
        self.checkpoint_refused = ckpt.refused
        if not saved and self.main and self.started_over is not None:
            self.started_over()   # before any step: the store's checkpoint step is no longer what this run resumes
        # reading the checkpoint and replaying the batches trained before the stop are not training: they are
        # timed on their own (extra.resume_s), and neither train_time_s nor a time budget counts them
        t_start = time.perf_counter()
        self.resume_s = t_start - t_resume if saved or ckpt.refused else None
        if saved:
            step, epoch_idx, micro, examples, loss_n, log_n, self.eval_time = (
                saved[k] for k in ("step", "epoch_idx", "micro", "examples", "loss_n", "log_n", "eval_time"))
            self.history, self.per_task = saved["history"], saved["per_task"]
            self.flops.load(saved.get("flops"))
            t_start -= saved["elapsed"]   # a time budget counts the time trained before the stop
            self.bar.update(step)
            read_at = step
        # on the device until a sync reads them: the loss since the last evaluation, the loss since the last
        # tracker point, the tokens trained on; `seen`: this rank's values at the last read, `over_ranks`: the two
        # loss sums added over every rank there. A checkpoint keeps both, so that a resumed cell's next train loss
        # (the record's and the tracker's) is the mean over the same micro-batches as an uninterrupted one's.
        start = ({"loss": saved["loss_sum"], "log_loss": saved["log_loss_sum"], "tokens": saved["tokens"]}
                 if saved else {})
        sums = sync.DeviceSums(acc.device, start)
        seen = {"loss": 0.0, "log_loss": 0.0, "tokens": 0.0, **start}
        over_ranks = dict(saved["loss_over_ranks"]) if saved else {"loss": 0.0, "log_loss": 0.0}
        # the tracker run starts here: a resumed cell continues the run its checkpoint names, from its step
        self.tracked.start(acc, saved.get("trackers") if saved else None, step if saved else None)
        log_every = self.tracked.log_every

        def mean_loss(name: str, n: int) -> float:
            """The mean loss over the micro-batches since `name`'s sum was zeroed: n on every rank (each rank runs
            as many micro-batches per optimizer step, and every epoch the same number of steps)."""
            return over_ranks[name] / max(n * acc.num_processes, 1)

        def check(flags) -> None:
            """What stops every rank at once, whatever else this sync decides."""
            nonfinite, lost = flags[0], flags[3]
            if lost:   # another worker holds the cell now: stop, write nothing, record nothing
                self.bar.close()
                raise LeaseLostStop(f"lease lost at step {step}/{total_steps}: another worker took the cell "
                                    f"over; this attempt stopped, nothing recorded")
            if nonfinite:   # seen at this sync; the loss is read every SYNC_EVERY steps, so it may be older
                raise FloatingPointError(
                    f"loss is not finite at step {step} (lr {hp['learning_rate']:g}; the loss is checked every "
                    f"{sync.SYNC_EVERY} optimizer steps: it went non-finite after step {read_at})")

        def evaluate_now(epoch: float) -> None:
            """Evaluates with the mean loss since the last evaluation, then starts the next one's sum at 0 on the
            device and in its host copy too: a checkpoint taken at this step saves the copy."""
            nonlocal loss_n
            self.evaluate(step, epoch, mean_loss("loss", loss_n))
            sums.zero("loss")
            seen["loss"], over_ranks["loss"], loss_n = 0.0, 0.0, 0

        def checkpoint_and_stop() -> None:
            """A stop signal on some rank, agreed on at this sync: every rank checkpoints here and the cell is
            given back."""
            ckpt.save({"step": step, "epoch_idx": epoch_idx, "micro": micro, "loss_n": loss_n,
                       "log_n": log_n, "loss_over_ranks": over_ranks,
                       "eval_time": self.eval_time, "elapsed": time.perf_counter() - t_start,
                       "history": self.history, "per_task": self.per_task,
                       "trackers": self.tracked.run_ids()},
                      own={"examples": examples, "tokens": seen["tokens"], "loss_sum": seen["loss"],
                           "log_loss_sum": seen["log_loss"], "flops": self.flops.state()})
            raise Preempted(f"{preempt.signal_name() or 'a stop signal'} at step {step}/{total_steps}: "
                            f"checkpointed in {ckpt.path}", step=step, total_steps=total_steps)

        # ---
        local = [False, False, False]   # the last optimizer step's host-side flags (out of time, stop, lost)
        while stopped_by is None:
            for t, batch in mixture:
                idx = batch.pop("idx")
                read = batch.pop("num_tokens", None)   # cached features: the tokens the encoder read for them
                # the split's examples, not the ones DDP repeats to even out a pass's last round (they train)
                rows = real_rows(self.mixture.loaders[t], len(idx), acc.process_index, acc.num_processes)
                # the first micro-batch(es) run under FlopCounterMode (harness/train/flops.py): same ops, counted
                closes = closes_step(micro, len(mixture), hp["gradient_accumulation_steps"])
                with accumulating(acc, self.model, closes), self.flops.train.batch(batch):
                    with training_forward(acc.device.type, acc.mixed_precision if acc.native_amp else "no",
                                          self.compiled, self.masks_drawn):
                        loss = self.forward(t, batch).loss
                    acc.backward(loss)
                    if closes and hp["max_grad_norm"]:
                        acc.clip_grad_norm_(trainable, hp["max_grad_norm"])
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                micro += 1
                batch_examples, batch_tokens = batch_counts(batch, read, rows)
                examples, loss_n, log_n = examples + batch_examples, loss_n + 1, log_n + 1
                sums.add(loss, batch_tokens)   # on the device: nothing waits here
                if not closes:
                    continue
                self.scheduler.step()
                step += 1
                # host-side flags, cheap to read; acted on at a sync, where every rank takes the same decision
                out_of_time = time_limit is not None and time.perf_counter() - t_start >= 60 * time_limit
                # (only rank 0 keeps the lease's heartbeat: its "lost lease" reaches the others through the sum);
                # the signal is read first: a lease asked about after a signal is checked before any checkpoint
                stop = preempt.requested()
                lost = self.lease_lost is not None and self.lease_lost(stop)
                local = [out_of_time, stop, lost]
                if not (sync.due(step, total_steps, hp.get("eval_steps"), log_every)
                        or (acc.num_processes == 1 and any(local))):   # alone, a stop needs no agreement
                    self.bar.update(1)
                    continue
                flags, seen, over_ranks = sync.read(acc, sums, local)
                check(flags)
                read_at = step
                self.bar.update(1, loss=f"{mean_loss('loss', loss_n):.4f}")   # the mean since the last eval
                if log_every and step % log_every == 0:   # the mean loss over the micro-batches since the last point
                    self.tracked.log_train(acc, step, mean_loss("log_loss", log_n), self.scheduler.get_last_lr()[0])
                    sums.zero("log_loss")
                    seen["log_loss"], over_ranks["log_loss"], log_n = 0.0, 0.0, 0
                epoch_now = epoch_idx + min(1.0, micro / len(mixture))
                if hp.get("eval_steps") and step % hp["eval_steps"] == 0 and step < total_steps:
                    evaluate_now(epoch_now)
                if step >= total_steps:
                    stopped_by = ("max_steps" if "max_steps" in budget and total_steps == budget["max_steps"]
                                  else "epochs")
                    break
                if flags[1]:
                    stopped_by = "time_limit"
                    break
                if flags[2]:   # a stop signal on some rank: all checkpoint this step, the cell is given back
                    checkpoint_and_stop()
            else:  # a whole epoch went by
                epoch_end = not hp.get("eval_steps") and step < total_steps   # evaluated here
                if epoch_end and sums.pending:   # its last steps were not read yet (every rank has the same count)
                    # a sync like any other: a stop raised since the last one is acted on here, not 25 steps on
                    flags, seen, over_ranks = sync.read(acc, sums, local)
                    check(flags)
                    read_at = step
                    if flags[1]:   # the final evaluation, after the loop, is this epoch's
                        stopped_by = "time_limit"
                    elif flags[2]:   # before the epoch's evaluation, which the resumed run does (micro: all of
                        checkpoint_and_stop()   # it); an epoch's last micro-batch ends a step (closes_step)
                epoch_idx += 1
                micro = 0
                if epoch_end and stopped_by is None:
                    evaluate_now(float(epoch_idx))
                continue
        self.epochs_done = epoch_idx + micro / len(mixture)
        if not self.history or self.history[-1]["step"] != step:
            self.evaluate(step, self.epochs_done, mean_loss("loss", loss_n) if loss_n else None)
        self.train_time = time.perf_counter() - t_start - self.eval_time
        if self.frozen:   # the encoder's one pass: training features count as training, dev ones as evaluation
            self.train_time += self.frozen.extract_s
            self.eval_time += self.frozen.eval_extract_s
        self.bar.close()
        self.step, self.examples, self.tokens, self.stopped_by = step, examples, int(seen["tokens"]), stopped_by

    def evaluate(self, step: int, epoch: float, train_loss: float | None) -> None:
        """Every dev split of every task: metrics, main score (the mean over tasks for a multi-task cell), the
        best evaluation so far per task, the latest predictions."""
        t0 = time.perf_counter()
        self.model.eval()
        scores, merged = [], {}
        for t, (task, kind, sets) in enumerate(zip(self.tasks, self.kinds, self.eval_sets)):
            metrics, score, preds = evaluate_task(
                task, sets, lambda es, t=t, kind=kind: predict(
                    self.model, es.loader, self.acc, self.flops.eval_forward(
                        lambda b: self.forward(t, b),
                        lambda n: real_rows(es.loader, n, self.acc.process_index, self.acc.num_processes)), kind,
                    self.hp))
            # a multi-task loss is over every task's batches (and losses): the joint row's history has it, a
            # member's would show it as its own task's
            entry = {"step": step, "epoch": round(epoch, 4), "metrics": metrics, "score": score,
                     "train_loss": None if self.multi else train_loss}
            rec = self.per_task[t]
            rec["history"].append(entry)
            rec["predictions"] = preds
            if rec["best"] is None or score > rec["best"]["score"]:
                rec["best"] = entry
            scores.append(score)
            merged.update({f"{task.name}_{k}" if self.multi else k: v for k, v in metrics.items()})
        self.model.train()
        entry = {"step": step, "epoch": round(epoch, 4), "metrics": merged, "score": float(np.mean(scores)),
                 "train_loss": train_loss}
        self.history.append(entry)
        self.eval_time += time.perf_counter() - t0
        self.tracked.log_eval(self.acc, step, entry, self.metric_prefix)
        self.bar.write(f"  eval step {step} epoch {epoch:.2f}: score {entry['score']:.2f} "
                       + " ".join(f"{k}={v:.2f}" for k, v in merged.items()))


    def record(self) -> RunResult:
        """The run's result (throughput summed and memory the maximum over ranks); rank 0 writes predictions
        and the trained adapter into the output directory."""
        acc, history = self.acc, self.history
        cost = cost_fields(acc, self.memory, self.examples, self.tokens, self.train_time)
        # the peak of the precision used (cached per host on CPUs, timed on rank 0 only: ranks timing at once
        # would share the cores); every rank takes part in the FLOP reduction. fp16 asked on a CPU is chosen as
        # "no" (choose_precision): Accelerate runs it in fp32, so its peak is fp32's
        peak = (device_peak(acc.mixed_precision, _peak_device(acc.device), self.ctx.cache_dir, self.shape)
                if self.main else None)
        cost.update(flops_fields(acc, self.flops, self.train_time, peak))
        final, best = history[-1], max(history, key=lambda e: e["score"])
        result = RunResult(
            **self.counts, **cost,
            train_time_s=self.train_time, eval_time_s=self.eval_time,
            steps=self.step, epochs_done=round(self.epochs_done, 4), stopped_by=self.stopped_by,
            train_examples=sum(len(raw) for raw in self.train_raw),
            eval_examples=sum(len(es.raw) for es in self.flat_eval),
            score=final["score"], metrics=final["metrics"],
            best_score=best["score"], best_metrics=best["metrics"], history=history,
            mixed_precision=acc.mixed_precision, distributed_type=str(acc.distributed_type),
            flop_count=self.flops.record(), device_peak=peak, precision_choice=self.precision_choice,
            # CPU kernels split their sums over the threads: a score is reproducible only at the same count
            num_threads=torch.get_num_threads(),
            attn_implementation=attention_of(self.members[0]), compiled=self.compiled,
            dropout_masks=dropout_masks(acc.device.type, self.compiled, self.masks_drawn),
            frozen_cast=self.frozen_cast, host_allocator=self.memory.host_allocator,
        )
        result.trivial_scores = self.trivial[0] if not self.multi else multitask_trivial(self.trivial)
        unwrapped = acc.unwrap_model(self.model)
        first = unwrapped.members[0] if self.multi else unwrapped
        if self.frozen:
            result.frozen_features = self.frozen.record()
        result.checkpoint_refused = getattr(self, "checkpoint_refused", None)
        result.resume_s = getattr(self, "resume_s", None)
        result.model_source, result.adapter_source = self.model_source, self.adapter_source
        result.data_sources = {task.name: {"train": raw.source, **{es.split: es.raw.source for es in sets}}
                               for task, raw, sets in zip(self.tasks, self.train_raw, self.eval_sets)}
        result.data_skipped = data_skipped(self.tasks, self.train_raw, self.eval_sets)
        result.data_truncated = self.truncated
        if acc.mixed_precision != "no":
            result.head_outside_autocast = sorted({name for m in self.members
                                                   for name in heads_in_full_precision(m)}) or None
        if self.checksum_start is not None:
            result.encoder_checksum = {"start": self.checksum_start, "end": encoder_checksum(first)}
        if self.keep_state:
            result.state = handover_state(first)
        if self.multi:
            result.members = [
                RunResult(task=task.name, score=rec["history"][-1]["score"], metrics=rec["history"][-1]["metrics"],
                          best_score=rec["best"]["score"], best_metrics=rec["best"]["metrics"],
                          history=rec["history"],
                          head_params=sum(numel(p) for n, p in m.named_parameters() if n in head),
                          # its own task's examples, trained and scored (time, steps, FLOPs: the joint run's)
                          train_examples=len(raw), eval_examples=sum(len(es.raw) for es in sets),
                          output_dir=os.path.join(self.output_dir, task.name) if self.output_dir else None,
                          regime=Regime.MULTITASK_MEMBER, stage=i, trivial_scores=trivial)
                for i, (task, rec, m, head, raw, sets, trivial) in enumerate(zip(
                    self.tasks, self.per_task, unwrapped.members, self.heads, self.train_raw, self.eval_sets,
                    self.trivial))]
        # ZeRO-3: the full adapter and head tensors (trainable) for the files; every rank takes part in the gather
        with gathered([p for p in first.parameters() if p.requires_grad]):
            if self.main and self.output_dir:
                outs = ([(m.output_dir, rec) for m, rec in zip(result.members, self.per_task)] if self.multi
                        else [(self.output_dir, self.per_task[0])])
                for task, kind, (out, rec) in zip(self.tasks, self.kinds, outs):
                    os.makedirs(out, exist_ok=True)
                    kind.save_predictions(task, out, rec["predictions"])
                if self.method.uses_adapters and self.trains and not self.multi:
                    adapter_dir = os.path.join(self.output_dir, layout.ADAPTER)
                    result.adapter_bytes = save_adapter(first, self.heads[0], adapter_dir)
                    result.adapter_path = adapter_dir
        return result

    def _release(self) -> None:
        if getattr(self, "compiled", False):
            compiling.release()
        for name in ("model", "optimizer", "mixture", "flat_eval", "members", "eval_sets"):
            self.__dict__.pop(name, None)
        self.acc.free_memory()
        gc.collect()


def _peak_device(device) -> str:
    """"cuda:N" for a GPU (its name picks the table row), "cpu" otherwise."""
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return "cpu"
