"""`harness ls`: the tasks (with the other spellings a suite accepts), methods and model aliases the harness knows."""

from __future__ import annotations

HELP = "list tasks, methods and model aliases"
EXAMPLES = """
  harness ls
"""


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    from harness.spec.methods import METHODS
    from harness.spec.models import ALIASES
    from harness.spec.tasks import TASKS

    print("tasks:")
    width = max(len(name) for name in TASKS)
    for benchmark in dict.fromkeys(t.benchmark for t in TASKS.values()):
        print(f"  {benchmark.upper()}:")
        for t in (t for t in TASKS.values() if t.benchmark == benchmark):
            also = f" (also written: {', '.join(t.aliases)})" if t.aliases else ""   # what a suite accepts for it
            print(f"    {t.name:<{width}} v{t.version}  {t.kind:<15} main: {'+'.join(t.main):<16} "
                  f"metrics: {', '.join(t.metric_names()):<40} {t.description}{also}")
            if t.note:   # under its task: what to know before trusting its scores
                print(f"    {'':<{width}} note: {t.note}")
    print("methods:")
    for m in METHODS.values():
        params = ", ".join(f"{k}={'(unset)' if p.default is None else '(required)' if p.default == '' else p.default}"
                           for k, p in m.params.items())
        print(f"  {m.name:<18} {m.description}" + (f"  [{params}]" if params else ""))
    print("model aliases:")
    for name, (_, what) in ALIASES.items():
        print(f"  {name:<8} {what}")
    return 0
