"""Per-run and per-method outcomes against the zero-shot baseline: ID gain, DG gain, CF drop.

Definitions (accuracies are fractions in [0, 1], as stored):
- baseline: the finished `zeroshot` run of the same (task, train_domains, seed);
- ID gain = `id` overall accuracy of the run - that of the baseline;
- DG gain = `dg` overall accuracy of the run - that of the baseline (NaN without other domains);
- CF drop = mean over forgetting tasks of `cf_before` - `cf_after` overall accuracy
  (positive = forgot; the zeroshot baseline itself forgets nothing by construction);
- score = mean of (ID gain, DG gain, -CF drop) over those that are not NaN, per run.
Per method: each outcome is averaged over the train-domain choices of a task, then over tasks,
giving one value per seed; the table shows the mean over seeds and the sample standard
deviation over seeds (NaN with one seed). Only finished runs with a finished baseline count.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from clipgauge.analysis.load import ACCURACY, OVERALL, Study, as_study

OUTCOMES = ("id_gain", "dg_gain", "cf_drop", "score")
OUTCOME_LABELS = {
    "id_gain": "ID gain",
    "dg_gain": "DG gain",
    "cf_drop": "CF drop",
    "score": "score",
}


def train_key(domains) -> str:
    """A printable, hashable name for a run's train domains."""
    return "+".join(domains) if len(domains) else "(all)"


def _overall_accuracy(metrics: pd.DataFrame, protocol: str) -> pd.Series:
    rows = metrics[
        (metrics["protocol"] == protocol)
        & (metrics["domain"] == OVERALL)
        & (metrics["name"] == ACCURACY)
    ]
    return rows.groupby("run_id")["value"].mean()


def _forgetting_drop(metrics: pd.DataFrame) -> pd.Series:
    """Mean over forgetting tasks of before - after overall accuracy, per run."""
    keys = ["run_id", "eval_task"]

    def accuracy(protocol: str) -> pd.Series:
        rows = metrics[
            (metrics["protocol"] == protocol)
            & (metrics["domain"] == OVERALL)
            & (metrics["name"] == ACCURACY)
        ]
        return rows.groupby(keys)["value"].mean()

    drops = (accuracy("cf_before") - accuracy("cf_after")).dropna()
    return drops.groupby(level="run_id").mean()


