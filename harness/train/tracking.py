"""Experiment trackers (TensorBoard, MLflow, W&B and the others accelerate knows) through accelerate's own API:
`Accelerator(log_with=...)`, `init_trackers`, `log`, and each tracker's `finish`. The harness only builds the
arguments: one tracker run per cell, named by suite and cell key, tagged with model / task / method / seed.

    suite key           log_with: [tensorboard, mlflow]            (or a mapping: name -> settings)
                        log_every: 10                              (optimizer steps between train-loss points)
    command line        harness run SUITE --log-with tensorboard,mlflow     (replaces the suite's list)

What a run holds: the cell's resolved configuration as params (on a fresh start only: MLflow refuses a param
logged twice with another value), `train/loss` (mean over the micro-batches since the last point) and
`train/learning_rate` every `log_every` optimizer steps, every evaluation's metrics (`dev/score`, `dev/<metric>`)
and, at the end, the record's summary (`final/...`).

Settings the harness reads itself (everything else goes to the tracker's own constructor: SummaryWriter,
mlflow.start_run's tracker, wandb.init):
    tensorboard   logging_dir    events go to LOGGING_DIR/KEY/SUITE (default OUTPUT_DIR/tensorboard)
    mlflow        tracking_uri   e.g. sqlite:///results/mlflow.db (default: MLflow's own, MLFLOW_TRACKING_URI)
    wandb         dir            W&B's run folders (default OUTPUT_DIR); `mode: offline` is wandb.init's own

Resuming: the loop keeps `run_ids()` in the cell's checkpoint (harness/train/checkpoint.py); a resumed cell passes
them back (MLflow run_id, W&B id + resume="allow": offline, a second folder of the same id; TensorBoard appends to
the same folder) and its steps continue from the checkpoint's step (a sequential cell's earlier stages, trained
again before a later stage's checkpoint, log nothing: the run has their points; `replaying`). A checkpoint may be
older than the run's last points: a worker that resumed it and was then killed outright (SIGKILL, the OOM killer)
had logged the steps after it, which the next resume trains again. Each step stays one point: TensorBoard hides the
folder's points after the checkpoint (SummaryWriter's purge_step) and shows the retrained ones; MLflow cannot
remove a point, so a metric's steps that the run already holds are not logged again (on a CPU a resume is exact, the
same values; on a GPU, whose kernels are not deterministic (harness/train/checkpoint.py), MLflow keeps the killed
attempt's values for those steps while TensorBoard and the store hold the retrained ones). A new run moves an
earlier run's TensorBoard folder aside.
Only the main process logs: accelerate's init_trackers and log run on it alone. A tracker that fails (a server
down, a full disk) is reported on stderr and dropped for the rest of the cell; the cell itself goes on: its record
in the store is what counts.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

from harness.spec.trackers import DEFAULT_LOG_EVERY, TENSORBOARD_DIR


OUTPUT_TAG = "output_dir"   # an MLflow run's tag naming the output folder (so the store) it trained for


@dataclass(frozen=True)
class Trackers:
    """What a worker logs to, for every cell it runs: tracker name -> settings."""
    suite: str
    settings: dict
    output_dir: str
    log_every: int = DEFAULT_LOG_EVERY

    @property
    def names(self) -> list[str]:
        return list(self.settings)

    def tensorboard_root(self) -> str:
        given = (self.settings.get("tensorboard") or {}).get("logging_dir")
        return os.path.abspath(os.path.expanduser(given)) if given else os.path.join(self.output_dir, TENSORBOARD_DIR)


def _flat(prefix: str, value, out: dict) -> None:
    """Nested configuration -> flat scalar params (what TensorBoard's hparams and MLflow's params accept)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is None or isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    else:
        out[prefix] = str(list(value) if isinstance(value, tuple) else value)


def cell_params(cell) -> dict:
    params: dict = {}
    _flat("", cell.config(), params)
    params.update({"suite": cell.suite, "cell_key": cell.key, "method_label": cell.method_label})
    return {k: v for k, v in params.items() if v is not None}


