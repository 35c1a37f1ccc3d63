"""Cost of a mid-cell checkpoint for minilm: seconds to write / load checkpoint.pt and its size, full fine-tuning
and a Houlsby adapter (only trainable weights and their optimizer state are saved).
Run: nice -n 5 python bench/bench_checkpoint.py   (HARNESS_DATA_DIR=/path/to/glue)"""
import os, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch
from harness.train import checkpoint
from harness.train.context import RunContext, make_accelerator
from harness.train.model_setup import build_model
from harness.train.optim import make_optimizer
from harness.spec.tasks import get_task

def measure(method, params):
    from harness.plan.suite import load_suite
    d = tempfile.mkdtemp()
    p = os.path.join(d, "s.yaml")
    open(p, "w").write(f"name: b\nmodels: [minilm]\ntasks: [rte]\nmethods: [{{name: {method}{params}}}]\n"
                       "budgets: [{max_steps: 10}]\n")
    cell = load_suite(p).cells()[0]
    acc = make_accelerator(cell)
    _, model, *_ = build_model(cell, RunContext(None, None), [get_task("rte")])
    opt = make_optimizer(model, cell.hparams)
    model, opt = acc.prepare(model, opt)
    for q in model.parameters():   # one step so the optimizer has its moments
        if q.requires_grad: q.grad = torch.zeros_like(q)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ck = checkpoint.CellCheckpoint(d, cell.key, acc, model, opt, sched, 10)
    t0 = time.perf_counter()
    ck.save({"step": 1, "epoch_idx": 0, "micro": 1, "history": []})
    save_s = time.perf_counter() - t0
    size = os.path.getsize(ck.path) / 2**20
    t0 = time.perf_counter()
    torch.load(ck.path, map_location="cpu", weights_only=False)
    load_s = time.perf_counter() - t0
    print(f"{method}: save {save_s:.2f} s, load {load_s:.2f} s, {size:.1f} MB")

measure("full", "")
measure("houlsby", ", size: 64")
