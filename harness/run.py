"""`accelerate launch -m harness.run SUITE [options]`: one worker of `harness run` (same options) under a launcher.

From any folder once the package is installed; from a checkout, `accelerate launch harness/run.py SUITE` works too
(the package must be importable: installed, or the checkout on PYTHONPATH).
"""

import sys

from harness.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))
