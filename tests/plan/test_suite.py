"""Suite validation, grid expansion and cell keys; bad input exits 2 and writes nothing."""

import pytest

from tests.helpers import assert_refused, run_cli, write_suite
from harness.spec.errors import InputError
from harness.plan.suite import load_suite, parse_suite

BASE = """
name: demo
models: [minilm]
tasks: [rte, mrpc, stsb, cola]
methods:
  - full
  - linear_probe
  - {name: houlsby, size: [16, 64]}
  - {name: pfeiffer, size: 64, learning_rate: 1e-3}
  - {name: lora, rank: 8}
budgets:
  - {epochs: 3}
seeds: [1, 2, 3]
hparams:
  learning_rate: [2e-5, 1e-4]
  batch_size: 32
  max_length: 128
  warmup_ratio: 0.1
"""


def test_grid_is_the_product_of_all_lists():
    suite = parse_suite(BASE, "demo.yaml")
    cells = suite.cells()
    # 4 tasks x (full 2 lr + probe 2 lr + houlsby 2 sizes x 2 lr + pfeiffer 1 lr (overridden) + lora 2 lr) x 3 seeds
    assert len(cells) == 4 * (2 + 2 + 4 + 1 + 2) * 3
    assert len({c.key for c in cells}) == len(cells)
    pfeiffer = [c for c in cells if c.method == "pfeiffer"]
    assert {c.hparams["learning_rate"] for c in pfeiffer} == {1e-3}
    assert {c.method_params["size"] for c in cells if c.method == "houlsby"} == {16, 64}
    lora = next(c for c in cells if c.method == "lora")
    assert lora.method_params == {"rank": 8, "alpha": 8, "dropout": 0.0, "matrices": "qv"}  # defaults resolved


def test_key_ignores_names_order_and_paths_but_not_results():
    a = {(c.task, c.method_label, c.hparams["learning_rate"], c.seed): c.key for c in parse_suite(BASE, "a.yaml").cells()}
    reordered = BASE.replace("name: demo", "name: other").replace("  batch_size: 32\n  max_length: 128",
                                                                    "  max_length: 128\n  batch_size: 32")
    reordered = reordered.replace("{name: pfeiffer, size: 64, learning_rate: 1e-3}",
                                  "{learning_rate: 0.001, size: 64, name: pfeiffer}")
    b = {(c.task, c.method_label, c.hparams["learning_rate"], c.seed): c.key
         for c in parse_suite(reordered, "elsewhere/b.yaml").cells()}
    assert a == b
    changed = parse_suite(BASE.replace("warmup_ratio: 0.1", "warmup_ratio: 0.2"), "a.yaml").cells()
    assert not set(a.values()) & {c.key for c in changed}
    # processes change the effective batch, so they change the key
    one = parse_suite(BASE, "a.yaml").cells(num_processes=1)[0]
    two = parse_suite(BASE, "a.yaml").cells(num_processes=2)[0]
    assert one.key != two.key and two.effective_batch_size == 64


def test_keys_are_stable_across_releases():
    """The one pinned key: if this changes, every stored result stops being found. Only change it on purpose.
    (Other tests compare keys with each other; they pin none.)"""
    cell = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "s.yaml").cells()[0]
    assert cell.config()["hparams"]["learning_rate"] == 2e-5
    assert cell.key == "f2c1234630f8bab6"


def test_an_option_added_later_keeps_old_keys_unless_used():
    plain = "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n"
    default = parse_suite(plain + "hparams: {group_by_length: true}\n", "s.yaml").cells()[0]
    changed = parse_suite(plain + "hparams: {group_by_length: false}\n", "s.yaml").cells()[0]
    assert default.key == parse_suite(plain, "s.yaml").cells()[0].key   # the pinned key, above
    assert changed.key != default.key


def test_doc_stride_beside_glue_tasks_keeps_keys_and_leaves_glue_labels():
    """A GLUE cell does not read doc_stride: its label no longer shows it, but its key still holds it (keys of stored
    cells stand), and a list of strides is refused (tests/bad_suites/doc_stride_*beside_glue.yaml) except where every
    task entry crossed with it has a SQuAD task (a sequence through SQuAD reads it)."""
    text = ("name: s\nmodels: [minilm]\ntasks: [rte, squad]\nmethods: [full]\n"
            "hparams: {max_length: 256, doc_stride: 64}\n")
    rte, squad = parse_suite(text, "s.yaml").cells()
    assert rte.hparams["doc_stride"] == 64 and rte.unread == (["doc_stride"], [])
    without = text.replace(", doc_stride: 64", "").replace(", squad", "")
    assert rte.key != parse_suite(without, "s.yaml").cells()[0].key
    assert rte.label == "minilm rte full lr=2e-05 max_length=256 [epochs=1] seed=1"
    assert squad.label == "minilm squad full lr=2e-05 doc_stride=64 max_length=256 [epochs=1] seed=1"
    assert squad.unread == ([], []) and squad.read_key == squad.key
    swept = text.replace("tasks: [rte, squad]", "tasks: [squad, {sequence: [rte, squad]}]").replace(
        "doc_stride: 64", "doc_stride: [32, 64]")
    assert len({c.key for c in parse_suite(swept, "s.yaml").cells()}) == 4