def run_outcomes(study: Study | str | Path) -> pd.DataFrame:
    """One row per finished run: accuracies, gains against its zeroshot baseline, CF drop, score.

    `has_baseline` is False where the (task, train_domains, seed) has no finished zeroshot run;
    such rows have NaN gains and score and are left out of every average. Runs without train
    domains only measure an evaluation-only task zero-shot: they have no outcomes and no row.
    """
    study = as_study(study)
    runs = study.finished[study.finished["train_domains"].map(len) > 0].copy()
    runs["train_key"] = [train_key(d) for d in runs["train_domains"]]
    columns = ["run_id", "task", "train_key", "method", "seed"]
    out = runs[columns].copy()
    id_acc = _overall_accuracy(study.metrics, "id")
    dg_acc = _overall_accuracy(study.metrics, "dg")
    out["id_acc"] = out["run_id"].map(id_acc).astype(float)
    out["dg_acc"] = out["run_id"].map(dg_acc).astype(float)
    out["cf_drop"] = out["run_id"].map(_forgetting_drop(study.metrics)).astype(float)

    unit = ["task", "train_key", "seed"]
    is_baseline = out["method"] == study.baseline
    baseline = out[is_baseline].drop_duplicates(unit)
    baseline = baseline[[*unit, "run_id", "id_acc", "dg_acc"]].rename(
        columns={"run_id": "baseline_run_id", "id_acc": "base_id_acc", "dg_acc": "base_dg_acc"}
    )
    out = out.merge(baseline, on=unit, how="left")
    out["has_baseline"] = out["baseline_run_id"].notna()
    out["id_gain"] = out["id_acc"] - out["base_id_acc"]
    out["dg_gain"] = out["dg_acc"] - out["base_dg_acc"]
    is_baseline = out["method"] == study.baseline
    out.loc[is_baseline & out["cf_drop"].isna(), "cf_drop"] = 0.0
    out.loc[~out["has_baseline"], "cf_drop"] = np.nan
    parts = np.column_stack([out["id_gain"], out["dg_gain"], -out["cf_drop"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN is right
        out["score"] = np.nanmean(parts, axis=1)
    return out.drop(columns=["base_id_acc", "base_dg_acc"]).sort_values(
        ["method", "task", "train_key", "seed"], ignore_index=True
    )


def per_seed_outcomes(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per (method, seed): each outcome averaged over train domains within a task, then tasks."""
    usable = outcomes[outcomes["has_baseline"]]
    per_task = usable.groupby(["method", "seed", "task"])[list(OUTCOMES)].mean()
    return per_task.groupby(level=["method", "seed"]).mean()


def per_task_outcomes(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per (method, task): each outcome averaged over train domains and seeds."""
    usable = outcomes[outcomes["has_baseline"]]
    return usable.groupby(["method", "task"])[list(OUTCOMES)].mean()


def method_summary(study: Study | str | Path) -> pd.DataFrame:
    """Per method: mean and seed spread of each outcome, run counts and rank by score.

    Columns: id_gain, dg_gain, cf_drop, score (means over seeds of task-averaged values), each
    with `<name>_std` (standard deviation over seeds, ddof=1), n_seeds, n_tasks, n_runs (finished
    runs used), failed_runs, unfinished_runs, no_baseline_runs and rank (1 = best score).
    Indexed by method, best first; methods with no usable run come last with NaN.
    """
    study = as_study(study)
    outcomes = run_outcomes(study)
    seeds = per_seed_outcomes(outcomes)
    rows = []
    for method in study.methods:
        row: dict = {"method": method, "baseline": method == study.baseline}
        values = (
            seeds.xs(method, level="method") if method in seeds.index.get_level_values(0) else None
        )
        for name in OUTCOMES:
            series = values[name].dropna() if values is not None else pd.Series(dtype=float)
            row[name] = float(series.mean()) if len(series) else math.nan
            row[f"{name}_std"] = float(series.std(ddof=1)) if len(series) > 1 else math.nan
        mine = outcomes[outcomes["method"] == method]
        used = mine[mine["has_baseline"]]
        status = study.runs.loc[study.runs["method"] == method, "status"]
        row["n_seeds"] = int(used["seed"].nunique())
        row["n_tasks"] = int(used["task"].nunique())
        row["n_runs"] = int(len(used))
        row["failed_runs"] = int((status == "failed").sum())
        row["unfinished_runs"] = int((~status.isin(["finished", "failed"])).sum())
        row["no_baseline_runs"] = int((~mine["has_baseline"]).sum())
        rows.append(row)
    columns = ["method", *[f"{n}{s}" for n in OUTCOMES for s in ("", "_std")]]
    columns += ["n_seeds", "n_tasks", "n_runs", "failed_runs", "unfinished_runs"]
    table = pd.DataFrame(rows, columns=[*columns, "no_baseline_runs", "baseline"])
    # plain float64 so a missing spread (one seed) is NaN, never pandas' NA
    outcome_columns = columns[1 : 1 + 2 * len(OUTCOMES)]
    table[outcome_columns] = table[outcome_columns].astype("float64")
    table["rank"] = table["score"].rank(ascending=False, method="min")  # float: NaN if unranked
    table = table.sort_values(["rank", "method"], na_position="last").set_index("method")
    return table


def _pp(value: float, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


TABLE_COLUMNS = [
    ("method", 13),
    ("ID gain", 8),
    ("DG gain", 8),
    ("CF drop", 8),
    ("score ± std", 16),
    ("rank", 4),
    ("runs", 5),
    ("failed", 6),
]


def format_method_table(summary: pd.DataFrame) -> str:
    """Fixed-width text of `method_summary`, gains and drops in accuracy points (pp)."""
    header = " ".join(
        name.ljust(width) if i == 0 else name.rjust(width)
        for i, (name, width) in enumerate(TABLE_COLUMNS)
    )
    lines = [header, "-" * len(header)]
    for method, row in summary.iterrows():
        std = "" if math.isnan(row["score_std"]) else f" ± {_pp(row['score_std'], False)}"
        rank = "-" if math.isnan(row["rank"]) else str(int(row["rank"]))
        cells = [
            str(method),
            _pp(row["id_gain"]),
            _pp(row["dg_gain"]),
            _pp(row["cf_drop"]),
            _pp(row["score"]) + std,
            rank,
            str(int(row["n_runs"])),
            str(int(row["failed_runs"])),
        ]
        lines.append(
            " ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, (_, width)) in enumerate(zip(cells, TABLE_COLUMNS, strict=True))
            )
        )
    lines.append(
        "accuracy points (pp) against zeroshot; CF drop > 0 = forgot; "
        "score = mean(ID, DG, -CF); ± = std over seeds"
    )
    return "\n".join(lines)


def method_table(study: Study | str | Path) -> str:
    """The ranked per-method table as fixed-width text (see `method_summary`)."""
    return format_method_table(method_summary(study))


SCORE_CRITERION = "balance score, the mean of ID gain, DG gain and -CF drop"


def verdict_sentence(summary: pd.DataFrame, n_tasks: int) -> str:
    """One sentence naming the method the table ranks first by score, and how sure the seeds
    let us be. It never calls a fine-tuning method best when zero-shot ranks above it."""
    ranked = summary[summary["score"].notna()]
    candidates = ranked[~ranked["baseline"]]
    if candidates.empty:
        return "No fine-tuning method has a finished run with a zeroshot baseline: no verdict."
    best_name = candidates.index[0]
    best = candidates.iloc[0]
    spread = "" if math.isnan(best["score_std"]) else f" ± {_pp(best['score_std'], False)}"
    averaged = f"Averaged across {n_tasks} task(s) and {int(best['n_seeds'])} seed(s)"
    baseline = summary[summary["baseline"]]
    base = baseline["score"].iloc[0] if len(baseline) else 0.0
    if not math.isnan(base) and best["score"] <= base:
        return (
            f"{averaged}, no fine-tuning method beats leaving the model zero-shot on the "
            f"{SCORE_CRITERION}; the best fine-tuning method, {best_name}, scores "
            f"{_pp(best['score'])} pp{spread}."
        )
    text = (
        f"{averaged}, {best_name} gives the best balance: it ranks first on the "
        f"{SCORE_CRITERION} ({_pp(best['score'])} pp{spread})"
    )
    if len(candidates) > 1:
        second_name, second = candidates.index[1], candidates.iloc[1]
        gap = best["score"] - second["score"]
        seed_spread = np.nanmax([best["score_std"], second["score_std"], 0.0])
        text += f", ahead of {second_name} ({_pp(second['score'])} pp)"
        if math.isnan(best["score_std"]) or math.isnan(second["score_std"]):
            text += "; with a single seed there is no spread to judge the gap by"
        elif gap <= seed_spread:
            text += "; the gap is within the seed spread, so the two are not clearly apart"
    return text + "."
