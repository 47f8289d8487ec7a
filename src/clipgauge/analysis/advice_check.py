"""Would `clipgauge advise` have chosen well? Leave one task out and count the regret.

For each task with fine-tuned runs, the advice is made from the OTHER tasks only: the study is
restricted to them and advise.py's `predict_outcomes` and recommendation rule run on it with the
held-out task's zero-shot measures (its `overall` measure_before row). Each method's actual
score on the held-out task is its balance score (summary.py) averaged over seeds and train
domains, the zero-shot baseline's being 0. Then
  regret = (the best actual score on the task, the baseline's 0 included)
           - (the actual score of the recommended method),
in accuracy points, 0 when the advice picked the best. Two fixed choices are scored the same
way: "overall_best", the method with the best mean score over the other tasks (the baseline
at 0 among the candidates: chosen from the other tasks too, so it is as honest as the
advice), and "zeroshot", never fine-tuning, whose regret is the task's best score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clipgauge.analysis.advise import _recommend, predict_outcomes
from clipgauge.analysis.correlations import task_measure_table
from clipgauge.analysis.load import Study, as_study
from clipgauge.analysis.summary import per_task_outcomes, run_outcomes

# The advice uses only the ranking of measures, not their intervals: few resamples suffice.
ADVICE_BOOTSTRAP = 200
CHECK_COLUMNS = [
    "recommended",
    "best",
    "best_score",
    "recommended_score",
    "regret",
    "overall_best",
    "overall_best_regret",
    "zeroshot_regret",
]


@dataclass
class AdviceCheck:
    """Leave-one-task-out regret of the advice and of two fixed choices (fractions)."""

    per_task: pd.DataFrame
    mean_regret: float
    baselines: dict[str, float]
    notes: list[str] = field(default_factory=list)


def restrict_to_tasks(study: Study, tasks) -> Study:
    """The study with only the runs of `tasks` (and their metrics)."""
    runs = study.runs[study.runs["task"].isin(set(tasks))].reset_index(drop=True)
    metrics = study.metrics[study.metrics["run_id"].isin(set(runs["run_id"]))]
    return replace(study, runs=runs, metrics=metrics.reset_index(drop=True))


def actual_scores(study: Study) -> pd.DataFrame:
    """Task x method: seed- and train-domain-averaged score; the baseline's column is 0."""
    per_task = per_task_outcomes(run_outcomes(study))
    if per_task.empty:
        return pd.DataFrame()
    scores = per_task["score"].unstack("method")
    if study.baseline in scores.columns:
        scores[study.baseline] = scores[study.baseline].where(scores[study.baseline].isna(), 0.0)
    return scores


def _best(row: pd.Series) -> tuple[str | None, float]:
    row = row.dropna()
    if row.empty:
        return None, math.nan
    return str(row.idxmax()), float(row.max())


def _advise_held_out(study: Study, task: str, measures: pd.DataFrame, n_boot: int) -> str:
    others = restrict_to_tasks(study, [t for t in study.tasks if t != task])
    values = measures.loc[task].to_dict() if task in measures.index else {}
    predictions, context = predict_outcomes(others, values, n_boot=n_boot)
    recommended, _, _ = _recommend(predictions, context)
    return recommended


def check_advice(study: Study | str | Path, *, n_boot: int = ADVICE_BOOTSTRAP) -> AdviceCheck:
    """Leave-one-task-out check of the advice (module docstring)."""
    study = as_study(study)
    scores = actual_scores(study)
    baseline = study.baseline
    notes: list[str] = []
    empty = AdviceCheck(pd.DataFrame(columns=CHECK_COLUMNS), math.nan, {}, notes)
    if baseline is None or scores.empty or baseline not in scores.columns:
        notes.append("no zero-shot baseline with fine-tuned runs: nothing to check")
        return empty
    tuned = scores.drop(columns=baseline)
    trained = [t for t in scores.index if tuned.loc[t].notna().any()]
    if not trained:
        notes.append("no task has a fine-tuned run with a baseline: nothing to check")
        return empty
    measures = task_measure_table(study)
    rows = {}
    for task in trained:
        actual = scores.loc[task].copy()
        actual[baseline] = 0.0
        best, best_score = _best(actual)
        recommended = _advise_held_out(study, task, measures, n_boot)
        other_tasks = scores.drop(index=task)
        means = other_tasks.mean(axis=0, skipna=True) if len(other_tasks) else pd.Series()
        means[baseline] = 0.0
        overall_best, _ = _best(means)
        recommended_score = float(actual.get(recommended, math.nan))
        if not math.isfinite(recommended_score):
            notes.append(f"{task}: the recommended {recommended} has no finished run there")
        rows[task] = {
            "recommended": recommended,
            "best": best,
            "best_score": best_score,
            "recommended_score": recommended_score,
            "regret": best_score - recommended_score,
            "overall_best": overall_best,
            "overall_best_regret": best_score - float(actual.get(overall_best, math.nan)),
            "zeroshot_regret": best_score,
        }
    per_task = pd.DataFrame.from_dict(rows, orient="index", columns=CHECK_COLUMNS)
    per_task.index.name = "task"

    def mean(column: str) -> float:
        values = per_task[column].to_numpy(float)
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else math.nan

    baselines = {"overall_best": mean("overall_best_regret"), "zeroshot": mean("zeroshot_regret")}
    return AdviceCheck(per_task, mean("regret"), baselines, notes)
