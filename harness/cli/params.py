"""`harness params SUITE`: parameter counts per model x method, from configs alone."""

from __future__ import annotations

import sys

from harness.cli.common import add_max_cells, add_suite, task_option

HELP = "total / trainable / added parameters per model x method of a suite, from configs alone (trains nothing)"
EXAMPLES = """
  harness params suites/glue.yaml
  harness params suites/glue.yaml --task stsb
"""


def add_arguments(p) -> None:
    add_suite(p)
    p.add_argument("--task", default=None, help="task whose head is counted (default: the suite's first, and "
                                                "each multi-task entry's joint model)")
    add_max_cells(p)


def run(args) -> int:
    from harness.analysis.accounting import format_rows, known_config, param_rows, uncounted_variants
    from harness.plan.preflight import check_configuration
    from harness.plan.suite import load_suite
    from harness.train.context import quiet_libraries

    suite = load_suite(args.suite, args.max_cells)
    # what validate refuses in the models, methods, lengths and adapters (a count of a suite that cannot run is
    # no count); not its data: params reads none
    check_configuration(suite, suite.locate(), known=known_config)
    task = task_option(args.task) if args.task else None
    quiet_libraries()
    rows = param_rows(suite, task)
    sys.stdout.write(format_rows(rows, uncounted_variants(suite)))
    return 0
