"""The runs a result table selects from, in one place: the best table (harness/report/tables.py) and the tuning
budget's curves (harness/stats/evp.py) read the same rows."""

from __future__ import annotations

import json
import math

import pandas as pd

from harness.spec.hparams import EVALUATION_BUDGET, TRAINING_ONLY
from harness.spec.methods import METHODS, methods_with
from harness.spec.status import NOT_RESULTS, Regime, Status

COLUMN = ["suite", "task"]   # one task column of a suite's tables: one version in it, whatever the model


def seed_mean(values) -> float:
    """A setting's mean over its seeds' scores (missing ones left out; NaN without any), the sum exactly rounded
    (math.fsum): the same bits whatever order the runs were stored in. A running sum's last bits follow the order,
    so two variants with the same scores on other seeds, or one store and another holding the same runs, read an
    exact tie as a win."""
    values = [float(v) for v in values if pd.notna(v)]
    return math.fsum(values) / len(values) if values else math.nan


def with_setting_key(runs: pd.DataFrame) -> pd.DataFrame:
    """`setting_key` filled for rows from before that column: their cell key (one setting per cell then)."""
    return runs.assign(setting_key=runs["setting_key"].fillna(runs["cell_key"]))


def _as_dict(value) -> dict:
    """A runs frame's method_params / hparams (JSON text) or budget (budget_text's "k=v,..."), or a dict as is."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value:
        return {}
    if value.startswith("{"):
        return json.loads(value)
    return dict(part.split("=", 1) for part in value.split(","))


def evaluation_key(row) -> tuple | None:
    """What an evaluation-only run of a saved adapter and head scores (MethodSpec.evaluates_alike), as a key: its
    cell without the seed, the training hparams and the budget fields it does not read; None for any other run.
    `row`: a runs frame's row, or a store row's fields (dicts where the frame has text)."""
    spec = METHODS.get(row.method) if row.method in METHODS else None
    if spec is None or spec.trains_when is None:   # a method that always trains: nothing to parse
        return None
    params = _as_dict(row.method_params)
    if not spec.evaluates_alike(spec.resolve(params)):
        return None
    hparams = {k: v for k, v in _as_dict(row.hparams).items() if k not in TRAINING_ONLY}
    budget = _as_dict(row.budget)
    return (row.suite, row.model, row.task, getattr(row, "task_version", None), row.method_label,
            json.dumps(params, sort_keys=True), json.dumps(hparams, sort_keys=True),
            tuple(str(budget.get(k)) for k in EVALUATION_BUDGET), getattr(row, "num_processes", None))


def without_evaluation_repeats(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs less those that evaluate a saved adapter and head again as another run did (other seeds or budgets
    of one evaluation-only cell, which a store filled before plan/grid.py crossed such a cell with one seed holds):
    same predictions, so not seeds of a mean (a std of 0 over "3 seeds") nor settings tried. Keeps the completed
    run stored first (else the first stored); its seeds still queued do not count either."""
    if runs.empty or not {"id", "method", "method_params", "hparams", "budget"} <= set(runs.columns):
        return runs
    # (every table asks this of the same frame several times: a frame of methods that always train is not read)
    if not runs["method"].isin(methods_with("trains_when")).any():
        return runs
    keys = pd.Series([evaluation_key(r) for r in runs.itertuples()], index=runs.index)
    alike = keys.notna()
    if not alike.any():
        return runs
    first = runs[alike].assign(_key=keys[alike], _done=runs.loc[alike, "status"] == Status.COMPLETED)
    first = first.sort_values(["_done", "id"], ascending=[False, True], kind="stable")
    repeats = first.index[first["_key"].duplicated()]
    out = runs.drop(index=repeats)
    if "seeds_queued" in out:
        out = out.assign(seeds_queued=out["seeds_queued"].where(~alike[out.index], 0))
    return out