class CellTracking:
    """One tracker run per cell, across the Accelerators of its stages (a sequential cell has one per stage; its
    steps are numbered on from stage to stage)."""

    def __init__(self, trackers: Trackers, cell):
        self.trackers, self.cell = trackers, cell
        self.ids: dict[str, str] = {}
        self.step_offset = 0
        self.active = False
        # True while a sequential cell's earlier stages are trained again before a later stage's checkpoint: their
        # points are held back, dropped if that checkpoint continues the run (which has them), else logged first
        # into the new run
        self.replaying = False
        self.held: list[tuple[dict, int]] = []
        # a resumed MLflow run's metrics -> the last step it holds (a killed attempt's points after the checkpoint)
        self.mlflow_logged: dict[str, int] = {}
        # the MLflow run came from a checkpoint: a worker that takes the cell over resumes the same run
        self.mlflow_shared = False
        self.run_name = f"{trackers.suite}/{cell.key}"
        self.log_every = trackers.log_every

    # --- the Accelerator's arguments ----------------------------------------------------------------------------

    def accelerator_kwargs(self) -> dict:
        from accelerate.utils import ProjectConfiguration

        kwargs = {"log_with": self.trackers.names}
        if "tensorboard" in self.trackers.names:   # accelerate writes LOGGING_DIR/PROJECT: here .../KEY/SUITE
            root = self.trackers.tensorboard_root()
            kwargs["project_config"] = ProjectConfiguration(project_dir=root,
                                                            logging_dir=os.path.join(root, self.cell.key))
        return kwargs

    def init_kwargs(self, ids: dict, resume_step: int | None = None) -> dict:
        """`resume_step`: the step (stages numbered on) of the checkpoint a resumed run continues from."""
        cell = self.cell
        tags = {"suite": cell.suite, "cell_key": cell.key, "model": cell.model, "task": "+".join(cell.tasks),
                "method": cell.method_label, "seed": str(cell.seed), OUTPUT_TAG: self._output_dir()}
        out = {}
        for name, given in self.trackers.settings.items():
            given = dict(given or {})
            if name == "tensorboard":
                given.pop("logging_dir", None)
                if resume_step is not None:   # points after the checkpoint are a killed attempt's: hidden
                    given["purge_step"] = resume_step + 1
            elif name == "mlflow":
                given.pop("tracking_uri", None)
                given["tags"] = {**tags, **(given.get("tags") or {})}
                given["run_name"] = self.run_name
                if ids.get("mlflow"):
                    given["run_id"] = ids["mlflow"]
            elif name == "wandb":
                given["tags"] = [f"{k}:{v}"[:64] for k, v in tags.items()] + list(given.get("tags") or [])
                given["name"] = self.run_name
                given.setdefault("group", cell.suite)
                given.setdefault("dir", self.trackers.output_dir)
                os.makedirs(given["dir"], exist_ok=True)
                if ids.get("wandb"):
                    given["id"], given["resume"] = ids["wandb"], "allow"
            out[name] = given
        return out

    # --- the run ------------------------------------------------------------------------------------------------

    def start(self, acc, resume_ids: dict | None = None, resume_step: int | None = None) -> None:
        """Starts (or continues) this cell's tracker run on `acc`. `resume_ids`: the ids a checkpoint kept,
        `resume_step`: its step (this stage's)."""
        if not acc.is_main_process:   # init_trackers runs on the main process only (accelerate); so do we
            return
        if self.replaying:
            self.active = True
            return
        held, self.held = self.held, []
        ids = {**self.ids, **(resume_ids or {})}
        mlflow_uri = (self.trackers.settings.get("mlflow") or {}).get("tracking_uri")
        try:
            # a new run: not a later stage's, not a resumed one (a checkpoint from before TensorBoard had an id
            # resumes with none: it appends to its folder, as it did); a folder that cannot be moved drops the
            # tracker, not the cell
            if resume_ids is None and not self.ids:
                self._set_aside_tensorboard()
            if "mlflow" in self.trackers.names:
                self._mlflow_experiment(mlflow_uri)
                if not ids:
                    self._end_runs_left_running(mlflow_uri)
            # params only once per run: MLflow refuses a param logged again (a stage, a resume)
            config = None if ids else cell_params(self.cell)
            at = None if resume_ids is None or resume_step is None else self.step_offset + resume_step
            acc.init_trackers(self.trackers.suite, config=config, init_kwargs=self.init_kwargs(ids, at))
            self.ids = {**ids, **self._ids(acc)}
            if resume_ids and resume_ids.get("mlflow") and "mlflow" in self.trackers.names:
                self.mlflow_logged = self._mlflow_logged(mlflow_uri, resume_ids["mlflow"])
                self.mlflow_shared = True
            self.active = True
            if resume_ids is None:   # a new run: the stages trained again before it are its first points
                for values, step in held:
                    acc.log(values, step=step)
        except Exception as exc:
            self._drop(acc, f"could not start ({type(exc).__name__}: {exc})")

    def _mlflow_experiment(self, uri: str | None) -> None:
        """The tracking URI, and the suite's experiment created if it is not there yet: accelerate searches and
        then creates, so two workers starting their first cells at once would both create, and one would fail."""
        import mlflow
        from mlflow.exceptions import MlflowException

        if uri:
            mlflow.set_tracking_uri(uri)
        settings = self.trackers.settings.get("mlflow") or {}
        try:
            if mlflow.get_experiment_by_name(self.trackers.suite) is None:
                mlflow.create_experiment(self.trackers.suite, artifact_location=settings.get("logging_dir"))
        except MlflowException:   # another worker created it in between: accelerate finds it
            pass

    def _end_runs_left_running(self, uri: str | None) -> None:
        """A worker killed outright (SIGKILL, the OOM killer, a lost node) never ends its MLflow run: it would read
        RUNNING forever beside the run of the worker that trained the cell again. This worker holds the cell's
        lease, so no other worker of its store trains it now: a RUNNING run of the cell that this one is not
        continuing is marked KILLED, as a run stopped by a signal is. Only runs of the same output folder (one
        store's: a cell key does not name its store, and two stores may run one suite into one MLflow server)."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(self.trackers.suite)
        if experiment is None:
            return
        left = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.cell_key = '{self.cell.key}' and attributes.status = 'RUNNING'")
        for run in left:
            if run.data.tags.get(OUTPUT_TAG) != self._output_dir():
                continue
            client.set_terminated(run.info.run_id, status="KILLED")
            print(f"note: cell {self.cell.key}: MLflow run {run.info.run_id} was left running by a worker that no "
                  f"longer holds the cell (killed, or its lease taken over); marked KILLED", file=sys.stderr,
                  flush=True)

    @staticmethod
    def _mlflow_logged(uri: str | None, run_id: str) -> dict[str, int]:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        return {key: max(m.step for m in client.get_metric_history(run_id, key))
                for key in client.get_run(run_id).data.metrics}

    def _output_dir(self) -> str:
        return os.path.abspath(self.trackers.output_dir)

    def tensorboard_dir(self) -> str:
        """The cell's TensorBoard run folder: LOGGING_DIR/KEY/SUITE (accelerate adds the project name)."""
        return os.path.join(self.trackers.tensorboard_root(), self.cell.key, self.trackers.suite)

    def _set_aside_tensorboard(self) -> None:
        """A cell that starts a new run (a failure retried, a stale lease taken over, a checkpoint refused) would
        append its points to the earlier run's folder, one series with every step twice: that run is renamed
        SUITE.earlier-N, where TensorBoard shows it beside the new one (as MLflow keeps a FAILED or KILLED run)."""
        folder = self.tensorboard_dir()
        if "tensorboard" not in self.trackers.names or not os.path.isdir(folder) or not os.listdir(folder):
            return
        n = 1
        while os.path.exists(f"{folder}.earlier-{n}"):
            n += 1
        os.rename(folder, f"{folder}.earlier-{n}")

    def _ids(self, acc) -> dict:
        ids = {}
        for tracker in acc.trackers:
            if tracker.name == "tensorboard":   # no id of its own: the folder, which a resume appends to
                ids["tensorboard"] = os.path.relpath(self.tensorboard_dir(), self.trackers.tensorboard_root())
            elif tracker.name == "mlflow":
                ids["mlflow"] = tracker.tracker.info.run_id
            elif tracker.name == "wandb":
                ids["wandb"] = tracker.tracker.id
        return ids

    def run_ids(self) -> dict:
        """What the checkpoint keeps (plain strings: it is read with weights_only)."""
        return dict(self.ids)

    def log(self, acc, values: dict, step: int) -> None:
        if not self.active or not acc.is_main_process:
            return
        values = {k: float(v) for k, v in values.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        step += self.step_offset
        if self.replaying:
            self.held.append((values, step))
            return
        try:
            for tracker in acc.trackers:   # acc.log's loop, but a resumed MLflow run keeps the points it holds
                if tracker.name == "mlflow" and self.mlflow_logged:
                    new = {k: v for k, v in values.items() if step > self.mlflow_logged.get(k, -1)}
                    if new:
                        tracker.log(new, step=step)
                else:
                    tracker.log(values, step=step)
        except Exception as exc:
            self._drop(acc, f"could not log ({type(exc).__name__}: {exc})")

    def log_train(self, acc, step: int, loss: float, learning_rate: float) -> None:
        self.log(acc, {"train/loss": loss, "train/learning_rate": learning_rate}, step)

    def log_eval(self, acc, step: int, entry: dict, prefix: str = "") -> None:
        values = {f"dev/{prefix}{k}": v for k, v in entry["metrics"].items()}
        values[f"dev/{prefix}score"] = entry["score"]
        values["train/epoch"] = entry["epoch"]
        self.log(acc, values, step)

    def log_summary(self, acc, result, step: int) -> None:
        """The record's summary: score, parameters, time, memory, FLOPs (those the result has)."""
        summary = {"score": result.score, "best_score": result.best_score,
                   "trainable_params": result.trainable_params, "total_params": result.total_params,
                   "trainable_pct": result.trainable_pct,
                   "train_time_s": result.train_time_s,
                   "eval_time_s": result.eval_time_s, "peak_memory_mb": result.peak_memory_mb,
                   "train_flops": getattr(result, "train_flops", None), "mfu": getattr(result, "mfu", None),
                   "steps": self.step_offset + (result.steps or 0)}
        self.log(acc, {f"final/{k}": v for k, v in summary.items() if v is not None}, step)

    def finish(self, acc, outcome: str = "completed") -> None:
        """Ends the run on this Accelerator, as `end_training` does, without its other half: end_training also
        destroys the process group, which a worker keeps for its next cell (DDP). `outcome`: completed, failed,
        stopped (a signal: the run is continued on resume) or lost (the lease: another worker holds the cell);
        MLflow keeps it as the run's status (_mlflow_end_status)."""
        if not acc.is_main_process:
            return
        trackers, acc.trackers = list(acc.trackers), []
        self.active = False
        for tracker in trackers:
            try:
                if tracker.name == "mlflow" and outcome == "lost" and self.mlflow_shared:
                    _leave_mlflow_run()   # the holder's run: neither its status nor its end time are this worker's
                    continue
                if tracker.name == "mlflow" and outcome != "completed":   # accelerate's finish says FINISHED
                    import mlflow

                    mlflow.end_run(status=self._mlflow_end_status(outcome))
                tracker.finish()
            except Exception as exc:
                print(f"warning: tracker {tracker.name}: could not finish ({type(exc).__name__}: {exc})",
                      file=sys.stderr, flush=True)

    @staticmethod
    def _mlflow_end_status(outcome: str) -> str:
        """FAILED for a failure, KILLED for a stop, and for a lost lease on a run of this attempt's own (no other
        worker continues it). A lost run continued from a checkpoint is not ended here at all (finish): the worker
        that took the cell over resumed the same checkpoint, so the same run, and ends it itself. KILLED read KILLED
        for a cell that worker had completed; its status as read then ended a run the holder still trained with
        RUNNING and an end time, and where MLflow could not be read, left this worker's tracker open."""
        return "FAILED" if outcome == "failed" else "KILLED"

    def _drop(self, acc, why: str) -> None:
        names = ", ".join(t.name for t in acc.trackers) or ", ".join(self.trackers.names)
        print(f"warning: cell {self.cell.key}: tracker(s) {names}: {why}; this cell goes on without them",
              file=sys.stderr, flush=True)
        self.finish(acc)


def _leave_mlflow_run() -> None:
    """This process's side of its active MLflow run closed without a word to the server: mlflow.end_run (and
    accelerate's finish, which calls it) would write the run's status and end time. The fluent API's run stack is
    popped as end_run pops it; MLflow has no public call for that. The stack is a thread-local (ThreadLocalVariable)
    in newer MLflows and a plain list in older ones (2.10, the oldest this harness takes): `.get()` on that list
    failed, the run stayed active, and MLflow's exit handler then ended the holder's run FINISHED."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack
    stack = stack if isinstance(stack, list) else stack.get()
    if not stack:
        return
    fluent.MLFLOW_RUN_ID.unset()
    run = stack.pop()
    monitor = fluent.run_id_to_system_metrics_monitor.pop(run.info.run_id, None)
    if monitor is not None:
        monitor.finish()


@dataclass
class _NoTracking:
    """What a cell without trackers gets: every call does nothing."""
    ids: dict = field(default_factory=dict)
    step_offset: int = 0
    log_every: int = 0
    replaying: bool = False

    def accelerator_kwargs(self) -> dict:
        return {}

    def start(self, *a, **k) -> None: ...
    def log_train(self, *a, **k) -> None: ...
    def log_eval(self, *a, **k) -> None: ...
    def log_summary(self, *a, **k) -> None: ...
    def finish(self, *a, **k) -> None: ...

    def run_ids(self) -> dict:
        return {}


def for_cell(trackers: Trackers | None, cell):
    return CellTracking(trackers, cell) if trackers and trackers.names else _NoTracking()
