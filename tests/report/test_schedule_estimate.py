"""`harness estimate` and `harness status` on multi-task and sequential cells, from a store a real worker wrote:
a cell of several tasks is counted and priced once, as what it really processes and takes, and its member or
stage rows do not stand in for their tasks. And cells of a process count (a DDP world) priced by stored runs on that
count alone."""

from __future__ import annotations

import json

import pytest

from harness.plan.suite import parse_suite
from harness.report.progress import predict_claimed, validate_line
from harness.spec.status import Regime, Status
from harness.store.db import Store
from harness.store.lease import Worker, utcnow
from tests.helpers import assert_refused, call_cli, run_cli, write_suite

SUITE = """
name: {name}
models: ["{model}"]
tasks: [rte, {{sequence: [rte, stsb]}}, {{multitask: [rte, stsb]}}]
methods: [full]
seeds: [{seed}]
budgets: [{budget}]
hparams: {{batch_size: 8}}
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_bert, small_glue):
    """One real worker ran suite "ran": rte alone, a sequence rte -> stsb and a multi-task cell rte + stsb, one
    epoch each of small_glue's 48 training and 21 dev examples per task, batches of 8 (6 steps per task)."""
    tmp = tmp_path_factory.mktemp("schedules")
    suite = write_suite(tmp / "ran.yaml", SUITE.format(name="ran", model=tiny_bert, seed=1, budget="{epochs: 1}"))
    db = f"sqlite:///{tmp / 'h.db'}"
    proc = run_cli("run", suite, "--db", db, "--output-dir", tmp / "out", "--data-dir", small_glue, "--no-progress",
                   cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = Store(db).records("ran")
    top = {r.regime: r for r in rows if r.parent_id is None}
    assert len(rows) == 3 + 1 + 2 and set(top) == {None, Regime.SEQUENTIAL, Regime.MULTITASK}
    return tmp, suite, db, top, rows


def estimate_later(ran, tiny_bert, small_glue) -> tuple[dict, dict]:
    """The same cells, seed 2, under {epochs: 3, max_steps: 30}, estimated from the run's rows (each cell matches
    its own seed-1 row exactly): {task as labelled: its estimate}, and each top row's rates, {regime: (seconds per
    training example, per dev example scored)} (each ran one epoch: one evaluation)."""
    tmp, _, db, top, _ = ran
    later = write_suite(tmp / "later.yaml", SUITE.format(name="later", model=tiny_bert, seed=2,
                                                         budget="{epochs: 3, max_steps: 30}"))
    r = run_cli("estimate", later, "--from-store", db, "--data-dir", small_glue, "--json", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = {c["label"].split()[1]: c for c in json.loads(r.stdout)["cells"]}
    assert {c["level"] for c in cells.values()} == {"exact"}
    return cells, {regime: (1 / row.train_examples_per_s, row.eval_time_s / row.eval_examples)
                   for regime, row in top.items()}


def test_multi_task_members_do_not_size_their_tasks(ran, tiny_bert, small_glue):
    """rte alone: 48 examples, 6 steps per epoch, 18 steps (the epochs bind): 144 training examples, 3 evaluations
    of 21. The multi-task cell's member rows carry the joint run's cost (its steps and times); their training
    examples are their own task's since 2026-12-06 (before, the joint run's 96, which read as rte's would have
    planned rte alone at 96 x 30 / 12 = 240 examples), and the estimate still sizes rte from rte's own row."""
    members = [r for r in ran[4] if r.regime == Regime.MULTITASK_MEMBER]
    assert {(r.task, r.train_examples, r.steps) for r in members} == {("rte", 48, 12), ("stsb", 48, 12)}
    cells, rates = estimate_later(ran, tiny_bert, small_glue)
    train_s, eval_s = rates[None]
    assert cells["rte"]["seconds"] == pytest.approx(144 * train_s + 3 * 21 * eval_s, rel=1e-9)


def test_a_multi_task_cell_is_planned_as_one_loop(ran, tiny_bert, small_glue):
    """The multi-task cell is one loop whose epoch is both tasks' 12 batches: 30 steps (max_steps binds), 240
    examples, 3 evaluations of its 42 dev examples; max_steps bounds the joint loop, not each task (per task, 18
    steps each: 288 examples and 6 evaluations)."""
    joint = ran[3][Regime.MULTITASK]
    assert (joint.steps, joint.train_examples, joint.eval_examples) == (12, 96, 42)
    cells, rates = estimate_later(ran, tiny_bert, small_glue)
    train_s, eval_s = rates[Regime.MULTITASK]
    assert cells["rte+stsb"]["seconds"] == pytest.approx(240 * train_s + 3 * 42 * eval_s, rel=1e-9)


def test_a_sequence_s_time_is_every_stage_s(ran):
    """A sequential cell's row holds the whole sequence's training time but its last stage's evaluation time; its
    first stage's evaluation is in that stage's row. Status counts a completed sequence's time as all of it, and
    prices the next seed of each setting at its completed cell's whole time: the same suite with seeds 1 and 2,
    seed 2 pending in all three settings, has exactly the seed-1 cells' time left."""
    tmp, _, db, top, rows = ran
    (stage,) = [r for r in rows if r.regime == Regime.SEQUENTIAL_STAGE]
    assert stage.eval_time_s > 0 and stage.parent_id == top[Regime.SEQUENTIAL].id
    took = sum(r.train_time_s + r.eval_time_s for r in top.values()) + stage.eval_time_s
    both = write_suite(tmp / "both.yaml", SUITE.format(name="ran", model=top[None].model, seed="1, 2",
                                                       budget="{epochs: 1}"))
    r = run_cli("status", both, "--db", db, "--json", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    e = json.loads(r.stdout)
    assert e["counts"]["completed"] == 3 and e["counts"]["pending"] == 3 and e["counts"]["total"] == 6
    assert e["estimate"]["actual_s"] == pytest.approx(took, rel=1e-9)
    assert e["estimate"]["work_s"] == pytest.approx(took, rel=1e-9)


DDP = """
name: ddp
models: [minilm]
tasks: [rte]
methods: [full]
seeds: [1, 2]
budgets: [{epochs: 1, max_train_samples: 100, max_eval_samples: 50}]
hparams: {batch_size: 10}
"""


def _ran_on(store, cell, train_s_per_example: float, eval_s: float, device: str = "CPU: Test x2",
            threads: int = 2) -> None:
    """A completed run of `cell` (its own process count) on `device`, with `threads` torch threads: one epoch of
    its 100 training
    examples at this wall time per example (throughput summed over ranks, as a DDP run records it), its 50 dev
    examples scored once in `eval_s`."""
    worker = Worker(worker_id="w/1/-/w", host="w", pid=1, slurm_job_id=None, slurm_array_task_id=None,
                    started_at=utcnow())
    claim = store.start(cell, cell.config(), "test", None, worker=worker)
    store.finish(claim, Status.COMPLETED, {
        "train_time_s": 100 * train_s_per_example, "train_examples_per_s": 1 / train_s_per_example,
        "eval_time_s": eval_s, "steps": 100 // cell.effective_batch_size, "epochs_done": 1.0,
        "train_examples": 100, "eval_examples": 50, "num_threads": threads,
        "env": {"device": device, "num_processes": cell.num_processes}})


def test_a_cell_is_priced_only_by_runs_on_its_own_process_count(tmp_path, monkeypatch):
    """A 2-process DDP run of seed 1 (0.07 s per training example of wall time, 0.1 s per dev example) and a
    1-process one (0.1 s and 0.2 s) on the same device: seed 2 on 1 process is 100 x 0.1 + 50 x 0.2 = 20 s, on 2
    processes 100 x 0.07 + 50 x 0.1 = 12 s, each from its own run, in `harness estimate` and in the prediction a
    worker writes at its claim. (Before: both were priced by both runs, 100 x 0.085 + 50 x 0.15 = 16 s.) With only
    the 2-process run stored, a 1-process cell has no estimate, and says why, rather than take the DDP world's
    speed as one process's."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # sizes from the stored runs
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    suite = parse_suite(DDP, str(path))
    one, two = ({c.seed: c for c in suite.cells(num_processes=n)} for n in (1, 2))
    url = f"sqlite:///{tmp_path / 'ddp.db'}"
    store = Store(url)
    _ran_on(store, two[1], 0.07, 5.0)

    def seed_2(processes: int) -> dict:
        r = call_cli("estimate", path, "--from-store", url, "--json", "--num-processes", processes)
        assert r.returncode == 0, r.stderr
        return next(c for c in json.loads(r.stdout)["cells"] if "seed=2" in c["label"])

    alone = seed_2(1)   # the 2-process run only
    assert alone["seconds"] is None and alone["level"] is None
    assert alone["why"].startswith("no stored run of minilm on 1 process(es) (its runs here trained on 2"), alone
    text = call_cli("estimate", path, "--from-store", url).stdout
    assert "from 0 stored runs on 1 process(es)" in text and "2 cell(s) without an estimate" in text, text

    _ran_on(store, one[1], 0.1, 10.0)
    cells = {n: seed_2(n) for n in (1, 2)}
    assert (cells[1]["seconds"], cells[1]["level"], cells[1]["runs"]) == (pytest.approx(20.0), "exact", 1)
    assert (cells[2]["seconds"], cells[2]["level"], cells[2]["runs"]) == (pytest.approx(12.0), "exact", 1)
    text = call_cli("estimate", path, "--from-store", url, "--num-processes", 2).stdout
    assert "from 1 stored runs on 2 process(es)" in text, text
    e = json.loads(call_cli("estimate", path, "--from-store", url, "--num-processes", 2, "--json").stdout)
    assert e["num_processes"] == 2 and e["observations"] == 1
    assert "h of 2-process runs, 2 devices each)" in text.splitlines()[-1], text
    # a worker's prediction at its claim (`harness run`): from the runs on its cell's process count alone
    worker = Worker(worker_id="x/1/-/x", host="x", pid=2, slurm_job_id=None, slurm_array_task_id=None,
                    started_at=utcnow())
    for n, cells_n, expect in ((1, one, 20.0), (2, two, 12.0)):
        claim = store.start(cells_n[2], cells_n[2].config(), "test", None, worker=worker)
        assert predict_claimed(store, claim, cells_n[2], "CPU: Test x2", None) == pytest.approx(expect), n
        assert store.get(claim.id).predicted_time_s == pytest.approx(expect)


def test_the_default_device_is_one_whose_runs_price_the_cells_process_count(tmp_path, monkeypatch):
    """Three 1-process runs on one CPU and one 2-process run on another: `--num-processes 2` priced nothing, for it
    defaulted to the device with most runs of any count (review finding), and said no run was on 2 processes
    though one was. Now the default is the device with most runs on the cells' count; 1-process cells keep
    theirs. Where no run is on the count, a pilot is not the advice (it trains in one process)."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    suite = parse_suite(DDP, str(path))
    one, two = ({c.seed: c for c in suite.cells(num_processes=n)} for n in (1, 2))
    url = f"sqlite:///{tmp_path / 'ddp.db'}"
    store = Store(url)
    for seed in (1, 2):
        _ran_on(store, one[seed], 0.1, 10.0, device="CPU: Busy x2")
    e = json.loads(call_cli("estimate", path, "--from-store", url, "--json", "--num-processes", 2).stdout)
    assert e["device"] == "CPU: Busy x2" and e["observations"] == 0   # nothing on 2 processes anywhere yet
    # what `harness validate` says with no run to price the cells: a pilot only where they run in one process
    empty = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    assert "a first completed run on 2 processes prices the rest" in validate_line(two.values(), store)
    assert "run `harness estimate --pilot SUITE`" in validate_line(one.values(), empty)

    _ran_on(store, two[1], 0.07, 5.0, device="CPU: Ddp x4")
    e = json.loads(call_cli("estimate", path, "--from-store", url, "--json", "--num-processes", 2).stdout)
    assert e["device"] == "CPU: Ddp x4" and e["observations"] == 1, e
    seed_2 = next(c for c in e["cells"] if "seed=2" in c["label"])
    assert seed_2["seconds"] == pytest.approx(12.0)
    e = json.loads(call_cli("estimate", path, "--from-store", url, "--json").stdout)   # 1 process: the busy CPU
    assert e["device"] == "CPU: Busy x2" and e["observations"] == 2, e


def test_device_hours_of_a_ddp_grid_count_each_of_its_devices(tmp_path, monkeypatch):
    """Seed 1 of a 2-process cell ran in 12 s of wall time (100 x 0.07 + 5 s), on two devices: 24 device-seconds.
    Every number printed as device-hours is wall x processes: `harness estimate`'s total and JSON device_hours
    (2 cells: 48 s), `validate`'s line, `status`'s work left (seed 2: 24 s; device_s in --json, work_s the wall
    time the workers' time left divides); the wall hours of the 2-process runs beside it. Before: the wall time,
    labelled device-hours (estimate JSON 0.0067 device_hours, validate 0.0067 and status 0.0033
    "device-hours")."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # sizes from the stored runs
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    two = {c.seed: c for c in parse_suite(DDP, str(path)).cells(num_processes=2)}
    url = f"sqlite:///{tmp_path / 'ddp.db'}"
    _ran_on(Store(url), two[1], 0.07, 5.0)
    e = json.loads(call_cli("estimate", path, "--from-store", url, "--num-processes", 2, "--json").stdout)
    assert e["seconds"] == pytest.approx(24.0) and e["device_seconds"] == pytest.approx(48.0)
    assert (e["device_hours"], e["plus_minus_hours"]) == (pytest.approx(48 / 3600), pytest.approx(4.8 / 3600))
    total = call_cli("estimate", path, "--from-store", url, "--num-processes", 2).stdout.splitlines()[-1]
    assert total.startswith("total: 0.0133 ± 0.0013 device-hours (0.0067 ± 0.00067 h of 2-process runs, 2 devices "
                            "each) of training and evaluation"), total
    line = validate_line(list(two.values()), Store(url, read_only=True))   # `harness validate --num-processes 2`
    assert line.startswith("estimated 0.0133 ± 0.0013 device-hours (0.0067 ± 0.00067 h of 2-process runs, 2 devices "
                           "each) from 1 stored runs on CPU: Test x2"), line
    status = call_cli("status", path, "--db", url, "--num-processes", 2)
    assert "(0.0067 device-hours (0.0033 h of 2-process runs, 2 devices each) of work for 1 cell(s)" in \
        status.stdout, status.stdout
    left = json.loads(call_cli("status", path, "--db", url, "--num-processes", 2, "--json").stdout)["estimate"]
    assert (left["work_s"], left["device_s"], left["left_s"]) == (pytest.approx(12.0), pytest.approx(24.0),
                                                                   pytest.approx(12.0))


def test_a_pilot_is_refused_for_cells_of_several_processes_before_it_trains(tmp_path):
    """A pilot trains in this one process: its speed is not a DDP world's, so `--pilot --num-processes 2` is bad
    input, refused at once (before: it trained every pilot, minutes, and priced the 2-process cells with it)."""
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    r = call_cli("estimate", path, "--pilot", "--num-processes", 2, "--from-store", f"sqlite:///{tmp_path / 'n.db'}")
    assert_refused(r, "--num-processes: a pilot trains in this one process")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.yaml"]


def test_a_pilot_refuses_a_stored_device_before_it_trains(tmp_path):
    """--device picks among a store's devices; a pilot's runs are this machine's. `--pilot --device H100` on a CPU
    trained every pilot (minutes) and only then exited 2 (`--device: no stored device(s) match 'H100'`): bad input
    is refused before any work."""
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    r = call_cli("estimate", path, "--pilot", "--device", "H100", "--from-store", f"sqlite:///{tmp_path / 'n.db'}")
    assert_refused(r, "--device: picks the stored device whose runs price the cells; a --pilot measures this machine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.yaml"]


def test_hours_are_printed_without_e_notation():
    """The hours `harness estimate`, `validate` and `status` print: 3 significant digits (the ± 2), whole numbers
    where those run out, never "1e+03" for a 1,000-hour grid nor "1.5e+02" for a ± of 150 hours (before)."""
    from harness.report.progress import hours

    assert hours(3600 * 1000) == "1000" and hours(3600 * 999.7) == "1000" and hours(3600 * 12345) == "12345"
    assert hours(3600 * 250, 3600 * 150) == "250 ± 150"
    assert hours(3600 * 12.34, 3600 * 1.234) == "12.3 ± 1.2" and hours(5.0) == "0.0014" and hours(None) == "?"



def test_hours_under_a_ten_thousandth_are_printed_without_e_notation():
    """A cell of 0.1 s (a tiny model's pilot) printed "2.8e-05 ± 1.4e-05 h", its grid "2.8e-05 ± 9.3e-06
    device-hours": the same significant digits, written out."""
    from harness.report.progress import hours, work_text

    assert hours(0.1, 0.05) == "0.000028 ± 0.000014"
    assert work_text(0.1, 0.1 / 3, 1) == "0.000028 ± 0.0000093 device-hours"
    assert hours(0.358) == "0.000099" and hours(0.3599) == "0.0001"   # rounded up to the next digit
    assert hours(0.36, 0.18) == "0.0001 ± 0.00005" and hours(0.0) == "0"

def test_status_names_the_device_whose_stored_runs_give_its_time_left(tmp_path, monkeypatch):
    """A suite with no completed cell yet is priced by the store's runs on its main device, which may be another
    machine's: `harness status` says which (before: "else stored throughput", no device, though --json had it)."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # sizes from the stored runs
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    (other,) = [c for c in parse_suite(DDP.replace("name: ddp", "name: past"), "past.yaml").cells() if c.seed == 1]
    _ran_on(Store(url), other, 0.001, 0.05, device="GPU: Fake")
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    r = call_cli("status", path, "--db", url)
    assert r.returncode == 0, r.stderr
    (line,) = [t for t in r.stdout.splitlines() if t.startswith("time left:")]
    # each seed: 100 x 0.001 + 50 x 0.001 = 0.15 s
    assert "for 2 cell(s), from this suite's completed cells per setting, else stored throughput on GPU: Fake)" in line
    assert json.loads(call_cli("status", path, "--db", url, "--json").stdout)["estimate"]["work_s"] == \
        pytest.approx(0.3)


def test_an_unknown_time_left_names_the_device_whose_stored_runs_were_looked_at(tmp_path, monkeypatch):
    """The store holds runs on GPU: Fake, none of roberta-base: the time left is unknown, and the reason said "no
    stored run of roberta-base" without the device, in `harness status` and on the board's Grid page alike, though
    both name it beside a time left (runs of it on another device would not count)."""
    from streamlit.testing.v1 import AppTest

    from harness.board import APP

    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # sizes from the stored runs
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    (other,) = [c for c in parse_suite(DDP.replace("name: ddp", "name: past"), "past.yaml").cells() if c.seed == 1]
    store = Store(url)
    _ran_on(store, other, 0.001, 0.05, device="GPU: Fake")
    text = DDP.replace("minilm", "roberta-base")
    path = write_suite(tmp_path / "ddp.yaml", text)
    store.enqueue(parse_suite(text, str(path)).cells(), "harness run ddp.yaml")
    store.engine.dispose()
    why = "no completed cell of its setting in this suite and, on GPU: Fake, no stored run of roberta-base"
    r = call_cli("status", path, "--db", url)
    assert f"time left: unknown (none of its 2 cell(s) left has an estimate: {why}; run " in r.stdout, r.stdout
    monkeypatch.setenv("HARNESS_DB", url)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"page": "Grid", "suite": "ddp"})
    at.run()
    assert not at.exception, at.exception
    assert f"0 live worker(s) · 2 cell(s) without an estimate: {why}" in [c.value for c in at.caption]

def test_an_estimate_says_where_it_pools_runs_of_different_thread_counts(tmp_path, monkeypatch):
    """Estimates do not match on the thread count (`harness run --workers 2 --threads-per-worker 1` records 1,
    one worker on the 2-core device 2): seed 1 ran on 1 thread at 0.2 s per training example, seed 2 on 2 at 0.1,
    and each cell is priced at their mean (100 x 0.15 + 5 s = 20 s). The estimate says so, in its header, the
    cells' lines and --json; with runs of one thread count it says nothing. Before: nothing anywhere."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)   # sizes from the stored runs
    path = write_suite(tmp_path / "ddp.yaml", DDP)
    cells = {c.seed: c for c in parse_suite(DDP, str(path)).cells()}
    mixed, alike = f"sqlite:///{tmp_path / 'mixed.db'}", f"sqlite:///{tmp_path / 'alike.db'}"
    for url, threads in ((mixed, (1, 2)), (alike, (2, 2))):
        for seed, n, per_example in zip((1, 2), threads, (0.2, 0.1)):
            _ran_on(Store(url), cells[seed], per_example, 5.0, threads=n)
    header, *lines = call_cli("estimate", path, "--from-store", mixed).stdout.splitlines()
    assert header.endswith("from 2 stored runs on 1 process(es); 2 cell(s) priced by runs of 1 and 2 threads pooled "
                           "(a thread count's speed is not another's; `harness run --threads-per-worker`)"), header
    assert all(line.endswith("h  (exact match, 2 run(s) of 1 and 2 threads)") for line in lines[:2]), lines
    e = json.loads(call_cli("estimate", path, "--from-store", mixed, "--json").stdout)
    assert (e["pooled_threads"], e["threads"], e["seconds"]) == (2, [1, 2], pytest.approx(40.0))
    assert [c["threads"] for c in e["cells"]] == [[1, 2], [1, 2]]
    text = call_cli("estimate", path, "--from-store", alike).stdout
    assert "threads" not in text, text
    e = json.loads(call_cli("estimate", path, "--from-store", alike, "--json").stdout)
    assert (e["pooled_threads"], e["threads"], [c["threads"] for c in e["cells"]]) == (0, [], [[2], [2]])
