"""`harness ablate RUN...`: remove the adapters of every span of layers of a stored run and re-score on dev."""

from __future__ import annotations

from harness.cli.common import add_cache_dir, add_data_dir, add_db, default_cache_dir, existing_store, find_run

HELP = ("remove the adapters of every span of layers of a stored run and re-score on dev (Houlsby et al. Fig. 6); "
        "stores the matrix")
EXAMPLES = """
  harness ablate 12                         (run id 12 of the default store)
  harness ablate 3f9c2a1b --db sqlite:///out/h.db --data-dir /path/to/glue
"""


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id or cell key")
    add_db(p)
    add_data_dir(p, help="local GLUE directory (default: $HARNESS_DATA_DIR, then the hub)")
    add_cache_dir(p, default=default_cache_dir())
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the model's own code from its repository; never taken from the store, which anyone "
                        "who can write to it could change")


def run(args) -> int:
    from harness.analysis.ablate import ablate
    from harness.plan.grid import locate_data
    from harness.report.text import format_ablation
    from harness.train.context import RunContext, quiet_libraries

    store = existing_store(args.db, read_only=False)
    records = [find_run(store, ref) for ref in args.runs]  # every reference checked before any work
    quiet_libraries()
    ctx = RunContext(data_dir=locate_data(args.data_dir).path, cache_dir=args.cache_dir, show_progress=False)
    for rec in records:
        payload = ablate(rec, ctx, trust_remote_code=args.trust_remote_code)
        store.add_analysis(rec.id, "adapter_ablation", payload)
        print(format_ablation(rec, payload))
    return 0
