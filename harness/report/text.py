"""Plain-text lines for the terminal: a cell's status, an ablation matrix, a paired comparison."""

from __future__ import annotations

from harness.spec.status import CellState


def lease_owner(rec) -> str:
    """worker, host, pid and Slurm job of a record's (last) lease."""
    host = getattr(rec, "host", None)
    if not host:
        return "an earlier harness"
    text = f"{host} pid {rec.pid}"
    if rec.slurm_job_id:
        text += f", Slurm job {rec.slurm_job_id}"
        if rec.slurm_array_task_id is not None:
            text += f"_{rec.slurm_array_task_id}"
        if rec.slurm_restart_count:
            text += f" (requeued {rec.slurm_restart_count}x)"
    return text


def ago(when) -> str:
    from harness.store.lease import utcnow

    if when is None:
        return "never"
    s = max(0, int((utcnow() - when).total_seconds()))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def status_line(status: str, cell, rec) -> str:
    """One line of `harness status`: status, cell key and label, then what the store says about it."""
    detail = ""
    if status == CellState.COMPLETED:
        detail = f"score {rec.score:.2f}  {rec.train_time_s:.0f}s  by {lease_owner(rec)}"
    elif status == CellState.FAILED:
        detail = (rec.error or "").splitlines()[0][:120] if rec.error else ""
    elif status in (CellState.RUNNING, CellState.STALE):
        detail = (f"by {lease_owner(rec)}, since {ago(rec.started_at)}, last heartbeat {ago(rec.heartbeat_at)}"
                  f", attempt {rec.attempts}")
    return f"{status:<10} {cell.key}  {cell.label}  {detail}".rstrip()


def format_ablation(rec, payload: dict) -> str:
    n = payload["num_layers"]
    lines = [f"run {rec.id} ({rec.task}, {rec.method_label}): dev score {payload['baseline']:.2f} with every "
             f"adapter (recorded {payload['recorded_score']:.2f}); change when layers first..last lose theirs:",
             "first\\last " + " ".join(f"{j:>7}" for j in range(n))]
    cells = {(i, j): s - payload["baseline"] for i, j, s in payload["spans"]}
    for i in range(n):
        lines.append(f"{i:>10} " + " ".join(f"{cells[(i, j)]:>+7.2f}" if (i, j) in cells else f"{'':>7}"
                                            for j in range(n)))
    return "\n".join(lines)


def format_comparison(what: str, result) -> str:
    return (f"{what}: {result.n_examples} paired dev examples\n"
            f"score A {result.score_a:.2f}  score B {result.score_b:.2f}  A-B {result.diff:+.2f}  "
            f"95% CI [{result.ci_low:+.2f}, {result.ci_high:+.2f}]  p = {result.p_value:.4f} "
            f"(paired bootstrap, {result.resamples} resamples)")
