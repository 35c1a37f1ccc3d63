"""The Grid page: a suite in progress -- how much is done, what runs where, what is stuck, what failed, and when
it will be done. Refreshes on its own while cells run (a fragment rerun every REFRESH_S seconds; it stops once
nothing runs). Reads the store like every page: read-only, queries per suite, nothing cached (a live view) but the
time left, which is computed again whenever a cell changes state and else every ESTIMATE_TTL_S.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from harness.board import reread, urlstate
from harness.report.export import md_escape
from harness.report.grid import cells_frame
from harness.report.text import duration, time_left_source   # as `harness status` says them: the two agree
from harness.spec.status import CellState, share   # as a worker's progress lines say it too
from harness.store.engine import StoreChanged

REFRESH_S = 5   # a heartbeat comes every 30 s by default: 5 s shows a claim or a finish promptly, at 1 query/5 s
ESTIMATE_TTL_S = 30   # the time left, which reads much more (_cached_estimate), at most this often between changes
STATES = [s.value for s in CellState]
STALE_STYLE = "background-color: rgba(248, 81, 73, 0.22)"
# the board knows a suite by its name, not its YAML: it cannot tell a cell removed from the YAML from one still in it
ROWS_NOT_YAML = ("The cells counted are the rows the store holds of this suite: a cell removed from the suite's YAML "
                 "after it was queued stays counted here (pending or stale for good, and in the time left); "
                 "`harness status SUITE.yaml` counts the YAML's cells and says how many rows are no cell of it.")


def slurm_text(row) -> str:
    if not row.slurm_job_id:
        return ""
    task = row.slurm_array_task_id
    return f"{row.slurm_job_id}" + ("" if task is None or pd.isna(task) else f"_{int(task)}")


def workers_table(cells: pd.DataFrame, now) -> pd.DataFrame:
    """One row per held lease (running or stale cell): who holds it, where, and how old its heartbeat is."""
    held = cells[cells["state"].isin([CellState.RUNNING.value, CellState.STALE.value])]
    rows = [{"state": r.state, "heartbeat age (s)": _age(now, r.heartbeat_at), "worker": r.worker_id,
             "host": r.host, "slurm job/task": slurm_text(r), "cell": r.cell_key, "model": r.model, "task": r.task,
             "method": r.method_label, "seed": r.seed, "running for": duration(_age(now, r.started_at), "–"),
             "pid": "" if pd.isna(r.pid) else str(int(r.pid))} for r in held.itertuples()]
    return pd.DataFrame(rows, columns=["state", "heartbeat age (s)", "worker", "host", "slurm job/task", "cell",
                                       "model", "task", "method", "seed", "running for", "pid"])


def _age(now, then):
    if then is None or pd.isna(then):
        return None
    return round((pd.Timestamp(now) - pd.Timestamp(then)).total_seconds(), 1)


def failures_table(cells: pd.DataFrame, suite: str) -> pd.DataFrame:
    failed = cells[cells["state"] == CellState.FAILED.value]
    rows = [{"cell": r.cell_key, "model": r.model, "task": r.task, "method": r.method_label, "seed": r.seed,
             "attempts": r.attempts, "reason": first_line(r.error),
             "run page": urlstate.link(page="Runs", suite=suite, model=r.model, run=int(r.id))}
            for r in failed.itertuples()]
    return pd.DataFrame(rows, columns=["cell", "model", "task", "method", "seed", "attempts", "reason", "run page"])


def first_line(text) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""   # the runner stores the reason first, then the traceback


def by_state(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per (model, task, method variant) and state, in the suite's order."""
    table = pd.crosstab([cells["model"], cells["task"], cells["method_label"]], cells["state"])
    table = table.reindex(columns=STATES, fill_value=0)
    order = cells.drop_duplicates(["model", "task", "method_label"])[["model", "task", "method_label"]]
    table = table.reindex(pd.MultiIndex.from_frame(order)).reset_index()
    return table.rename(columns={"method_label": "method"})


def page_grid(store, suite: str) -> None:
    from harness.spec.status import lease_timeout

    timeout = lease_timeout(None)
    cells, _ = cells_frame(store, suite, timeout)
    if cells.empty:
        st.info(f"No cells of suite {md_escape(suite)} in the store yet: a worker queues them when it starts "
                f"(`harness run SUITE.yaml`).")
        return
    live = bool((cells["state"] == CellState.RUNNING.value).any())
    st.fragment(run_every=REFRESH_S if live else None)(_grid)(store, suite, timeout, live)


def _grid(store, suite: str, timeout: float, was_live: bool) -> None:
    """(Its timed refreshes rerun it alone, without the page's main(): it reads again itself, reread.py.)"""
    shown = st.empty()   # what a torn read drew is taken away with it
    try:
        with shown.container(), store.snapshot():   # the cells, their counts and the time left from one state
            cells, now = cells_frame(store, suite, timeout)
            _grid_of(store, suite, timeout, was_live, cells, now)
    except StoreChanged:
        reread.read_again()
        shown.empty()
        st.warning(reread.given_up(store.url))
        return
    reread.read_fine()


