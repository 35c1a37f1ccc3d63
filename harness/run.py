"""Entry point for `accelerate launch harness/run.py SUITE [options]` (same options as `harness run`)."""

import os
import sys

# Run as a script, this file's folder is sys.path[0]; drop it so the package's module names cannot shadow
# anything, and make the checkout importable when the package is not installed.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))