def test_a_flat_prefix_keeps_its_key_and_a_bottleneck_sweep_beside_it_is_valid():
    """A flat prefix does not read bottleneck_size: its key still holds the default (keys of stored cells stand), a
    sweep of it in the non-flat entry is valid, and a sweep that reaches flat variants is refused
    (tests/bad_suites/prefix_flat_bottleneck_list.yaml)."""
    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods:\n  - {name: prefix_tuning, flat: true}\n"
            "  - {name: prefix_tuning, bottleneck_size: [128, 512]}\n")
    flat, *mlp = parse_suite(text, "s.yaml").cells()
    assert flat.method_params == {"prefix_length": 30, "bottleneck_size": 512, "flat": True}
    assert flat.unread == ([], ["bottleneck_size"]) and flat.read_key != flat.key
    assert [c.method_params["bottleneck_size"] for c in mlp] == [128, 512]
    assert all(c.unread == ([], []) and c.read_key == c.key for c in mlp)
    assert len({flat.key, *(c.key for c in mlp)}) == 3
    with pytest.raises(InputError, match=r"methods\[1\]\.bottleneck_size: .* with bottleneck_size=512: "
                                         r"prefix_tuning with flat: true does not read bottleneck_size"):
        parse_suite(text.replace("bottleneck_size: [128, 512]}", "flat: true, bottleneck_size: 128}"), "s.yaml")


def test_a_flat_prefix_s_label_does_not_show_the_bottleneck_size_it_does_not_read(tmp_path):
    """A flat prefix's cell label and `harness params` row said bottleneck_size=512, a setting it never reads (its
    key keeps it, and so does the stored method_label, which ingest checks records against); one written on a flat
    entry is keyed and ignored: validate says so, and accepts it (a suite that wrote one has results stored under
    its keys)."""
    suite = write_suite(tmp_path / "s.yaml", "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods:\n"
                                             "  - {name: prefix_tuning, flat: true}\n  - {name: prefix_tuning}\n")
    flat, mlp = load_suite(str(suite)).cells()
    assert flat.label == "minilm rte prefix_tuning(prefix_length=30,flat=True) lr=2e-05 [epochs=1] seed=1"
    assert flat.key == "7c85ca33a18cb5d1" and "bottleneck_size=512" in flat.row_label   # as stored
    assert "prefix_tuning(prefix_length=30,bottleneck_size=512,flat=False)" in mlp.label
    proc = run_cli("params", suite)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "prefix_tuning(prefix_length=30,flat=True) " in proc.stdout and proc.stdout.count("bottleneck_size=512") == 1
    written = write_suite(tmp_path / "w.yaml", "name: s\nmodels: [minilm]\ntasks: [rte]\nmethods:\n"
                                               "  - {name: prefix_tuning, flat: true, bottleneck_size: 128}\n")
    (cell,) = load_suite(str(written)).cells()
    assert cell.method_params["bottleneck_size"] == 128 and cell.key != flat.key   # its stored key stands
    proc = run_cli("validate", written)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"note: {written}:5: methods[0].bottleneck_size: prefix_tuning with flat: true does not read " \
           f"bottleneck_size: it only keys these cells (kept, so results stored under it stand; a new suite leaves " \
           f"it out)" in proc.stdout.splitlines(), proc.stdout


def test_an_evaluation_only_entry_takes_one_learning_rate_and_keeps_its_key():
    """pretrained_adapter with train: false reads no training hparam: a learning-rate list crossed with it is
    refused (tests/bad_suites/learning_rates_on_an_evaluation_only_entry.yaml), one rate of its own is valid and
    stays in its key (stored keys stand), and the entry that trains the adapter further takes the list."""
    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods:\n  - full\n"
            "  - {name: pretrained_adapter, path: ./ad, learning_rate: 1e-4}\n"
            "  - {name: pretrained_adapter, path: ./ad, train: true}\nhparams: {learning_rate: [1e-4, 1e-3]}\n")
    cells = parse_suite(text, "s.yaml").cells()
    assert [(c.method, c.method_params.get("train"), c.hparams["learning_rate"]) for c in cells] == [
        ("full", None, 1e-4), ("full", None, 1e-3), ("pretrained_adapter", False, 1e-4),
        ("pretrained_adapter", True, 1e-4), ("pretrained_adapter", True, 1e-3)]
    evaluation = cells[2]
    assert "learning_rate" in evaluation.unread[0] and evaluation.read_key != evaluation.key
    assert cells[3].unread == ([], []) and len({c.key for c in cells}) == 5
    with pytest.raises(InputError, match=r":8: hparams\.learning_rate: .* with learning_rate=0\.001 evaluates the "
                                         r"same as the one of methods\[1\] with learning_rate=0\.0001"):
        parse_suite(text.replace(", learning_rate: 1e-4}", "}"), "s.yaml")


