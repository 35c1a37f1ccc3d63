"""How close `harness estimate` comes to what a suite's cells measured, on a store where the suite has finished.

Held-out seeds (the default): a copy of the store without one seed's runs predicts that seed's cells, as
`harness estimate --from-store` would have before they ran (its throughput from the other seeds' runs, its
frozen features from theirs), and each prediction is set against the cell's measured train + eval time. With
`--pilot FILE` (the JSON of `harness estimate SUITE --pilot --json`, run on the same machine type before or after)
the pilot's predictions are compared instead. Per method variant and in total: predicted, measured, ratio.

A machine's speed moves between a pilot and a store measured minutes or days apart (a 2-core VM: 1.02-1.76x for
the same pilot within an hour), which hides the pilot's own error. `--interleaved` needs no store: for each cell
of `--seed` (default: the suite's first) it runs the cell's pilot and then the cell itself, in this process, in
temporary folders, so both see the machine at the same minutes; it prints the pilot's prediction scaled to the
cell's padding (what `harness estimate --pilot` does) and unscaled, against the cell's train + eval time.

  harness run suites/demo.yaml                       # the store: results/harness.db
  python bench/bench_estimate.py suites/demo.yaml --db results/harness.db --seed 2 [--write]
  harness estimate suites/demo.yaml --pilot --json > pilot.json
  python bench/bench_estimate.py suites/demo.yaml --db results/harness.db --pilot pilot.json [--write]
  python bench/bench_estimate.py suites/demo.yaml --interleaved [--seed 1] [--write]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sqlalchemy import delete  # noqa: E402

from harness.plan.suite import load_suite  # noqa: E402
from harness.report import progress  # noqa: E402
from harness.spec.status import Status  # noqa: E402
from harness.store.db import Store  # noqa: E402
from harness.store.schema import RunRecord as R  # noqa: E402
from results_md import append_section  # noqa: E402


def measured(store, suite: str) -> dict[str, float]:
    """{cell key: train + eval seconds} of the suite's completed cells (a sequence's every stage)."""
    done = [r for r in store.records(suite) if r.status == Status.COMPLETED.value and r.parent_id is None]
    earlier = progress.stages_eval_s(store, done)
    took = {r.cell_key: progress.cell_time_s(r, earlier.get(r.id, 0.0)) for r in done}
    return {key: seconds for key, seconds in took.items() if seconds is not None}


def held_out(db: str, suite: str, cells, seed: int, data_dir: str | None) -> dict[str, float]:
    """Predictions of the cells of `seed` from a copy of the SQLite store `db` without the suite's runs of that
    seed."""
    path = db.removeprefix("sqlite:///")
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        copy = os.path.join(tmp, "h.db")
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)   # the WAL's pages too: a plain file copy would miss them
        store = Store(f"sqlite:///{copy}")
        with store.engine.begin() as conn:
            conn.execute(delete(R).where(R.suite == suite, R.seed == seed))
        est = progress.estimate([c for c in cells if c.seed == seed], store, data_dir=data_dir)
        store.engine.dispose()
    return {e.key: e.seconds for e in est.cells if e.seconds is not None}


def interleaved(suite, cells, data_dir: str | None) -> tuple[dict, dict, dict]:
    """({cell key: predicted s}, the same unscaled, {cell key: measured s}): each cell's pilot, then the cell."""
    from harness.cli import estimate as cli
    from harness.train.context import RunContext
    from harness.train.recipe import train_and_evaluate

    scaled, unscaled, actual = {}, {}, {}
    to_cell_padding = cli.to_cell_padding

    def keep_both(obs, *args):
        unscaled_obs.append(obs)
        return to_cell_padding(obs, *args)

    cli.to_cell_padding = keep_both
    sizes = progress.DataSizes(None, data_dir)
    try:
        for n, cell in enumerate(cells):
            unscaled_obs = []
            print(f"cell {n + 1}/{len(cells)}: {cell.task} {cell.method_label}", file=sys.stderr, flush=True)
            observations = cli.pilot(suite, [cell], data_dir, cli.PILOT_STEPS)
            for out, obs in ((scaled, observations), (unscaled, unscaled_obs)):
                (est,) = progress.estimate([cell], None, observations=obs, sizes=sizes).cells
                if est.seconds is not None:
                    out[cell.key] = est.seconds
            with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
                ctx = RunContext(data_dir=data_dir, cache_dir=os.path.join(tmp, "cache"), show_progress=False,
                                 model_base_dir=os.path.dirname(os.path.abspath(suite.path)))
                r = train_and_evaluate(cell, ctx, output_dir=os.path.join(tmp, "out"))
            actual[cell.key] = progress.cell_time_s(r, sum(st.eval_time_s or 0.0 for st in r.stages or []))
    finally:
        cli.to_cell_padding = to_cell_padding
    return scaled, unscaled, actual


