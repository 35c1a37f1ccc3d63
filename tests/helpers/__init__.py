"""What the tests import besides their fixtures (tests/conftest.py): the checkout root, files the tests build, the
command line and the refusal check, a worker's log read up to a line. The servers the store and Slurm tests start
are in their own modules (tests.helpers.postgres, tests.helpers.slurm_cluster), as is the store with known numbers
(tests.helpers.fixture_store)."""

from tests.helpers.cli import assert_refused, call_cli, run_cli
from tests.helpers.files import (ROOT, at_rest, listing, make_tiny_model, real_glue_dir, suite_yaml,
                                 write_small_glue, write_small_squad, write_suite)
from tests.helpers.procs import read_stderr_until

__all__ = ["ROOT", "assert_refused", "at_rest", "call_cli", "listing", "make_tiny_model", "read_stderr_until",
           "real_glue_dir", "run_cli", "suite_yaml", "write_small_glue", "write_small_squad", "write_suite"]
