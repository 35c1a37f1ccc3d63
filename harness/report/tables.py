"""Tables from stored runs, shared by `harness export` and the leaderboard.

- runs: one flat row per run.
- best: the Houlsby et al. protocol -- for each (model, task, method variant) pick the hyperparameter setting
  (everything but the seed) with the best mean dev score, then report mean +- std over that setting's seeds.
- leaderboard: method variants x tasks of `best`, with the average, the trainable share and the parameters
  needed to solve all the tasks (one shared frozen base plus what each task trains).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from harness.report.provenance import data_by_task, model_files, run_data, run_skipped, skipped_by_task
from harness.stats import significance
from harness.stats.flags import is_trivial, still_improving, trivial_score
from harness.stats.selection import (evaluation_key, failed_settings, member_keys, planned_seeds, seed_mean,
                                     selectable_runs, unfinished_settings, with_setting_key)
from harness.spec.cell import base_label, budget_text
from harness.spec.methods import methods_with
from harness.spec.status import Regime, Status
from harness.spec.tasks import TASKS

RUN_COLUMNS = ["id", "suite", "cell_key", "model", "task", "method", "method_label", "method_params", "budget",
               "seed", "learning_rate", "status", "score", "best_score"]
ENV_COLUMNS = ["torch", "transformers", "adapters", "git_commit", "git_dirty", "device", "host"]
COST_COLUMNS = ["trainable_params", "added_params", "total_params", "head_params", "trainable_pct", "train_time_s",
                "eval_time_s", "peak_memory_mb", "peak_memory_kind", "train_examples_per_s", "train_tokens_per_s",
                "steps", "epochs_done", "train_examples", "eval_examples", "train_flops", "eval_flops", "flops_per_s",
                "mfu", "num_threads", "num_processes", "stopped_by", "error", "started_at", "finished_at"]


FLAT = RUN_COLUMNS + COST_COLUMNS + ["hparams", "regime", "parent_id", "stage", "embedding_params", "encoder_params",
                                     "adapter_bytes", "setting_key", "task_version", "output_dir", "data",
                                     "model_files", "ran_on", "rows_skipped"]


DERIVED = ["trivial_score", "still_improving"]   # from the trivial_scores and history columns (harness.stats.flags)

# the std of a cell's seeds: the sample standard deviation (n - 1 in the denominator); the tables' footnote says so
# (STD_NOTE), since numpy's default (n) gives another number from the same runs
SEED_STD_DDOF = 1
STD_NOTE = ("± std: the sample standard deviation over the chosen setting's seeds (n - 1 in the denominator); "
            "a cell with one seed shows its score alone.")


def ran_on(device, precision, threads, processes=None) -> str | None:
    """Where a run trained, as far as its score depends on it: "CPU: AMD EPYC (AVX512-BF16) x2, bf16, 2 threads" (a
    GPU's name and its precision), then ", 2 processes" for a DDP world, whose batch_size is per process: each
    optimizer step averages that many times the examples of a 1-process run's (config's effective_batch_size).
    None for a run that recorded neither device nor precision."""
    if not device and not precision:
        return None
    precision = {"no": "fp32"}.get(precision, precision)   # mixed_precision "no": the weights' own fp32
    parts = [str(device or "device not recorded"), str(precision or "precision not recorded")]
    if str(device or "").startswith("CPU") and pd.notna(threads):
        parts.append(f"{int(threads)} thread{'s' if int(threads) != 1 else ''}")
    if pd.notna(processes) and int(processes) > 1:
        parts.append(f"{int(processes)} processes")
    return ", ".join(parts)


def runs_frame(store, suite: str | None = None, with_env: bool = False) -> pd.DataFrame:
    """One row per run, straight from SQL columns (no ORM objects: a 100k-run store loads in seconds);
    metric_<name> for every dev metric of the final evaluation, best_metric_<name> of the best one; env_*
    provenance columns with with_env."""
    from sqlalchemy import case, func, select

    from harness.store.schema import RunRecord

    have = store.columns()
    if not have:
        return pd.DataFrame(columns=FLAT + DERIVED)
    wanted = [c for c in FLAT if c not in ("method_params", "budget", "hparams", "data", "model_files", "ran_on",
                                         "rows_skipped")]
    wanted += ["method_params", "budget", "hparams", "metrics", "best_metrics", "history", "trivial_scores"] + (
        ["env"] if with_env else [])
    # the data a run read (its record's data_sources, by content), the rows of it skipped as malformed and the
    # model files it loaded (model_source): the parts of `extra` a table needs. SQLite's JSON functions refuse a
    # document holding NaN (Python's JSON writes it): such a row reads as not recorded
    def field(column, key: str, label: str):   # as JSON text (identical values parse once below)
        value = getattr(RunRecord, column)[key].as_string()
        if store.backend == "sqlite":
            value = case((func.json_valid(getattr(RunRecord, column)) == 1, value), else_=None)
        return value.label(label)

    sources = [field("extra", name, name) for name in ("data_sources", "data_skipped", "model_source")] \
        if "extra" in have else []
    # where it ran: the device and the precision it trained in (`auto` resolved), which a score's last bits
    # depend on (with the thread count, a column of its own)
    ran = [field("env", "device", "ran_device"), field("env", "mixed_precision", "ran_precision")] \
        if "env" in have else []
    stmt = select(*[getattr(RunRecord, c) for c in wanted if c in have], *sources, *ran).order_by(RunRecord.id)
    if suite:
        stmt = stmt.where(RunRecord.suite == suite)  # bound parameter: user input never builds SQL text
    stmt = stmt.where(RunRecord.status != Status.PENDING.value)  # queued cells are work to do, not runs
    # the runs and the cells still queued from one snapshot: a cell a worker claimed between two reads was in
    # neither (its seed missing from "(k/n seeds)", its setting from the unfinished ones)
    with store.snapshot() as conn:
        result = conn.execute(stmt)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        queued, variants = _queued_seeds(store, suite)
    for c in wanted + ["data_sources", "data_skipped", "model_source", "ran_device", "ran_precision"]:
        if c not in frame.columns:
            frame[c] = None
    if frame.empty:
        return pd.DataFrame(columns=FLAT + DERIVED)
    parsed: dict = {}   # most runs share their sources: one parse per distinct (text, task)
    for key in zip(frame["data_sources"], frame["task"]):
        if key not in parsed:
            parsed[key] = run_data(_json_object(key[0]), key[1])
    frame["data"] = [parsed[key] for key in zip(frame.pop("data_sources"), frame["task"])]
    frame["rows_skipped"] = [run_skipped(_json_object(text), task)
                             for text, task in zip(frame.pop("data_skipped"), frame["task"])]
    frame["model_files"] = [model_files(source) for source in frame.pop("model_source")]
    frame["ran_on"] = [ran_on(*where) for where in zip(frame.pop("ran_device"), frame.pop("ran_precision"),
                                                       frame["num_threads"], frame["num_processes"])]
    settings = frame["setting_key"].fillna(frame["cell_key"])
    frame["seeds_queued"] = [queued.get(k, 0) for k in zip(frame["suite"], settings)]
    frame["settings_queued"], alone = _queued_only(frame, settings, variants)
    # the flags' inputs, reduced to one value per run (a history is a list per run: not a table column)
    frame["trivial_score"] = [trivial_score(t) for t in frame.pop("trivial_scores")]
    frame["still_improving"] = [still_improving(h) for h in frame.pop("history")]
    frame["method_params"] = [json.dumps(p or {}, sort_keys=True) for p in frame["method_params"]]
    # the whole setting: a sweep over batch size or warmup tells its runs apart only here (not by learning_rate)
    frame["hparams"] = [json.dumps(h or {}, sort_keys=True) for h in frame["hparams"]]
    frame["budget"] = [budget_text(b) for b in frame["budget"]]
    for c in ("started_at", "finished_at"):   # stored naive, on the database's UTC clock: exported as UTC
        frame[c] = pd.to_datetime(frame[c]).dt.tz_localize("UTC")
    metrics = pd.DataFrame([m or {} for m in frame.pop("metrics")], index=frame.index)
    metrics.columns = [f"metric_{c}" for c in metrics.columns]
    best = pd.DataFrame([m or {} for m in frame.pop("best_metrics")], index=frame.index)
    best.columns = [f"best_metric_{c}" for c in best.columns]
    parts = [frame, metrics[sorted(metrics.columns)], best[sorted(best.columns)]]
    if with_env:
        env = frame.pop("env")
        parts.append(pd.DataFrame([{f"env_{k}": e.get(k) if isinstance(e, dict) else None for k in ENV_COLUMNS}
                                   for e in env], index=frame.index))   # (another tool's env: not a dict)
    frame = pd.concat(parts, axis=1)
    first = [c for c in RUN_COLUMNS if c in frame.columns]
    metric_cols = sorted(c for c in frame.columns if c.startswith(("metric_", "best_metric_")))
    rest = [c for c in frame.columns if c not in first and c not in metric_cols]
    frame = frame[first + metric_cols + rest]
    # a variant's task with every setting still queued has no row to carry its count: the tables read it here
    # (selection.unfinished_settings), so the variant shows as not finished, not as never run
    # (as [suite, model, task, method_label, settings] lists: Streamlit serialises a drawn frame's attrs as JSON)
    frame.attrs["settings_queued_alone"] = [[*key, n] for key, n in alone.items()]
    return frame


def _json_object(text):
    """A JSON object's text as a dict; anything else (no value, another tool's shape) as None."""
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _queued_seeds(store, suite: str | None) -> tuple[dict[tuple, int], dict[tuple, tuple]]:
    """{(suite, setting_key): its seeds still queued}: a queued cell is no run (runs_frame leaves it out), but the
    seeds a setting still has to run count where a table says how many of them completed
    (selection.planned_seeds). A queued multi-task cell counts for its joint setting and each member's (member key:
    the joint key + "." + the task). Keyed by suite too: two suites may queue the same grid. Also
    {(suite, setting_key): (model, task, method_label)} of those settings, for _queued_only."""
    from sqlalchemy import func, select

    from harness.store.schema import RunRecord as R

    key = func.coalesce(R.setting_key, R.cell_key) if "setting_key" in store.columns() else R.cell_key
    stmt = select(R.suite, key, R.regime, R.task, R.model, R.method_label, func.count()).where(
        R.status == Status.PENDING.value)
    if suite:
        stmt = stmt.where(R.suite == suite)
    out: dict[tuple, int] = {}
    variants: dict[tuple, tuple] = {}
    with store.reading() as conn:
        for of_suite, setting, regime, task, model, label, n in conn.execute(
                stmt.group_by(R.suite, key, R.regime, R.task, R.model, R.method_label)):
            joint = regime == Regime.MULTITASK.value
            out[(of_suite, setting)] = out.get((of_suite, setting), 0) + n   # (a multi-task cell's: the joint one)
            if not joint:
                variants[(of_suite, setting)] = (model, task, label)
            for member_task, k in member_keys(setting, task).items() if joint else ():
                out[(of_suite, k)] = out.get((of_suite, k), 0) + n
                variants[(of_suite, k)] = (model, member_task, label)
    # an evaluation-only cell's repeats (other seeds and budgets, queued by a grid from before it ran such a cell
    # once: selection.without_evaluation_repeats) are no settings to come: their evaluation keys, for _queued_only
    evaluating = methods_with("trains_when")
    if evaluating:
        rows = select(R.suite, key, R.model, R.task, R.task_version, R.method, R.method_label, R.method_params,
                      R.hparams, R.budget, R.num_processes).where(R.status == Status.PENDING.value,
                                                                   R.method.in_(evaluating))
        with store.reading() as conn:
            for r in conn.execute(rows.where(R.suite == suite) if suite else rows):
                if len(variants.get((r.suite, r[1]), ())) == 3:   # (one key per setting, whatever its seeds)
                    variants[(r.suite, r[1])] += (evaluation_key(r),)
    return out, variants


def _queued_only(frame: pd.DataFrame, settings: pd.Series, variants: dict[tuple, tuple]) -> tuple[list[int], dict]:
    """Per row: the settings of its (suite, model, task, method variant) whose every seed is still queued, so no
    row of them is in `frame` (selection.unfinished_settings counts them with the unfinished settings that have
    a row). Rows of a task's own are keyed by it, a multi-task cell's joint row stands for its member rows. And
    {(suite, model, task, method_label): settings} of those with no row at all to carry them (a variant whose
    every cell of the task is queued)."""
    present = set(zip(frame["suite"], settings))
    joint = frame["regime"] == Regime.MULTITASK.value
    present |= {(s, k) for s, setting, task in zip(frame.loc[joint, "suite"], settings[joint], frame.loc[joint, "task"])
                for k in member_keys(setting, task).values()}
    counts: dict[tuple, int] = {}
    # an evaluation run already (or queued before) is not a setting to come (_queued_seeds)
    evaluated = {evaluation_key(r) for r in frame.itertuples()} - {None} \
        if any(len(v) > 3 and v[3] is not None for v in variants.values()) else set()
    for (of_suite, setting), (model, task, label, *evaluation) in variants.items():
        if evaluation and evaluation[0] is not None:
            if evaluation[0] in evaluated:
                continue
            evaluated.add(evaluation[0])
        if (of_suite, setting) not in present:
            counts[(of_suite, model, task, label)] = counts.get((of_suite, model, task, label), 0) + 1
    # a joint row carries its member tasks' count (the same settings queued for each): before any multi-task cell
    # completes it is the only row of them (selection.unfinished_settings hands it to each member task)
    tasks = [next(iter(member_keys("", task))) if j else task for task, j in zip(frame["task"], joint)]
    carriers = list(zip(frame["suite"], frame["model"], tasks, frame["method_label"]))
    # the keys some row carries: a joint row's first member task, and through it every member's
    joints = zip(*(frame.loc[joint, c] for c in ("suite", "model", "task", "method_label")))
    covered = set(carriers) | {(s, m, t, label) for s, m, task, label in joints for t in member_keys("", task)}
    return [counts.get(k, 0) for k in carriers], {k: n for k, n in counts.items() if k not in covered}


def best_table(runs: pd.DataFrame, metric: str = "score", resamples: int = significance.RESAMPLES,
               model: str | None = None) -> pd.DataFrame:
    """Houlsby selection on completed runs of each task's newest version (harness/stats/selection.py). One row
    per (suite, model, task, method variant), with the flags and the test against the best of its (suite, model,
    task) column (harness.stats.significance); the column tests themselves in attrs["tests"] {(suite, model,
    task): ColumnTest}, for the average over tasks; the runs of older task versions left out in
    attrs["older_versions"] {task: {version: runs}}. A setting is chosen on the mean of the seeds that completed:
    `seeds_planned` says how many of its seeds the store holds in any state. `model`: that model's rows only,
    selected among every model's `runs` (harness/stats/selection.py). `metric` "best_score" (each run's best dev
    evaluation): EM is that evaluation's too, and nothing is tested, since a run saves the predictions of its
    final evaluation only (attrs["untested"] says why)."""
    done, older = selectable_runs(runs, model)
    # a completed run without the metric (an ingested record with no best_score) is no seed of a score on it, as
    # EVP leaves it out (evp.setting_scores): counted, it made n_seeds say more seeds than the mean is over
    done = done[pd.to_numeric(done[metric], errors="coerce").notna()] if not done.empty else done
    if done.empty:
        empty = pd.DataFrame(columns=["suite", "model", "task", "method_label", "mean", "std", "n_seeds"])
        empty.attrs["older_versions"] = older
        return empty
    planned = planned_seeds(runs)
    failed = failed_settings(runs)
    unfinished = unfinished_settings(runs)
    final = metric == "score"
    em = "metric_exact" if final else "best_metric_exact"   # the evaluation the score comes from
    out, dirs, shown = [], [], []
    for (suite, of_model, task, label), group in done.groupby(["suite", "model", "task", "method_label"], sort=False):
        runs_of = best_setting_runs(group, metric)
        shown.append(runs_of)
        lost = failed.get((suite, of_model, task, label), 0)
        values = runs_of[metric].astype(float).sort_values()   # (std too: the same bits in any stored order)
        first = runs_of.iloc[0]
        # one seed has no sample std (n - 1 = 0): NaN, an empty CSV cell, not a spread of 0.0 (the cell shows the
        # mean alone; the trivial flag grants it TRIVIAL_FLOOR)
        mean, std = seed_mean(values), values.std(ddof=SEED_STD_DDOF) if len(values) > 1 else math.nan
        baseline = _max(runs_of, "trivial_score")
        improving = int(runs_of["still_improving"].fillna(False).astype(bool).sum()) if "still_improving" in runs_of \
            else 0
        out.append({
            "suite": suite, "model": of_model, "task": task, "method": first["method"], "method_label": label,
            "metric": score_metric(task), "mean": mean, "std": std, "n_seeds": len(values),
            # the chosen setting's seeds in the store in any state: more than n_seeds where some failed or run
            "seeds_planned": max(int(planned.get((suite, first["setting_key"]), 0)), len(values)),
            "learning_rate": first["learning_rate"], "hparams": first.get("hparams"), "budget": first["budget"],
            "trainable_params": first["trainable_params"], "total_params": first["total_params"],
            "added_params": first["added_params"],
            "trainable_pct": first["trainable_pct"], "train_time_s": runs_of["train_time_s"].mean(),
            "peak_memory_mb": runs_of["peak_memory_mb"].max(),
            # tuning budget spent: the settings that scored and those whose every seed failed
            "settings_tried": group["setting_key"].nunique() + lost, "settings_failed": lost,
            # settings with no completed seed yet (queued or running): not tried yet, nor in the score or EVP
            "settings_unfinished": unfinished.get((suite, of_model, task, label), 0),
            "train_flops": _mean(runs_of, "train_flops"),   # None where no FLOPs were counted
            "eval_examples": _max(runs_of, "eval_examples"),   # the dev examples its score is over
            # a budget's time_limit_min can end training before its epochs or steps: what this score trained
            "epochs_done": _mean(runs_of, "epochs_done"),
            "time_limited_seeds": int((runs_of["stopped_by"] == "time_limit").sum()) if "stopped_by" in runs_of
            else 0,
            "regime": first["regime"],
            # span extraction: exact match beside the main score (F1)
            "em_mean": _mean(runs_of, em), "em_std": _std(runs_of, em),
            "trivial_baseline": baseline, "trivial": is_trivial(mean, std, baseline),
            "improving_seeds": improving, "still_improving": improving > 0,
        })
        dirs.append(list(runs_of["output_dir"]) if final and "output_dir" in runs_of else [None] * len(runs_of))
    order = table_order(out)   # the rows' order from the runs themselves, not the order they were stored in
    out, dirs, shown = ([part[i] for i in order] for part in (out, dirs, shown))
    best = pd.DataFrame(out)
    best["flags"] = [flag_text(r) for _, r in best.iterrows()]
    best = _add_tests(best, dirs if final else None, resamples)
    if not final:
        best.attrs["untested"] = ("the scores are each run's best dev evaluation, and a run saves the "
                                  "predictions of its final evaluation only")
    best.attrs["older_versions"] = older
    shown = pd.concat(shown)   # the runs whose scores the table shows
    best.attrs["data"] = data_by_task(shown)   # what the scores shown were trained and evaluated on
    best.attrs["skipped"] = skipped_by_task(shown)   # ... and the rows of it skipped as malformed
    best.attrs["dev_sets"] = dev_set_lines(best)
    best.attrs["setups"] = setup_lines(shown)
    best.attrs["budgets"] = budget_lines(best) + time_limit_lines(best)
    # variants with runs of a task, all failed: no row here, but the leaderboard (and the exported best table,
    # with_failed_rows) shows them as failed, not absent
    scored = set(zip(best["suite"], best["model"], best["task"], best["method_label"]))
    best.attrs["failed_only"] = {(m, label, task): n for (suite, m, task, label), n in failed.items()
                                 if (suite, m, task, label) not in scored and (model is None or m == model)}
    best.attrs["unfinished"] = {(m, label, task): n for (suite, m, task, label), n in unfinished.items()
                                if model is None or m == model}   # {(model, method_label, task): settings}
    return best


def variant_rank(share, label) -> tuple:
    """Where a variant's row goes among its model's (the leaderboard) or its column's (the best table): the larger
    share of parameters it trains first (full fine-tuning first, a linear probe last; one without a share last),
    then by label. A function of the runs, so the same runs give the same table whatever order they were stored in
    (the rows followed the store's)."""
    known = share is not None and not pd.isna(share)
    return (not known, -float(share) if known else 0.0, str(label))


def table_order(rows: list[dict]) -> list[int]:
    """The best table's rows (dicts) in order: suite, model, task (the registry's order), then variant_rank by the
    variant's mean share over its rows, the leaderboard's "% trained"."""
    shares: dict = {}
    for r in rows:
        shares.setdefault((r["suite"], r["model"], r["method_label"]), []).append(r["trainable_pct"])
    share = {key: seed_mean(values) for key, values in shares.items()}   # exactly rounded: no order in its bits
    tasks = {t: i for i, t in enumerate(_task_order({r["task"] for r in rows}))}
    return sorted(range(len(rows)), key=lambda i: (
        str(rows[i]["suite"]), str(rows[i]["model"]), tasks[rows[i]["task"]],
        variant_rank(share[(rows[i]["suite"], rows[i]["model"], rows[i]["method_label"])], rows[i]["method_label"])))


def setup_lines(shown: pd.DataFrame) -> list[str]:
    """A note where the runs whose scores a table shows trained on more than one setup (device, precision, CPU
    thread count, DDP processes: `ran_on`): each with its runs and variants. One setup (or none recorded): nothing
    to say."""
    if "ran_on" not in shown:
        return []
    setups = shown.assign(ran_on=shown["ran_on"].fillna("not recorded"))
    groups = setups.groupby("ran_on", sort=False)
    if groups.ngroups < 2:
        return []
    parts = [f"{setup}: {len(g)} run{'s' if len(g) != 1 else ''} ({', '.join(dict.fromkeys(g['method_label']))})"
             for setup, g in groups]
    return [f"Setups: the scores shown were trained on {groups.ngroups} setups (device, precision, CPU threads, "
            f"processes): {'; '.join(parts)}. A score is reproduced exactly only on its own setup, and variants "
            f"compared across setups differ by it too."]


def settings_behind(cells: pd.DataFrame, runs: pd.DataFrame, column: str = "settings_tried") -> int:
    """The hyperparameter settings behind a best table's cells (with_failed_rows'), each once: `column`
    (settings_tried, settings_unfinished) summed over the cells, but a multi-task variant's (its label on a joint
    row of `runs`) once per model: each of its settings trained once, jointly, and counts in every member task's
    cell (its largest count there)."""
    if cells.empty:
        return 0
    joint = set(runs.loc[runs["regime"] == Regime.MULTITASK.value, "method_label"]) if "regime" in runs else set()
    counts = pd.to_numeric(cells[column], errors="coerce").fillna(0)
    shared = cells["method_label"].isin(joint)
    once = counts[shared].groupby([cells.loc[shared, "model"], cells.loc[shared, "method_label"]]).max()
    return int(counts[~shared].sum() + once.sum())


def with_failed_rows(best: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The best table (one suite's) with a row per variant whose every run of a task failed: the leaderboard's
    "all failed" cells (attrs["failed_only"]), so a variant tried and failed everywhere is told from one never
    run. Such a row, after the rows of its task, has no setting and no score; `failed_settings` is the settings
    it tried, every seed of each failed (as the leaderboard's `{task}_failed_settings`; empty on a row with a
    score), and they count in `settings_tried` and `settings_failed`. `runs`: where its `method` is read."""
    if best.empty:   # (nothing completed: no table to set them in, as the leaderboard)
        return best
    suites = best["suite"].unique()
    methods = dict(zip(runs["method_label"], runs["method"])) if runs is not None and not runs.empty else {}
    unfinished = best.attrs.get("unfinished") or {}
    failed_only = best.attrs.get("failed_only") or {}
    failed = [{"suite": suites[0] if len(suites) == 1 else None, "model": of_model, "task": task,
               "method": methods.get(label), "method_label": label, "metric": score_metric(task),
               "settings_tried": n, "settings_failed": n,
               "failed_settings": n, "settings_unfinished": unfinished.get((of_model, label, task), 0)}
              for (of_model, label, task), n in failed_only.items()]
    # a variant whose settings of a task are all still queued or running: the leaderboard's "not finished" cell,
    # no setting tried yet (its settings column "0 (+2 unfinished)"), not a variant never run there
    scored = set(zip(best["model"], best["method_label"], best["task"]))
    failed += [{"suite": suites[0] if len(suites) == 1 else None, "model": of_model, "task": task,
                "method": methods.get(label), "method_label": label, "metric": score_metric(task),
                "settings_tried": 0, "settings_failed": 0,
                "failed_settings": None, "settings_unfinished": n}
               for (of_model, label, task), n in unfinished.items()
               if n and (of_model, label, task) not in scored and (of_model, label, task) not in failed_only]
    out = pd.concat([best, pd.DataFrame(failed)], ignore_index=True) if failed else best.assign(failed_settings=None)
    for c in out.columns:   # counts stay whole numbers where a failed row has none (CSV "3", not "3.0")
        if c == "failed_settings" or (c in best and pd.api.types.is_integer_dtype(best[c])):
            out[c] = pd.to_numeric(out[c]).astype("Int64")
    # a task's rows together, in the best table's order (table_order), those without a score last, by label
    tasks = {t: i for i, t in enumerate(_task_order(set(out["task"])))}
    is_failed = out["mean"].isna().tolist()
    models, task_of, labels = out["model"].tolist(), out["task"].tolist(), out["method_label"].tolist()
    out = out.iloc[sorted(range(len(out)), key=lambda i: (   # by position throughout (whatever the index)
        str(models[i]), tasks[task_of[i]], is_failed[i], str(labels[i]) if is_failed[i] else "", i))
                   ].reset_index(drop=True)
    out.attrs.update(best.attrs)
    return out


def dev_set_lines(best: pd.DataFrame) -> list[str]:
    """A line per (model, task) column whose variants' scores are over different numbers of dev examples (the
    runs' eval_examples: a max_eval_samples cap below the dev set's size): their means are not over the same
    examples; only the test pairs the examples they share. Rows from before the count was stored say nothing."""
    lines = []
    several = best["model"].nunique() > 1
    for (of_model, task), rows in best.groupby(["model", "task"], sort=False):
        sizes: dict = {}
        for label, n in zip(rows["method_label"], pd.to_numeric(rows.get("eval_examples"), errors="coerce")):
            if pd.notna(n):
                sizes.setdefault(int(n), []).append(label)
        if len(sizes) > 1:
            each = "; ".join(f"{n}: {', '.join(labels)}" for n, labels in sorted(sizes.items(), reverse=True))
            lines.append(f"{task}{f' ({of_model})' if several else ''}: the variants were scored on different "
                         f"numbers of dev examples ({each}), so their means are not over the same examples; the "
                         f"test against the best pairs the examples both were scored on.")
    return lines


def budget_lines(best: pd.DataFrame) -> list[str]:
    """A line per (model, task) column whose variants' chosen settings have different budgets: a suite with
    several budgets selects the budget on dev as it selects a learning rate, so the column's scores are not at one
    budget, which only the best table's budget column showed."""
    lines = []
    several = best["model"].nunique() > 1
    for (of_model, task), rows in best.groupby(["model", "task"], sort=False):
        budgets: dict = {}
        for label, budget in zip(rows["method_label"], rows["budget"]):
            budgets.setdefault(budget or "the default budget", []).append(label)
        if len(budgets) > 1:
            each = "; ".join(f"{budget}: {', '.join(labels)}" for budget, labels in budgets.items())
            lines.append(f"{task}{f' ({of_model})' if several else ''}: the variants' chosen settings differ in "
                         f"budget ({each}): the budget was selected on dev with the other hyperparameters, so these "
                         f"scores are not at one budget.")
    return lines


def time_limit_lines(best: pd.DataFrame) -> list[str]:
    """A line per variant whose chosen setting stopped at its budget's time limit on some seed: the budget column
    reads "epochs=3,time_limit_min=5" whatever was trained, so a slow variant's score, after fewer epochs than
    the others', read as one at the budget's epochs."""
    lines = []
    several = best["model"].nunique() > 1
    for _, r in best.iterrows():
        stopped = int(r.get("time_limited_seeds") or 0)
        if stopped:
            epochs = f", after {r['epochs_done']:.2f} epochs on average" if pd.notna(r.get("epochs_done")) else ""
            where = f" ({r['model']})" if several else ""
            lines.append(f"{r['task']}{where}: {r['method_label']}'s chosen setting "
                         f"stopped at the time limit on {stopped} of {int(r['n_seeds'])} seeds{epochs} (budget "
                         f"{r['budget'] or 'the default'}): its score is not at the budget's epochs or steps, "
                         f"nor at those of the variants that finished them.")
    return lines


def flag_text(row) -> str:
    """`trivial`, `still_improving (k/n seeds)`, `seeds_missing (k/n completed)`, `settings_unfinished (n more)`,
    comma-separated; empty without flags."""
    flags = ["trivial"] if row["trivial"] else []
    if row["still_improving"]:
        flags.append(f"still_improving ({row['improving_seeds']}/{row['n_seeds']} seeds)")
    if row["seeds_planned"] > row["n_seeds"]:
        flags.append(f"seeds_missing ({row['n_seeds']}/{row['seeds_planned']} completed)")
    if row.get("settings_unfinished"):   # settings with no completed seed yet: the choice may still change
        flags.append(f"settings_unfinished ({row['settings_unfinished']} more)")
    return ", ".join(flags)


def _add_tests(best: pd.DataFrame, dirs: list, resamples: int) -> pd.DataFrame:
    """Per (suite, model, task) column: the best variant by mean, every other one tested against it. Adds
    is_best, tested, p_raw, p_vs_best (Holm), tied_with_best (None: not tested), seeds_needed."""
    from harness.spec.tasks import TASKS

    cols = {c: [None] * len(best) for c in ("is_best", "tested", "p_raw", "p_vs_best", "tied_with_best",
                                            "seeds_needed", "score_on_common")}
    tests = {}
    for key, group in best.groupby(["suite", "model", "task"], sort=False):
        # a tie for the best mean (at_best: not decided by its last bits) is the best too; the one the others are
        # tested against is the first by label, not by row order (two stores of the same runs stored in another
        # order: the same table)
        level = group.index[significance.at_best(group["mean"])]
        # a task this version does not know, or no predictions of the scores shown (dirs None): not tested
        task = TASKS.get(key[2]) if key[2] in TASKS and dirs is not None else None
        # among ties, one whose predictions are saved: the first by label without them left the column untested
        top = next((i for i in _by_label(best, level, "method_label") if task and significance.saved(task, dirs[i])),
                   _by_label(best, level, "method_label")[0])
        # a tie for the best is not tested against it (nor counted in the Holm family of the others), but
        # resampled with them: the average column tests every variant on every task's replicates
        # (by label: their columns' order in the resampling's matrix products moves the scores' last bits)
        variants = {best.at[i, "method_label"]: dirs[i] for i in _by_label(best, group.index, "method_label")} \
            if task else {}
        ties = [best.at[i, "method_label"] for i in level if i != top]
        test = significance.column_test(task, variants, best.at[top, "method_label"], resamples, level=ties) \
            if task else None
        tests[key] = test
        for i in group.index:
            label = best.at[i, "method_label"]
            cols["is_best"][i] = bool(i in level)
            cols["seeds_needed"][i] = None if i in level else significance.seeds_needed(
                best.at[top, "mean"], best.at[top, "std"], best.at[i, "mean"], best.at[i, "std"]) \
                if min(best.at[top, "n_seeds"], best.at[i, "n_seeds"]) > 1 else None
            tested = test is not None and (label in test.p_holm or (i == top and bool(test.reps)))
            cols["tested"][i] = tested
            if test is not None and label in test.observed:
                cols["score_on_common"][i] = test.observed[label]
            if i != top and tested:
                cols["p_raw"][i], cols["p_vs_best"][i] = test.p_raw[label], test.p_holm[label]
                cols["tied_with_best"][i] = test.tied[label]
            if i in level:
                cols["tied_with_best"][i] = True
    for c, values in cols.items():
        best[c] = pd.Series(values, index=best.index, dtype=object if c in ("tied_with_best", "seeds_needed") else None)
    best.attrs["tests"] = tests
    best.attrs["resamples"] = resamples
    return best


def _by_label(frame: pd.DataFrame, rows, column: str) -> list:
    """`rows` in the order of their variants' labels (`column`): what a tie for the best is broken by, not the
    order the runs were stored in."""
    return sorted(rows, key=lambda i: str(frame.at[i, column]))


def _max(frame: pd.DataFrame, column: str):
    values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series(dtype=float)
    return float(values.max()) if len(values) else None


def _mean(frame: pd.DataFrame, column: str):
    values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series(dtype=float)
    return float(values.mean()) if len(values) else None


def _std(frame: pd.DataFrame, column: str):
    values = pd.to_numeric(frame[column], errors="coerce").dropna() if column in frame else pd.Series(dtype=float)
    return float(values.std(ddof=SEED_STD_DDOF)) if len(values) > 1 else None   # (one seed: no sample std)


def best_setting_runs(group: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """The runs (one per seed) of the hyperparameter setting with the best mean dev score, by seed: the seeds'
    predictions are pooled in that order, whatever order the runs were stored in."""
    group = with_setting_key(group)
    # a tie for the best mean (at_best: not decided by its last bits): the setting with more seeds behind it (a
    # survivor of three seeds at 72.0 is less evidence than three seeds averaging 72.0), then the first setting
    # key, which is no order of the runs
    per = group.groupby("setting_key")[metric].agg([seed_mean, "count"])
    top = per[significance.at_best(per["seed_mean"].fillna(-math.inf))]
    chosen = min(top.index, key=lambda k: (-int(top.at[k, "count"]), str(k)))
    return group[group["setting_key"] == chosen].sort_values("seed", kind="stable")


METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman",
                "exact": "EM"}


def score_metric(task: str) -> str:
    """What a task's score is, as the tables name it: its main metric ("accuracy", SQuAD's "F1"), or the mean of
    its main metrics ("mean of F1 and accuracy") and of its dev sets (MNLI's two): a bare "score" column said
    neither, and SQuAD's F1 read as any of its metrics."""
    if task not in TASKS:   # a task this install does not declare: its record's score
        return "the recorded score"
    spec = TASKS[task]
    names = [METRIC_NAMES.get(m, m) for m in spec.main]
    text = names[0] if len(names) == 1 else f"mean of {', '.join(names[:-1])} and {names[-1]}"
    if len(spec.eval_splits) > 1:
        text += f" (mean over its {len(spec.eval_splits)} dev sets)"
    return text


def span_tasks(tasks) -> list[str]:
    """Those of `tasks` scored by F1 with exact match (EM) beside it (SQuAD): the tables show both."""
    return [t for t in dict.fromkeys(tasks) if t in TASKS and "exact" in TASKS[t].metrics]


def _task_order(tasks) -> list[str]:
    known = [t for t in TASKS if t in set(tasks)]
    return known + sorted(t for t in set(tasks) if t not in TASKS)


def leaderboard_table(best: pd.DataFrame) -> pd.DataFrame:
    """Rows: method variants. Per task: mean, std, n (SQuAD: F1, and EM beside it). Plus the GLUE average (GLUE
    tasks only; attrs["avg_tasks"] says which), trainable % and params for all tasks."""
    if best.empty:
        empty = pd.DataFrame()
        empty.attrs["older_versions"] = best.attrs.get("older_versions", {})
        return empty
    failed_only = best.attrs.get("failed_only") or {}   # {(model, method_label, task): settings}: no score
    unfinished = best.attrs.get("unfinished") or {}     # {(model, method_label, task): settings not finished}
    tasks = _task_order(list(best["task"].unique()) + [t for _, _, t in failed_only] + [t for _, _, t in unfinished])
    # the average is GLUE's: over the GLUE tasks only (SQuAD and other benchmarks are shown beside it)
    glue = [t for t in tasks if t in TASKS and TASKS[t].benchmark == "glue"]
    em_tasks = span_tasks(tasks)
    rows = []
    variants = dict.fromkeys(list(zip(best["model"], best["method_label"])) + [k[:2] for k in failed_only]
                             + [k[:2] for k in unfinished])
    for model, label in variants:
        group = best[(best["model"] == model) & (best["method_label"] == label)]
        by_task = group.set_index("task")
        row = {"model": model, "method": label}
        for t in tasks:
            row[f"{t}_failed_settings"] = failed_only.get((model, label, t))   # every run of it failed
            if t in by_task.index:
                row[f"{t}_mean"] = by_task.loc[t, "mean"]
                row[f"{t}_std"] = by_task.loc[t, "std"]
                row[f"{t}_n"] = int(by_task.loc[t, "n_seeds"])
                row[f"{t}_seeds_planned"] = int(by_task.loc[t, "seeds_planned"])
                row[f"{t}_settings"] = int(by_task.loc[t, "settings_tried"])
                row[f"{t}_settings_failed"] = int(by_task.loc[t, "settings_failed"])
            else:
                row[f"{t}_mean"] = row[f"{t}_std"] = row[f"{t}_n"] = None
                row[f"{t}_seeds_planned"] = row[f"{t}_settings"] = row[f"{t}_settings_failed"] = None
            # settings with no completed seed yet (a failed-only cell's too): not in its settings or its score
            row[f"{t}_settings_unfinished"] = unfinished.get((model, label, t)) or (
                0 if t in by_task.index or row[f"{t}_failed_settings"] else None)
            for c in CELL_COLUMNS:   # the test against the column's best, seeds needed, flags
                row[f"{t}_{c}"] = by_task.loc[t, c] if t in by_task.index and c in by_task else None
        for t in em_tasks:
            has = t in by_task.index
            row[f"{t}_em_mean"] = by_task.loc[t, "em_mean"] if has else None
            row[f"{t}_em_std"] = by_task.loc[t, "em_std"] if has else None
        complete = glue and all(row[f"{t}_mean"] is not None for t in glue)
        # exactly rounded (seed_mean): two variants with the same task means on different tasks tie exactly
        row["avg"] = seed_mean([row[f"{t}_mean"] for t in glue]) if complete else None
        # the seeds behind the average, summed over its tasks: fewer completed than planned on any task is the
        # average's "(k/n seeds)" too (an average of short cells claimed full evidence)
        row["avg_n"] = sum(row[f"{t}_n"] for t in glue) if complete else None
        row["avg_seeds_planned"] = sum(row[f"{t}_seeds_planned"] for t in glue) if complete else None
        row["avg_tied_with_best"] = row["avg_p_vs_best"] = None
        row["avg_tested"] = False
        # exactly rounded, as table_order's share: the rows are sorted by it, in the best table and here alike
        row["trainable_pct"] = seed_mean(group["trainable_pct"]) if len(group) else None
        # one frozen base shared by every task + what each task trains (full fine-tuning: a model per task)
        frozen = (group["total_params"] - group["trainable_params"]).max()
        row["params_all_tasks"] = float(frozen + group["trainable_params"].sum())
        if not all(t in by_task.index for t in tasks):
            # a variant without a score on every task: what it needs for all of them is unknown (summed over the
            # tasks it has, full fine-tuning of two tasks read as cheap as one adapter; a sequence's last stage or
            # a multi-task model as one model serving tasks it has no score on)
            row["params_all_tasks"] = None
        elif len(group) and (group["regime"] == Regime.MULTITASK_MEMBER).all():  # one joint model serves every task
            row["params_all_tasks"] = float(group["total_params"].max())
        base_model = (group["total_params"] - group["added_params"].fillna(0)).max()  # the pretrained model alone
        row["params_all_tasks_x"] = None if row["params_all_tasks"] is None or not len(group) \
            else row["params_all_tasks"] / base_model
        rows.append(row)
    # a model's variants by the share they train (as the best table: variant_rank), not as stored
    rows.sort(key=lambda r: (str(r["model"]), variant_rank(r["trainable_pct"], r["method"])))
    table = pd.DataFrame(rows)
    _test_average(table, best, glue)
    trivial = best.groupby("task")["trivial_baseline"].max() if "trivial_baseline" in best else pd.Series()
    table.attrs["trivial"] = {t: float(v) for t, v in trivial.items() if pd.notna(v)}
    seeds = best["n_seeds"].astype(int)
    table.attrs["significance"] = {"resamples": best.attrs.get("resamples", significance.RESAMPLES),
                                   "alpha": significance.ALPHA, "seeds": (int(seeds.min()), int(seeds.max())),
                                   "tested": bool(best.get("p_vs_best", pd.Series()).notna().any())}
    table.attrs["tasks"] = tasks
    table.attrs["suites"] = sorted({str(s) for s in best["suite"].dropna()})   # (its rows have no suite column)
    table.attrs["older_versions"] = best.attrs.get("older_versions", {})
    table.attrs["data"] = best.attrs.get("data", {})
    table.attrs["skipped"] = best.attrs.get("skipped", {})
    table.attrs["dev_sets"] = best.attrs.get("dev_sets", [])
    table.attrs["setups"] = best.attrs.get("setups", [])
    table.attrs["budgets"] = best.attrs.get("budgets", [])
    table.attrs["untested"] = best.attrs.get("untested")
    table.attrs["is_glue"] = glue == tasks
    table.attrs["avg_tasks"] = glue
    table.attrs["em_tasks"] = em_tasks
    table.attrs["avg_name"] = ("GLUE avg" if glue == tasks else f"GLUE avg ({', '.join(glue)})" if glue
                               else "GLUE avg (no GLUE task)")
    table.attrs["budgets"] = table.attrs["budgets"] + average_budget_lines(table, best, glue)
    return table


def average_budget_lines(table: pd.DataFrame, best: pd.DataFrame, glue: list) -> list[str]:
    """A line per model where a variant's average sums scores of chosen settings at different budgets (a suite with
    several budgets selects the budget per task on dev, as budget_lines says per task): that average is not a score
    at one budget, and with one budget per task for every variant no task's line says so. Each such variant's
    budgets, with their tasks."""
    lines = []
    several = table["model"].nunique() > 1
    for model, rows in table.groupby("model", sort=False):
        averaged = list(rows.loc[rows["avg"].notna(), "method"])
        chosen = best[(best["model"] == model) & best["task"].isin(glue)]
        budgets = {label: {} for label in averaged}   # {label: {budget: [tasks]}}, tasks in the columns' order
        for t in glue:
            for label, budget in zip(chosen.loc[chosen["task"] == t, "method_label"],
                                     chosen.loc[chosen["task"] == t, "budget"]):
                if label in budgets:
                    budgets[label].setdefault(budget or "the default budget", []).append(t)
        # a variant whose every task is at one budget averages at that budget: only the mixed ones are said (two
        # variants at two budgets are budget_lines' per task)
        budgets = {label: of for label, of in budgets.items() if len(of) > 1}
        if len(glue) < 2 or not budgets:
            continue
        each = "; ".join(f"{label}: " + ", ".join(f"{b} ({', '.join(ts)})" for b, ts in of.items())
                         for label, of in budgets.items())
        lines.append(f"{table.attrs['avg_name']}{f' ({model})' if several else ''}: averages scores of chosen "
                     f"settings at different budgets ({each}): each task's budget was selected on dev with the "
                     f"other hyperparameters, so the average is not at one budget.")
    return lines


CELL_COLUMNS = ["is_best", "tied_with_best", "p_vs_best", "tested", "seeds_needed", "flags", "trivial",
                "improving_seeds"]


def _test_average(table: pd.DataFrame, best: pd.DataFrame, glue: list) -> None:
    """avg_tied_with_best / avg_p_vs_best: the variants with an average against the best average, every GLUE
    task's examples resampled once per replicate (one model at a time: each its own column of tests)."""
    tests = best.attrs.get("tests", {})
    for model, rows in table.groupby("model", sort=False):
        rows = rows[rows["avg"].notna()]
        if rows.empty or not glue:
            continue
        suites = best.loc[best["model"] == model, "suite"].unique()
        columns = {t: tests.get((suites[0], model, t)) for t in glue} if len(suites) == 1 else {}
        level = rows.index[significance.at_best(rows["avg"])]   # a tie for the best average: best too
        tested = columns and all(c is not None for c in columns.values())
        # (as _add_tests: not row order; among ties one resampled on every task, if any is)
        top = next((i for i in _by_label(table, level, "method") if tested and all(
            table.at[i, "method"] in c.reps for c in columns.values())), _by_label(table, level, "method")[0])
        result = None
        if tested:
            compared = [table.at[i, "method"] for i in rows.index if i == top or i not in level]
            result = significance.average_test(columns, table.at[top, "method"], compared)
        for i in rows.index:
            label = table.at[i, "method"]
            table.at[i, "avg_tested"] = result is not None and (i == top or label in result.p_holm)
            if i != top and result is not None and label in result.p_holm:
                table.at[i, "avg_p_vs_best"] = result.p_holm[label]
                table.at[i, "avg_tied_with_best"] = result.tied[label]
            if i in level:
                table.at[i, "avg_tied_with_best"] = True


def fmt_mean_std(mean, std, n=None, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{digits}f}"
    if n and n > 1:
        text += f" ± {std:.{digits}f}"
    return text


def ablation_matrix(payload: dict) -> pd.DataFrame:
    """An adapter ablation as a matrix: rows the first removed layer, columns the last; values the score change
    against the run with every adapter (Houlsby et al. 2019, Fig. 6). Spans not ablated stay NaN."""
    n = payload["num_layers"]
    matrix = pd.DataFrame(float("nan"), index=range(n), columns=range(n))
    for first, last, score in payload["spans"]:
        matrix.loc[first, last] = score - payload["baseline"]
    return matrix


ALL_FAILED = "– (all failed)"   # a variant whose every run of a task failed, in every table that shows it
NOT_FINISHED = "– (not finished)"   # a variant with runs of a task queued or running and none completed yet


def composite_vs_single(runs: pd.DataFrame, model: str | None = None, metric: str = "score") -> pd.DataFrame:
    """Sequential and multi-task rows against the direct single-task runs of the same method and task (best
    setting on dev of each, on `metric` as best_table): task, variant, score, single-task, difference. Empty
    without composite rows. A single-task variant whose every run of the task failed reads ALL_FAILED, as in the
    leaderboard (empty: never run). `runs`: one suite's, and one model's or `model` named: rows are keyed by task
    and variant, so two models' would be compared with each other (a ValueError)."""
    composite = (Regime.SEQUENTIAL, Regime.MULTITASK_MEMBER)
    if runs.empty or not runs["regime"].isin(composite).any():
        return pd.DataFrame()
    if runs["suite"].nunique() > 1 or (model is None and runs["model"].nunique() > 1):
        raise ValueError("composite_vs_single: give one suite's and one model's runs (or name the model: `model`)")
    best = best_table(runs, metric=metric, model=model)
    direct = best[best["regime"].isna()].set_index(["task", "method_label"])["mean"]
    failed = {(task, label) for _, label, task in best.attrs.get("failed_only") or {}}
    rows = []
    for _, r in best[best["regime"].isin(composite)].iterrows():
        single = (r["task"], base_label(r["method_label"]))
        base = direct.get(single)
        rows.append({"task": r["task"], "variant": r["method_label"], "score": round(r["mean"], 2),
                     "single-task": (ALL_FAILED if single in failed else None) if base is None else round(base, 2),
                     "difference": None if base is None else round(r["mean"] - base, 2)})
    out = pd.DataFrame(rows)
    out.attrs["data"] = best.attrs.get("data")   # the data its runs read: the tasks' notes
    return out