def test_an_evaluation_only_entry_is_one_cell_per_dev_set_size_whatever_the_seeds_and_budgets():
    """A saved adapter and head evaluated (pretrained_adapter, train: false) scored bitwise the same predictions
    for seeds 1-3 and budgets {epochs: 1} / {epochs: 2, max_train_samples: 20} (6 runs, one prediction digest):
    the grid ran it 3 x 2 times and the tables showed a mean over 3 seeds, std 0. One cell per dev-set size now,
    of the first seed, with the key that cell always had; the entry that trains it further keeps every seed."""
    text = ("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods:\n  - {name: pretrained_adapter, path: ./ad}\n"
            "  - {name: pretrained_adapter, path: ./ad, train: true}\nseeds: [3, 1, 2]\nbudgets: [{epochs: 1}, "
            "{epochs: 2, max_train_samples: 20}, {epochs: 1, max_eval_samples: 50}]\n")
    suite = parse_suite(text, "s.yaml")
    cells = suite.cells()
    evaluated = [(c.budget, c.seed) for c in cells if not c.method_params["train"]]
    assert evaluated == [({"epochs": 1.0}, 3), ({"epochs": 1.0, "max_eval_samples": 50}, 3)]
    assert sum(c.method_params["train"] for c in cells) == 9 and suite.size() == len(cells) == 11
    assert [c.key for c in cells[:2]] == ["0409d7cb9a4d6b92", "38ddec21fa5642cf"]   # the keys the grid gave them
    assert "the first seed, one budget per dev-set size" in suite.breakdown()


def test_a_stored_cell_of_an_unknown_task_or_method_still_has_a_label():
    """The board rebuilds cells from store rows, which may name a task or method this release lacks: asking which
    settings such a cell leaves unread must not raise (its label and its read key still come out)."""
    from harness.spec.cell import Cell

    cell = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "s.yaml").cells()[0]
    for change in ({"task": "gone_task"}, {"method": "gone_method"}):
        rebuilt = Cell.from_config("s", {**cell.config(), **change})
        assert rebuilt.unread == ([], []) and rebuilt.read_key == rebuilt.key
        assert rebuilt.label.startswith(f"minilm {rebuilt.task} {rebuilt.method} lr=2e-05")
    # a row whose method parameters lack one this release has (stored or ingested before it): its default counts
    rebuilt = Cell.from_config("s", {**cell.config(), "method": "pretrained_adapter", "method_params": {"path": "/x"}})
    assert rebuilt.label.startswith("minilm rte pretrained_adapter(path=/x)")


def test_eval_batch_size_is_not_part_of_the_key():
    a = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n", "s.yaml").cells()[0]
    b = parse_suite("name: s\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nhparams: {eval_batch_size: 8}\n",
                    "s.yaml").cells()[0]
    assert a.key == b.key


@pytest.mark.parametrize("text, expected", [
    ("tasks: [rtee]", ':3: tasks[0]: unknown task "rtee" (did you mean "rte"?)'),
    ("methods:\n  - full\n  - {name: houlsby, sise: 3}",
     ':6: methods[1].sise: unknown parameter for method "houlsby" (did you mean "size"?)'),
    ("methods: [ful]", ':4: methods[0].name: unknown method "ful" (did you mean "full"?)'),
    ("models: [minlm]", ':2: models[0]: unknown model "minlm" (did you mean "minilm"?)'),
    ("hparams:\n  learning_rat: 1", ":6: hparams.learning_rat: unknown field (did you mean \"learning_rate\"?)"),
    ("hparams:\n  learning_rate: [1e-3, abc]", ":6: hparams.learning_rate[1]: must be a number (got 'abc')"),
    ("hparams:\n  batch_size: 0", ":6: hparams.batch_size: 0 is out of range: must be in [1, 65536]"),
    ("tasks: []", ":3: tasks: List should have at least 1 item"),
    ("budgets:\n  - {epoch: 3}", ':6: budgets[0].epoch: unknown field (did you mean "epochs"?)'),
    ("budgets:\n  - {max_train_samples: 10}", ":6: budgets[0]: a budget needs epochs or max_steps"),
    ("methods: [{name: lora, rank: 2.5}]", ":4: methods[0].rank: must be an integer (got 2.5)"),
    ("methods: [{name: houlsby, size: [8, -1]}]", ":4: methods[0].size[1]: -1 is out of range: must be in [1, 65536]"),
    ("seeds: [1, 1]", ":5: seeds[1]: the same as seeds[0] (1)"),
    ("methods: [full, {name: lora}, {name: lora, rank: 8}]",
     ":4: methods[2]: the same method variant as methods[1]"),
    ("colour: red", ":5: colour: unknown field"),
    ("name: has space", ":1: name: String should match pattern"),
    ("models: [./no/such/dir]", ':2: models[0]: model directory "./no/such/dir" does not exist'),
])
def test_bad_suites_name_file_line_and_field(text, expected):
    good = {"name": "name: x", "models": "models: [minilm]", "tasks": "tasks: [rte]", "methods": "methods: [full]"}
    key = text.split(":")[0]
    lines = [v for k, v in good.items() if k != key]
    order = list(good)
    if key in good:
        lines.insert(order.index(key), text)
    else:
        lines.append(text)
    with pytest.raises(InputError) as err:
        parse_suite("\n".join(lines) + "\n", "bad.yaml")
    message = str(err.value)
    assert message.startswith("bad.yaml:"), message
    assert expected in message, message
    assert "\n" not in message