def _grid_of(store, suite: str, timeout: float, was_live: bool, cells: pd.DataFrame, now) -> None:
    running = bool((cells["state"] == CellState.RUNNING.value).any())
    if was_live and not running:
        st.rerun(scope="app")   # nothing runs any more: redraw once without the refresh timer
    counts = cells["state"].value_counts().reindex(STATES, fill_value=0)
    n = len(cells)
    done = int(counts[CellState.COMPLETED.value])
    st.subheader(f"{md_escape(suite)}: {done} of {n} cells completed")
    st.progress(done / n, text=f"{share(done, n)} completed")
    for col, state in zip(st.columns(len(STATES)), STATES):
        col.metric(state, f"{counts[state]:,}", f"{share(counts[state], n)} of the cells",
                   delta_color="off", delta_arrow="off")
    _time_left(store, suite, timeout, n - done - int(counts[CellState.FAILED.value]), cells, now)
    st.caption(f"Read at {pd.Timestamp(now):%H:%M:%S} UTC (the store's clock)"
               + (f"; refreshes every {REFRESH_S} s while cells run." if running else "; nothing runs now.")
               + f" A lease is stale after {timeout:g} s without a heartbeat: the next worker takes its cell over.")
    st.caption(ROWS_NOT_YAML)

    st.markdown("**Workers**")
    workers = workers_table(cells, now)
    if workers.empty:
        st.caption("No worker holds a cell now.")
    else:
        style = workers.style.apply(lambda r: [STALE_STYLE if r["state"] == CellState.STALE.value else ""] * len(r),
                                    axis=1).format({"heartbeat age (s)": "{:.0f}"}, na_rep="never")
        st.dataframe(style, hide_index=True, width="stretch")

    st.markdown("**Failures**")
    failures = failures_table(cells, suite)
    if failures.empty:
        st.caption("No failed cell.")
    else:
        st.dataframe(failures, hide_index=True, width="stretch",
                     column_config={"run page": st.column_config.LinkColumn("run page", display_text="open run")})

    st.markdown("**Cells by state**")
    st.dataframe(by_state(cells), hide_index=True, width="stretch")
    shown = urlstate.choose_many(st.multiselect, "List the cells that are", STATES, "state")
    if shown:
        view = cells[cells["state"].isin(shown)]
        st.dataframe(view[["cell_key", "model", "task", "method_label", "seed", "learning_rate", "state", "attempts",
                           "host", "worker_id"]].rename(columns={"method_label": "method"}),
                     hide_index=True, width="stretch")


def estimate(store, suite: str, lease_timeout_s: float, now=None) -> dict:
    """The time left as `harness status` computes it (harness.report.progress.time_left), over the cells the store
    has a row of: the board knows a suite by its name, not its YAML, so cells not queued yet are not counted
    (`harness status SUITE.yaml` counts them). Task sizes from the stored runs, else the files at
    $HARNESS_DATA_DIR where the board has it (a suite's own `data_dir:` is in its YAML, which the board does not
    read), else the caps. `now`: the database's clock, which stamped the running cells' start."""
    from harness.plan.grid import locate_data
    from harness.report.progress import row_states, time_left

    return time_left(store, row_states(store, suite, lease_timeout_s), data_dir=locate_data(None).path,
                     now=None if now is None else _naive_utc(now))


@st.cache_data(ttl=ESTIMATE_TTL_S, show_spinner=False)
def _cached_estimate(_store, url: str, suite: str, lease_timeout_s: float, states: tuple, _now) -> dict:
    """estimate(), computed again when a cell changes state (`states`, the cells' (id, state) pairs, is part of
    the key) and else at most every ESTIMATE_TTL_S: it reads every row of the suite, and where a setting has no
    completed cell every completed run of the store (arguments named with _ are not part of the key)."""
    return estimate(_store, suite, lease_timeout_s, _now)


def _naive_utc(value) -> dt.datetime:
    stamp = pd.Timestamp(value)
    return (stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp).to_pydatetime()


def _time_left(store, suite: str, timeout: float, left: int, cells: pd.DataFrame, now) -> None:
    key = tuple(zip(cells["id"].tolist(), cells["state"].tolist()))
    try:
        est = _cached_estimate(store, store.url, suite, timeout, key, now)
    except StoreChanged:   # the whole read again (_grid), not "no estimate"
        raise
    except Exception as exc:   # noqa: BLE001 -- advice only: the rest of the page does not need it
        st.metric("Time left (estimate)", "unknown" if left else "nothing left")
        st.caption(md_escape(f"No estimate ({type(exc).__name__}: {exc})", cell=False))
        return
    secs, pm = est["left_s"], est["plus_minus_s"]
    shown = ("nothing left" if not left else "unknown yet" if secs is None
             else f"~{duration(secs)}" + (f" ± {duration(pm)}" if pm else ""))
    st.metric("Time left (estimate)", shown,
              help="As `harness status` computes it: per setting (seeds and optimizer scalars pooled), the mean time "
                   "of this suite's completed cells, else the stored runs' throughput on its device, times the cells "
                   "not done yet (a running cell less the time it has run), divided by the live workers; ± the "
                   "rates' spread. Cells not queued yet are not counted.")
    unknown = (f" · {est['unestimated']} cell(s) without an estimate: {'; '.join(est['unestimated_why'])}"
               if left and est["unestimated"] else "")
    checked = (f" · the workers' predictions at claim, for {est['predicted_cells']} completed cell(s): "
               f"{duration(est['predicted_s'])} predicted, {duration(est['predicted_actual_s'])} taken (ratio "
               f"{est['ratio']:.2f})" if est["predicted_cells"] else "")
    source = f" · estimated {time_left_source(est['stored_device'])}" if left and secs is not None else ""
    st.caption(md_escape(f"{est['live_workers']} live worker(s){source}{unknown}{checked}", cell=False))
    groups = [{k: v for k, v in g.items() if k != "method"} for g in est["groups"] if g["left"]]
    if groups:
        with st.expander("Time left per model, method variant, task and budget"):
            st.dataframe(pd.DataFrame(groups).rename(columns={"variant": "method", "mean_s": "mean s per cell",
                                                              "work_s": "work s left"}),
                         hide_index=True, width="stretch")
