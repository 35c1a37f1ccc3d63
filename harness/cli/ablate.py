"""`harness ablate RUN...`: remove the adapters of every span of layers of a stored run and re-score on dev."""

from __future__ import annotations

from harness.cli.common import add_cache_dir, add_data_dir, add_db, default_cache_dir, existing_store, find_run
from harness.spec.errors import InputError

HELP = ("remove the adapters of every span of layers of a stored run and re-score on dev (Houlsby et al. Fig. 6); "
        "stores the matrix")
EXAMPLES = """
  harness ablate 12                         (run id 12 of the default store)
  harness ablate 3f9c2a1b --db sqlite:///out/h.db --data-dir /path/to/glue
  harness ablate 12 --trust-remote-code someorg/model  (runs someorg/model's own code, for runs of that model only)
"""


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run id or cell key")
    add_db(p)
    add_data_dir(p, help="local GLUE directory (default: $HARNESS_DATA_DIR, then the hub)")
    add_cache_dir(p, default=default_cache_dir())
    p.add_argument("--trust-remote-code", action="append", default=[], metavar="MODEL",
                   help="run the own code of MODEL's repository (repeatable), for runs of exactly that model; the "
                        "model id read from the store is never trusted by itself, since anyone who can write to "
                        "the store could change it")


def run(args) -> int:
    from harness.analysis.ablate import ablate, check_ablatable, check_same_data
    from harness.plan.grid import locate_data
    from harness.report.text import format_ablation
    from harness.train.context import RunContext, quiet_libraries

    # every reference found and checked on the store read-only, before any work: opening it for writing migrates
    # an older store, which a refused command must leave as it was
    reader = existing_store(args.db)
    # a run named twice (`4 4`, or its id and its cell key) is ablated and stored once
    records = list({rec.id: rec for rec in (find_run(reader, ref) for ref in args.runs)}.values())
    reader.engine.dispose()
    for rec in records:
        check_ablatable(rec)
    trusted = set(args.trust_remote_code)   # named here, never read from a stored row
    unused = sorted(trusted - {rec.model for rec in records})
    if unused:
        raise InputError(f"--trust-remote-code {unused[0]}: no run given is of this model (their models: "
                         f"{', '.join(sorted({rec.model for rec in records}))})")
    quiet_libraries()
    ctx = RunContext(data_dir=locate_data(args.data_dir).path, cache_dir=args.cache_dir, show_progress=False)
    for rec in records:   # every run's dev data before any is ablated: a refusal leaves the store as it was
        check_same_data(rec, ctx)
    store = None
    for rec in records:
        payload = ablate(rec, ctx, trust_remote_code=rec.model in trusted)
        store = store or existing_store(args.db, read_only=False)   # for writing once there is a result to store
        store.add_analysis(rec.id, "adapter_ablation", payload, measured_on=rec)
        print(format_ablation(rec, payload))
    return 0