def test_yaml_syntax_error_has_a_line():
    with pytest.raises(InputError, match=r"^s.yaml:3: not valid YAML"):
        parse_suite("name: x\nmodels: [minilm]\ntasks: [rte\n", "s.yaml")


def test_cli_bad_suite_exits_2_and_writes_nothing(tmp_path):
    suite = write_suite(tmp_path / "bad.yaml", "name: x\nmodels: [minilm]\ntasks: [rte]\nmethods: [{name: lora, rnk: 4}]\n")
    db = tmp_path / "db" / "h.db"
    out = tmp_path / "out"
    proc = run_cli("run", suite, "--db", f"sqlite:///{db}", "--output-dir", out, cwd=tmp_path)
    line = assert_refused(proc, "methods[0].rnk", where=suite)
    assert line == (f'error: {suite}:4: methods[0].rnk: unknown parameter for method "lora" (did you mean "rank"?); '
                    f"its parameters: rank, alpha, dropout, matrices (or any hparam)")
    assert not db.exists() and not (tmp_path / "db").exists() and not out.exists()
    assert not (tmp_path / "results").exists()


def test_cli_bad_db_url_exits_2(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", "name: x\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\n")
    assert_refused(run_cli("run", suite, "--db", "nonsense", "--output-dir", tmp_path / "out", cwd=tmp_path), "--db")
    assert not (tmp_path / "out").exists()


def test_validate_prints_grid_and_trains_nothing(tmp_path):
    suite = write_suite(tmp_path / "demo.yaml", BASE)
    proc = run_cli("validate", suite, "--list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "is valid: 132 cells" in proc.stdout
    assert len([l for l in proc.stdout.splitlines() if l.startswith("  ")]) == 132
    assert not (tmp_path / "results").exists()


def test_missing_suite_file_exits_2(tmp_path):
    assert_refused(run_cli("validate", tmp_path / "nope.yaml"), "cannot read suite file")


def test_shipped_suites_validate():
    from tests.helpers import ROOT

    for path in sorted((ROOT / "suites").glob("*.yaml")):
        suite = load_suite(str(path))
        assert suite.cells(), path


def test_a_cell_rebuilds_from_the_configuration_its_row_keeps():
    """What reads a store without the suite's YAML (the board's time left) rebuilds each cell from its row's
    `config`: the same cell, key and all, for every cell of the shipped suites (sequential and multi-task ones
    included) on one process and on two."""
    import json

    from harness.spec.cell import Cell
    from tests.helpers import ROOT

    for path in sorted((ROOT / "suites").glob("*.yaml")):
        for processes in (1, 2):
            for cell in load_suite(str(path)).cells(num_processes=processes):
                stored = json.loads(json.dumps(cell.config()))   # as the JSON column gives it back
                rebuilt = Cell.from_config(cell.suite, stored)
                assert rebuilt == cell and rebuilt.key == cell.key, (path, cell.label)


def test_ls_lists_every_task_method_and_alias():
    from harness.spec.methods import METHODS
    from harness.spec.tasks import TASKS

    proc = run_cli("ls")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert set(METHODS) | set(TASKS) | {"minilm"} <= listed
    assert "path=(required)" in proc.stdout and "init_std=(unset)" in proc.stdout
    # a task's other spellings, which a suite accepts (tasks: [sst-2]), on its line: ls showed none of them
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("    ")}
    assert lines["sst2"].endswith("Stanford Sentiment Treebank, binary (also written: sst-2)")
    assert all(f"(also written: {', '.join(t.aliases)})" in lines[t.name] for t in TASKS.values() if t.aliases)
    assert "sts-b" in lines["stsb"] and "(also written" not in lines["rte"]
