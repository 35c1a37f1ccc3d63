"""How fast bad input is refused and a large grid validated: the time limits the tests used to assert.

Times, in one process, through the CLI's main (`harness validate`) where a user would meet them: every file of the
malformed-suite corpus (tests/bad_suites/; the slowest one), a suite of 100,000 seeds refused by the grid cap and
again with one seed twice under --max-cells 200000 (the duplicate scan is linear: a quadratic one hung), and a
10,000-cell grid (the default cap) parsed and expanded into cells (best of 3, after a warm-up). Targets: a refusal
under 2 s, the 100,000-seed suite under 3 s, the 10,000 cells under 1 s; the exit status says whether all were met.

  python bench/bench_validate.py [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from harness.cli import main as cli_main  # noqa: E402
from harness.plan.suite import parse_suite  # noqa: E402
from results_md import append_section  # noqa: E402


def timed_validate(*argv) -> tuple[int, float]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t = time.perf_counter()
        code = cli_main(["validate", *map(str, argv)])
        return code, time.perf_counter() - t


def grid_suite(n_seeds: int) -> str:
    # 4 tasks x 5 methods x 5 learning rates x 4 budgets x n seeds
    return ("name: big\nmodels: [minilm]\ntasks: [rte, mrpc, stsb, cola]\n"
            "methods: [full, linear_probe, bitfit, {name: houlsby, size: 16}, {name: lora, rank: 4}]\n"
            "budgets: [{epochs: 1}, {epochs: 2}, {epochs: 3}, {max_steps: 100}]\n"
            f"seeds: [{', '.join(map(str, range(n_seeds)))}]\n"
            "hparams: {learning_rate: [1e-5, 2e-5, 5e-5, 1e-4, 3e-4]}\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    corpus = sorted(os.path.join(ROOT, "tests", "bad_suites", f)
                    for f in os.listdir(os.path.join(ROOT, "tests", "bad_suites")) if f.endswith(".yaml"))
    timed_validate(corpus[0])   # imports out of the measurement
    refusals = []
    for path in corpus:
        code, took = timed_validate(path)
        assert code == 2, path
        refusals.append((took, os.path.basename(path)))
    slowest_s, slowest = max(refusals)

    with tempfile.TemporaryDirectory(prefix="validate-bench-") as tmp:
        seeds = os.path.join(tmp, "seeds.yaml")
        text = ("name: many\nmodels: [minilm]\ntasks: [rte]\nmethods: [full]\nseeds: ["
                + ", ".join(map(str, range(100_000))) + "]\n")
        with open(seeds, "w") as f:
            f.write(text)
        code, cap_s = timed_validate(seeds)
        assert code == 2
        with open(seeds, "w") as f:
            f.write(text.replace("99999]", "0]"))
        code, dup_s = timed_validate(seeds, "--max-cells", 200_000)
        assert code == 2

    text = grid_suite(25)   # 10,000 cells: the default cap exactly
    parse_suite(text, "warm.yaml")
    grid = []
    for _ in range(3):
        t = time.perf_counter()
        cells = parse_suite(text, "big.yaml").cells()
        grid.append(time.perf_counter() - t)
    assert len(cells) == 10_000
    grid_s = min(grid)

    checks = [(f"slowest refusal of the {len(corpus)} bad suites ({slowest})", slowest_s, 2.0),
              ("100,000 seeds refused by the grid cap", cap_s, 3.0),
              ("100,000 seeds, one twice, refused under --max-cells 200000", dup_s, 3.0),
              ("10,000-cell grid parsed and expanded (best of 3)", grid_s, 1.0)]
    lines = [f"| {what} | {took:.3f} s | < {limit:g} s |" for what, took, limit in checks]
    print("\n".join(lines))
    if args.write:
        append_section("validation speed", "python bench/bench_validate.py", ["step", "time", "target"], lines)
    return 0 if all(took < limit for _, took, limit in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