def selectable_runs(runs: pd.DataFrame, model: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Completed results (not a jointly trained task's member row or a sequence's earlier stage), `setting_key`
    filled for rows from before that column, and per (suite, task) only the runs of the newest task version among
    them: a task's version changes with its data, metric or head (STS-B version 2), so scores of two versions do
    not compare, nor do settings tried under either count as one tuning budget. A multi-task cell's member rows
    are kept whatever version they say: stores before 2026-12-06 gave them the joint row's version, not their
    task's (harness/store/queue.py `_child`). Returns (those runs, {task: {version: runs left out}}).

    `model`: one model's part of that selection. The newest version is still the suite's, so `runs` must hold
    every model's: a model whose cells of the new version have not finished shows no score for the task (as in
    the suite's table), not its old version's score as if it were comparable."""
    if runs.empty:
        return runs, {}
    runs = without_evaluation_repeats(runs)
    done = with_setting_key(runs[(runs["status"] == Status.COMPLETED) & ~runs["regime"].isin(NOT_RESULTS)])
    if done.empty or "task_version" not in done:   # (a frame built by hand may not have the column)
        return done, {}
    version = pd.to_numeric(done["task_version"], errors="coerce").fillna(-1)   # a store without the column: one
    member = done["regime"] == Regime.MULTITASK_MEMBER.value
    newest = version.where(~member).groupby([done[c] for c in COLUMN]).transform("max")
    older = ~member & (version < newest)
    if model is not None:
        mine = done["model"] == model
        done, version, older = done[mine], version[mine], older[mine]
    left_out: dict = {}
    for (task, v), group in done[older].groupby(["task", version[older]]):   # (sorted: not the stored order)
        left_out.setdefault(task, {})[int(v)] = len(group)
    return done[~older], left_out


def member_keys(joint_key: str, task: str) -> dict[str, str]:
    """{member task: setting key} of a multi-task cell's member rows, from its joint row's key and stored task
    ("+".join of the member tasks): member rows are written only once the cell completes (queue.py `_child`), so
    the joint row stands for them before."""
    return {t: f"{joint_key}.{t}" for t in str(task).split("+")}


def column_rows(runs: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows one task's column is computed from: the runs of `task` and the joint rows of the multi-task cells
    that train it, which stand for their member rows in the seeds planned and the settings failed (member_keys).
    Rows of `task` alone lose a failed multi-task seed: its cell has no member rows."""
    if runs.empty:
        return runs
    joint = (runs["regime"] == Regime.MULTITASK.value) & runs["task"].map(lambda t: task in member_keys("", t))
    return runs[(runs["task"] == task) | joint]


def planned_seeds(runs: pd.DataFrame) -> pd.Series:
    """Per (suite, setting_key): the seeds of that setting the store holds in any state (completed, failed, running,
    stale, and still queued: runs_frame's `seeds_queued`), against which a table says how many completed. A
    multi-task cell's member rows exist only once it completed: its joint row stands for them (member key: the
    joint key + "." + the task, queue.py `_child`)."""
    if runs.empty:
        return pd.Series(dtype=int)
    rows = with_setting_key(without_evaluation_repeats(runs))
    keys = rows.loc[~rows["regime"].isin(NOT_RESULTS), ["suite", "setting_key", "seed"]]
    joint = rows[rows["regime"] == Regime.MULTITASK.value]
    members = pd.DataFrame([(of_suite, member, seed) for of_suite, key, task, seed in
                            zip(joint["suite"], joint["setting_key"], joint["task"], joint["seed"])
                            for member in member_keys(key, task).values()], columns=["suite", "setting_key", "seed"])
    seen = pd.concat([keys, members]).groupby(["suite", "setting_key"])["seed"].nunique()
    if "seeds_queued" not in rows:   # (a frame built by hand)
        return seen
    queued = rows.groupby(["suite", "setting_key"])["seeds_queued"].max().fillna(0).astype(int)
    return seen.add(queued, fill_value=0).astype(int)


SETTING = ["suite", "model", "task", "method_label", "setting_key"]   # one setting of one task's column


def setting_rows(rows: pd.DataFrame, direct: pd.Series, **flags: pd.Series) -> pd.DataFrame:
    """The SETTING columns and `flags` (per-row values) of the rows `direct` selects, and of every multi-task
    cell's joint row once per member task, under the member's key (member_keys): a multi-task cell's member rows
    exist only once it completed, so its joint row stands for them."""
    single = rows.loc[direct, SETTING].assign(**{name: values[direct] for name, values in flags.items()})
    joint = rows[rows["regime"] == Regime.MULTITASK.value]
    members = pd.DataFrame(
        [(r.suite, r.model, task, r.method_label, member, *(values[i] for values in flags.values()))
         for i, r in zip(joint.index, joint.itertuples())
         for task, member in member_keys(r.setting_key, r.task).items()],
        columns=SETTING + list(flags))
    return pd.concat([single, members], ignore_index=True)


def failed_settings(runs: pd.DataFrame) -> dict[tuple, int]:
    """Per (suite, model, task, method_label): the settings tried whose every seed failed (none completed, none
    running or still queued), at the task version the table compares (the newest among completed results, as
    selectable_runs takes it). A setting that diverged spent tuning budget as much as one that scored, so
    "settings tried" and the unequal-budget note count it (the best mean and EVP can only use the ones that
    scored). A failed multi-task cell counts for each member task (member key: the joint key + "." + the task)."""
    if runs.empty:
        return {}
    rows = with_setting_key(without_evaluation_repeats(runs))   # (an evaluation's repeats are no settings tried)
    if "seeds_queued" not in rows:   # (a frame built by hand)
        rows = rows.assign(seeds_queued=0)
    version = pd.to_numeric(rows["task_version"], errors="coerce") if "task_version" in rows \
        else pd.Series(float("nan"), index=rows.index)
    direct = ~rows["regime"].isin(NOT_RESULTS) & (rows["regime"] != Regime.MULTITASK_MEMBER.value)
    ok = rows["status"] == Status.COMPLETED
    newest = version[direct & ok].groupby([rows.loc[direct & ok, c] for c in COLUMN]).max().to_dict()
    for key, v in version[direct].groupby([rows.loc[direct, c] for c in COLUMN]).max().items():
        newest.setdefault(key, v)   # a task with no completed result yet: its newest tried version
    gone = (rows["status"] == Status.FAILED) & (pd.to_numeric(rows["seeds_queued"], errors="coerce").fillna(0) == 0)
    member = rows["regime"] == Regime.MULTITASK_MEMBER.value
    newest_of = pd.Series([newest.get(k) for k in zip(rows["suite"], rows["task"])], index=rows.index, dtype=float)
    this_version = member | version.isna() | newest_of.isna() | (version == newest_of)
    every = setting_rows(rows, ~rows["regime"].isin(NOT_RESULTS) & this_version, gone=gone)
    if every.empty:
        return {}
    failed = every.groupby(SETTING, sort=False)["gone"].all()
    return {k: int(n) for k, n in failed[failed].groupby(level=[0, 1, 2, 3], sort=False).size().items()}


def unfinished_settings(runs: pd.DataFrame) -> dict[tuple, int]:
    """Per (suite, model, task, method_label): the settings with no completed seed yet and a seed still to come
    (running, stale, or queued: a failed seed whose setting has others queued is not the end of it). They are not
    among the settings tried, the score, the selection or EVP, which are over the finished settings only; the
    tables say how many there are (mid-sweep, a variant with 2 of its 4 settings done read as having tried 2).
    A setting with every seed still queued has no row in the frame: runs_frame's `settings_queued` counts those
    per variant. A multi-task cell's joint row stands for its members (member_keys)."""
    if runs.empty:
        return {}
    rows = with_setting_key(without_evaluation_repeats(runs))   # (nor settings to come)
    for col in ("seeds_queued", "settings_queued"):
        if col not in rows:   # (a frame built by hand)
            rows = rows.assign(**{col: 0})
    waiting = (rows["status"] == Status.RUNNING) | (pd.to_numeric(rows["seeds_queued"], errors="coerce") > 0)
    every = setting_rows(rows, ~rows["regime"].isin(NOT_RESULTS), done=rows["status"] == Status.COMPLETED,
                         waiting=waiting)
    out: dict[tuple, int] = {}
    if not every.empty:
        state = every.groupby(SETTING, sort=False)[["done", "waiting"]].any()
        open_ = state[~state["done"] & state["waiting"]]
        out = {k: int(n) for k, n in open_.groupby(level=[0, 1, 2, 3], sort=False).size().items()}
    # settings with every seed queued (no row of them): a variant's count rides on each of its rows; a joint row's
    # is its member tasks' (the same settings for each)
    queued = pd.to_numeric(rows["settings_queued"], errors="coerce").fillna(0)
    per_task = [((r.suite, r.model, task, r.method_label), n)
                for r, n in zip(rows.itertuples(), queued) if n
                for task in (member_keys("", r.task) if r.regime == Regime.MULTITASK.value else (r.task,))]
    for key, n in pd.DataFrame(per_task, columns=["key", "n"]).groupby("key", sort=False)["n"].max().items() \
            if per_task else ():
        out[key] = out.get(key, 0) + int(n)
    # a variant's task whose every setting is queued: no row to carry it (runs_frame keeps these apart)
    for *key, n in runs.attrs.get("settings_queued_alone") or []:
        out[tuple(key)] = out.get(tuple(key), 0) + int(n)
    return out
