"""What a process keeps between cells and how each cell gets its Accelerator.

RunContext (data folder, caches, raw data loaded once per task), the process group, a fresh Accelerator per
cell (1 process, DDP, DeepSpeed, mixed precision), and the libraries' log level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from harness.spec.cell import Cell
from harness.tasks.data import TokenizedCache
from harness.tasks.kinds import kind_of
from harness.train.precision import resolve_precision
from harness.train.zero import under_deepspeed


@dataclass
class RunContext:
    """What a process keeps between cells: where data lives and what was already loaded or tokenized."""

    data_dir: str | None
    cache_dir: str | None
    model_base_dir: str = "."
    show_progress: bool = True
    trackers: object = None   # harness.train.tracking.Trackers: what every cell of this process logs to
    _raw: dict = field(default_factory=dict)
    tokenized: TokenizedCache = None

    def __post_init__(self):
        self.tokenized = TokenizedCache(self.cache_dir)

    def raw_data(self, task):
        """Loaded once per task and process; a failure is remembered too, so a missing data set costs one
        hub time-out, not one per cell."""
        if task.name not in self._raw:
            try:
                self._raw[task.name] = kind_of(task).load(task, self.data_dir)
            except Exception as exc:
                self._raw[task.name] = exc
        value = self._raw[task.name]
        if isinstance(value, Exception):
            raise value
        return value


def _launched_under_deepspeed() -> bool:
    """`accelerate launch` with a DeepSpeed config (it sets this for every rank, and LOCAL_RANK). The variable
    alone, left in a plain run's environment, is no launch: Accelerate forms a DeepSpeed process group only under
    a launcher, and on a CPU the gloo world of one named here would end the run in a traceback."""
    return (os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
            and int(os.environ.get("LOCAL_RANK", -1)) != -1)


def _cpu_only() -> bool:
    """Accelerate's cpu=True: no CUDA, and not launched under DeepSpeed. Accelerate never runs DeepSpeed when told
    cpu=True: a DeepSpeed config on a CPU machine would silently train plain DDP (DeepSpeed has a CPU
    accelerator of its own, used there instead)."""
    return not torch.cuda.is_available() and not _launched_under_deepspeed()


def process_state():
    """The process group. Without CUDA, Accelerate forms a multi-process (gloo) world only when told cpu=True;
    `accelerate launch --multi_gpu --num_processes N` on a CPU machine then gives real DDP. Under DeepSpeed
    without CUDA the backend must be named: Accelerate finds none for a CPU and would make every rank a world of
    one."""
    from accelerate import PartialState

    gloo = not torch.cuda.is_available() and _launched_under_deepspeed()
    return PartialState(cpu=_cpu_only(), **({"backend": "gloo"} if gloo else {}))


def make_accelerator(cell: Cell, find_unused_parameters: bool = False, mixed_precision: str | None = None,
                     tracking=None):
    """A fresh Accelerator per cell: precision and accumulation may differ between cells; the process group
    (PartialState) is kept. A multi-task step uses one task's head only: DDP must be told. `mixed_precision`:
    already resolved (the loop resolves `auto` with the model's shape), else resolved here. `tracking`
    (harness.train.tracking) gives log_with and, for TensorBoard, the cell's logging folder."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    from harness.train.loaders import pinned

    AcceleratorState._reset_state()
    GradientState._reset_state()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    acc = Accelerator(cpu=_cpu_only(),
                      mixed_precision=mixed_precision or resolve_precision(cell.hparams["mixed_precision"]),
                      gradient_accumulation_steps=cell.hparams["gradient_accumulation_steps"],
                      kwargs_handlers=handlers,
                      # batches go to the GPU without waiting for it (from pinned memory: loaders.pinned)
                      dataloader_config=DataLoaderConfiguration(non_blocking=pinned()),
                      **(tracking.accelerator_kwargs() if tracking else {}))
    if under_deepspeed(acc) and acc.device.type == "cpu" and acc.state.deepspeed_plugin.hf_ds_config.is_zero3():
        raise RuntimeError("DeepSpeed ZeRO-3 on a CPU: its forward pass computes garbage there (deepspeed 0.19.8: "
                           "losses of 1e15 and more from the first step, finite, so nothing else would stop the "
                           "cell); use ZeRO-1 or ZeRO-2 on a CPU")
    if under_deepspeed(acc):
        # DeepSpeed accumulates and clips inside its engine, from its config: there `accelerate launch` puts an
        # accelerate config's values over the cell's, a DeepSpeed JSON without them gets accumulation 1, and
        # Accelerate clips at 1.0 where nothing says; the cell's own, which its key and record name, go in instead
        config = acc.state.deepspeed_plugin.deepspeed_config
        config["gradient_accumulation_steps"] = acc.gradient_accumulation_steps = \
            cell.hparams["gradient_accumulation_steps"]
        config["gradient_clipping"] = float(cell.hparams["max_grad_norm"])
    return acc


def quiet_libraries() -> None:
    """The head being newly initialised is expected (it is counted as head_params), and adapters warns about
    inactive adapters from inside its own set_active_adapters: neither helps a user reading the log."""
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
