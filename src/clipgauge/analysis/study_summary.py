"""summary.json: a study's headline numbers in one machine-readable file, written by
`build_report` beside report.md.

Units: pp (accuracy points: accuracy fractions x 100) for every accuracy, gain, drop, score and
regret. NaN is written as null. Exactly these keys:
  seconds         the study's wall time in seconds: the study info key `wall_seconds` when the
                  runner stored it; else the sum of the finished runs' `seconds` (their
                  compute time, more than the wall time when runs ran in parallel)
  tasks_measured  sorted task names with zero-shot measures (measure_before rows)
  tasks_trained   sorted task names with a finished run of a fine-tuning method (any method
                  but the zero-shot baseline)
  per_task        {task: {"zero_shot_id": the baseline's ID accuracy, "best_method": the
                  fine-tuning method with the largest ID gain there (the baseline when no
                  method has a run with a baseline there), "best_id_gain": its ID gain}},
                  each a mean over seeds and train domains, for every task with a
                  zero-shot ID accuracy (a finished baseline run with train domains; an
                  evaluation-only task has none)
  methods         {method: {"id_gain" | "dg_gain" | "cf_drop" | "score": {"mean": float,
                  "ci": [lo, hi]}}}: method_summary's means and their 95% bootstrap
                  intervals (bootstrap.py), for every method with a usable run
  findings        [{"finding", "verdict", "statistic", "value", "ci": [lo, hi]}], one per
                  finding of findings.py; value and ci in pp, except for the two
                  correlation findings (a correlation, as `statistic` says)
  advice_check    {"per_task": {task: {"recommended", "best", "regret"}}, "mean_regret",
                  "baselines": {"overall_best", "zeroshot"}}: the leave-one-task-out check of
                  the advice (advice_check.py); baselines hold the two fixed choices' mean
                  regrets
  wise            null, or with `eval.wise_alphas` (wise.py): {"alphas": [0, ..., 1],
                  "methods": {method: {"best_alpha": float, "curve": [{"alpha": float,
                  "id_gain" | "dg_gain" | "cf_drop" | "score": {"mean", "ci"}}, ...],
                  "best_minus_tuned": {outcome: {"mean", "ci"}}}}}: each fine-tuned method
                  along the WiSE-FT interpolation, and its best alpha (by score) minus alpha 1,
                  paired
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from clipgauge.analysis.advice_check import AdviceCheck
from clipgauge.analysis.advise import _json_safe
from clipgauge.analysis.bootstrap import OutcomeBootstrap
from clipgauge.analysis.findings import Finding
from clipgauge.analysis.load import Study
from clipgauge.analysis.summary import OUTCOMES, per_task_outcomes, run_outcomes
from clipgauge.analysis.wise import WiseCurves
from clipgauge.cache import atomic_write_bytes

SUMMARY_KEYS = (
    "seconds",
    "tasks_measured",
    "tasks_trained",
    "per_task",
    "methods",
    "findings",
    "advice_check",
    "wise",
)
SUMMARY_FILE = "summary.json"


def _pp(value) -> float:
    value = float(value)
    return 100 * value if math.isfinite(value) else math.nan


def study_seconds(study: Study) -> float:
    """`wall_seconds` from the study info, else the finished runs' summed seconds."""
    try:
        return float(study.info["wall_seconds"])
    except (KeyError, TypeError, ValueError):
        seconds = pd.to_numeric(study.finished["seconds"], errors="coerce")
        return float(seconds.sum(skipna=True))


def _per_task(study: Study) -> dict:
    outcomes = run_outcomes(study)
    base = outcomes[(outcomes["method"] == study.baseline) & outcomes["has_baseline"]]
    zero_shot = base.groupby("task")["id_acc"].mean().dropna()
    per_task = per_task_outcomes(outcomes)
    gains = per_task["id_gain"].unstack("method") if len(per_task) else pd.DataFrame()
    gains = gains.drop(columns=[c for c in gains.columns if c == study.baseline])
    out = {}
    for task, accuracy in zero_shot.items():
        row = gains.loc[task].dropna() if task in gains.index else pd.Series(dtype=float)
        best, gain = (str(row.idxmax()), row.max()) if len(row) else (study.baseline, 0.0)
        out[str(task)] = {
            "zero_shot_id": _pp(accuracy),
            "best_method": best,
            "best_id_gain": _pp(gain),
        }
    return out


def _methods(boot: OutcomeBootstrap) -> dict:
    table = boot.table()
    return {
        str(method): {
            o: {"mean": _pp(row[o]), "ci": [_pp(row[f"{o}_lo"]), _pp(row[f"{o}_hi"])]}
            for o in OUTCOMES
        }
        for method, row in table.iterrows()
    }


def _advice(check: AdviceCheck) -> dict:
    return {
        "per_task": {
            str(task): {
                "recommended": row["recommended"],
                "best": row["best"],
                "regret": _pp(row["regret"]),
            }
            for task, row in check.per_task.iterrows()
        },
        "mean_regret": _pp(check.mean_regret),
        "baselines": {
            "overall_best": _pp(check.baselines.get("overall_best", math.nan)),
            "zeroshot": _pp(check.baselines.get("zeroshot", math.nan)),
        },
    }


def _interval(row, outcome: str) -> dict:
    return {"mean": _pp(row[outcome]), "ci": [_pp(row[f"{outcome}_lo"]), _pp(row[f"{outcome}_hi"])]}


def _wise(curves: WiseCurves | None) -> dict | None:
    if curves is None:
        return None
    methods = {}
    for method, alpha in curves.best.items():
        mine = curves.table[curves.table["method"] == method].sort_values("alpha")
        methods[str(method)] = {
            "best_alpha": alpha,
            "curve": [
                {"alpha": float(row["alpha"]), **{o: _interval(row, o) for o in OUTCOMES}}
                for _, row in mine.iterrows()
            ],
            "best_minus_tuned": {
                o: _interval(curves.best_vs_tuned.loc[method], o) for o in OUTCOMES
            },
        }
    return {"alphas": curves.alphas, "methods": methods}


def study_summary(
    study: Study,
    boot: OutcomeBootstrap,
    findings: list[Finding],
    check: AdviceCheck,
    wise: WiseCurves | None = None,
) -> dict:
    """The summary.json content (module docstring), JSON-safe."""
    measured = study.metrics.loc[study.metrics["protocol"] == "measure_before", "run_id"]
    measured_tasks = study.runs.loc[study.runs["run_id"].isin(set(measured)), "task"]
    finished = study.finished
    trained = finished.loc[finished["method"] != study.baseline, "task"]
    summary = {
        "seconds": study_seconds(study),
        "tasks_measured": sorted(str(t) for t in measured_tasks.unique()),
        "tasks_trained": sorted(str(t) for t in trained.unique()),
        "per_task": _per_task(study),
        "methods": _methods(boot),
        "findings": [
            {
                "finding": f.finding,
                "verdict": f.verdict,
                "statistic": f.statistic,
                "value": f.value,
                "ci": [f.lo, f.hi],
            }
            for f in findings
        ],
        "advice_check": _advice(check),
        "wise": _wise(wise),
    }
    return _json_safe(summary)


def write_summary(path: str | Path, summary: dict) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode())
    return path