def table(cells, predicted: dict, actual: dict) -> list[str]:
    by = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for c in cells:
        if c.key in predicted and c.key in actual:
            row = by[(c.task, c.method_label)]
            row[0] += predicted[c.key]
            row[1] += actual[c.key]
            row[2] += 1
    lines = [f"| {task} {label} | {n} | {p:.1f} | {a:.1f} | {p / a if a else float('nan'):.2f} |"
             for (task, label), (p, a, n) in by.items()]
    p, a = sum(v[0] for v in by.values()), sum(v[1] for v in by.values())
    if not a:
        raise SystemExit("no cell has both a prediction and a measured time")
    lines.append(f"| **total** | {sum(v[2] for v in by.values())} | {p:.0f} | {a:.0f} | **{p / a:.2f}** |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("--db", default="sqlite:///results/harness.db", help="the finished store (SQLite)")
    ap.add_argument("--seed", type=int, default=None,
                    help="the seed held out (default: the suite's last); with --interleaved, the seed run "
                         "(default: the first)")
    ap.add_argument("--pilot", default=None, help="compare this `harness estimate --pilot --json` output instead")
    ap.add_argument("--interleaved", action="store_true",
                    help="no store: each cell's pilot, then the cell, side by side (the cells of --seed)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    db = args.db if "://" in args.db else f"sqlite:///{args.db}"
    suite = load_suite(args.suite)
    cells = suite.cells()
    if args.interleaved:
        seed = args.seed if args.seed is not None else min(c.seed for c in cells)
        cells = [c for c in cells if c.seed == seed]
        scaled, unscaled, actual = interleaved(suite, cells, suite.data_dir(args.data_dir))
        command = f"python bench/bench_estimate.py {args.suite} --interleaved --seed {seed}"
        comparisons = [("each cell's pilot, scaled to the cell's padding, then the cell", scaled, command),
                       ("each cell's pilot, unscaled, then the cell", unscaled, command)]
    else:
        actual = measured(Store(db, read_only=True), suite.name)
        if args.pilot:
            with open(args.pilot) as f:
                predicted = {c["key"]: c["seconds"] for c in json.load(f)["cells"] if c["seconds"] is not None}
            comparisons = [("the pilot's estimate", predicted,
                            f"python bench/bench_estimate.py {args.suite} --pilot {args.pilot}")]
        else:
            seed = args.seed if args.seed is not None else max(c.seed for c in cells)
            comparisons = [(f"seed {seed} from the other seeds' runs",
                            held_out(db, suite.name, cells, seed, suite.data_dir(args.data_dir)),
                            f"python bench/bench_estimate.py {args.suite} --seed {seed}")]
    for what, predicted, command in comparisons:
        lines = table(cells, predicted, actual)
        print(f"{suite.name}: {what}, against the measured train + eval time")
        print("\n".join(lines))
        if args.write:
            append_section(f"harness estimate against the measured {suite.name}: {what}", command,
                           ["task, method", "cells", "predicted s", "measured s", "ratio"], lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
