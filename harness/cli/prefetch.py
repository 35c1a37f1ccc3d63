"""`harness prefetch SUITE`: fill the Hugging Face cache for compute nodes without internet."""

from __future__ import annotations

from harness.cli.common import add_data_dir, add_max_cells, add_suite

HELP = ("download every model, tokenizer and data set a suite needs into the Hugging Face cache (for compute "
        "nodes without internet)")
EXAMPLES = """
  harness prefetch suites/glue.yaml                 (on a login node with internet)
  HF_HUB_OFFLINE=1 harness prefetch suites/glue.yaml --check
"""


def add_arguments(p) -> None:
    add_suite(p)
    add_data_dir(p, help="local GLUE directory (its tasks need no download)")
    p.add_argument("--check", action="store_true",
                   help="offline: list what is missing from the cache; exit 1 if anything is")
    add_max_cells(p)


def run(args) -> int:
    from harness.launch.prefetch import prefetch
    from harness.plan.preflight import check_data_dir
    from harness.plan.suite import load_suite

    suite = load_suite(args.suite, args.max_cells)
    # a folder that is not there (from --data-dir, the suite's data_dir or $HARNESS_DATA_DIR, as the tasks read
    # it): refused, not listed as every task's missing data
    check_data_dir(suite, args.data_dir)
    return prefetch(suite, data_dir=args.data_dir, check_only=args.check)
