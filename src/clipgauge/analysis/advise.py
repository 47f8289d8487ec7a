"""Advice for a new task: measure it zero-shot, predict each method's outcomes from the study.

For every method and outcome (ID gain, DG gain, CF drop, score) the study gives one value per
task (averaged over seeds and train domains). We fit outcome = a + b * measure by least squares
across the study's tasks, where `measure` is the one that best predicts zero-shot accuracy
(largest |Spearman|, see correlations.py), and predict at the new task's value with a t-based
95% prediction interval: yhat +- t(n-2) * s * sqrt(1 + 1/n + (x0 - mean x)^2 / Sxx). With
fewer than 3 tasks, or a measure that does not vary, the prediction is the study mean with
interval mean +- t(n-1) * sd * sqrt(1 + 1/n), and the advice says that no fit was possible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clipgauge.analysis.correlations import (
    MIN_PAIRS,
    N_BOOTSTRAP,
    correlation_table,
    task_measure_table,
    which_measure_predicts_best,
)
from clipgauge.analysis.load import OVERALL, Study, as_study, load_study
from clipgauge.analysis.summary import OUTCOME_LABELS, OUTCOMES, per_task_outcomes, run_outcomes
from clipgauge.cache import atomic_write_bytes
from clipgauge.errors import ClipgaugeError
from clipgauge.task_measures import measure

CONFIDENCE = 0.95
# A fit explaining less than this share of the variance across tasks is called weak.
WEAK_R2 = 0.25


def predict_linear(x, y, x0: float, confidence: float = CONFIDENCE) -> dict:
    """Least-squares prediction of y at x0 with a prediction interval (see module docstring).

    Returns value, lo, hi, slope, intercept, r2, p (of the slope), n and a note.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    out = {k: math.nan for k in ("value", "lo", "hi", "slope", "intercept", "r2", "p")}
    out.update(n=int(keep.sum()), fitted=False, note="")
    constant_x = keep.any() and np.ptp(x[keep]) <= 1e-12 * max(1.0, float(np.abs(x[keep]).max()))
    if keep.sum() < MIN_PAIRS or constant_x or not math.isfinite(x0):
        why = (
            "no measure value"
            if not math.isfinite(x0)
            else ("the measure does not vary" if constant_x else f"n = {int(keep.sum())} task(s)")
        )
        y = y[np.isfinite(y)]
        n = len(y)
        out["n"] = n
        if n == 0:
            out["note"] = "no study task has this outcome"
            return out
        mean = float(y.mean())
        out["value"] = mean
        if n >= 2:
            half = stats.t.ppf(0.5 + confidence / 2, n - 1) * y.std(ddof=1) * math.sqrt(1 + 1 / n)
            out["lo"], out["hi"] = mean - half, mean + half
        out["note"] = f"no fit ({why}): study mean over {n} task(s)"
        return out
    x, y = x[keep], y[keep]
    n = len(y)
    fit = stats.linregress(x, y)
    value = fit.intercept + fit.slope * x0
    residuals = y - (fit.intercept + fit.slope * x)
    s = math.sqrt(float((residuals**2).sum()) / (n - 2)) if n > 2 else math.nan
    sxx = float(((x - x.mean()) ** 2).sum())
    half = (
        stats.t.ppf(0.5 + confidence / 2, n - 2)
        * s
        * math.sqrt(1 + 1 / n + (x0 - x.mean()) ** 2 / sxx)
    )
    out.update(
        value=float(value),
        lo=float(value - half),
        hi=float(value + half),
        slope=float(fit.slope),
        intercept=float(fit.intercept),
        r2=float(fit.rvalue**2) if math.isfinite(fit.rvalue) else math.nan,
        p=float(fit.pvalue),
        fitted=True,
    )
    if x0 < x.min() or x0 > x.max():
        out["note"] = f"extrapolates beyond the study's range {x.min():.4g} to {x.max():.4g}"
    return out


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _pp(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{100 * value:+.2f}"


@dataclass
class Advice:
    """Which method to fine-tune a new task with, and the predictions behind the choice.

    `predictions` has one row per (method, outcome): value, lo, hi (95% prediction interval),
    slope, intercept, r2, p, n (study tasks in the fit), fitted and note. Accuracies are
    fractions; CF drop > 0 means forgetting; score = mean(ID gain, DG gain, -CF drop).
    """

    recommended: str
    reason: str
    measure: str | None
    measure_value: float
    predictions: pd.DataFrame
    new_task: dict
    notes: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def table(self) -> str:
        """Predicted outcomes per method in accuracy points, with 95% prediction intervals."""
        methods = list(dict.fromkeys(self.predictions["method"]))
        header = f"{'method':13} " + " ".join(f"{OUTCOME_LABELS[o]:>24}" for o in OUTCOMES)
        lines = [header, "-" * len(header)]
        for method in methods:
            cells = []
            for outcome in OUTCOMES:
                row = self.predictions[
                    (self.predictions["method"] == method)
                    & (self.predictions["outcome"] == outcome)
                ].iloc[0]
                text = f"{_pp(row['value'])} [{_pp(row['lo'])}, {_pp(row['hi'])}]"
                cells.append(f"{text:>24}")
            mark = " *" if method == self.recommended else ""
            lines.append(f"{method + mark:13} " + " ".join(cells))
        lines.append("pp against zeroshot, [95% prediction interval]; * = recommended")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return _json_safe(
            {
                "recommended": self.recommended,
                "reason": self.reason,
                "measure": self.measure,
                "measure_value": self.measure_value,
                "predictions": self.predictions.to_dict(orient="records"),
                "new_task": self.new_task,
                "notes": self.notes,
                "provenance": self.provenance,
            }
        )

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())
        return path


def predict_outcomes(
    study: Study | str | Path, measure_values: dict, *, n_boot: int = N_BOOTSTRAP
) -> tuple[pd.DataFrame, dict]:
    """Predict every method's outcomes for a task with the given zero-shot `measure_values`.

    Returns (predictions, context) where context names the predictor measure, its verdict
    sentence and the study tasks' values of it. `n_boot` sizes the bootstrap of the
    correlations that choose the measure (only their intervals, in the verdict, depend on it).
    """
    study = as_study(study)
    verdict = which_measure_predicts_best(correlation_table(study, methods=False, n_boot=n_boot))
    tasks = task_measure_table(study)
    per_task = per_task_outcomes(run_outcomes(study))
    measure = verdict.measure
    x0 = float(measure_values.get(measure, math.nan)) if measure else math.nan
    rows = []
    for method in per_task.index.get_level_values("method").unique():
        if method == study.baseline:
            continue
        outcomes = per_task.xs(method, level="method")
        if measure:
            outcomes = outcomes.reindex(tasks.index)
            x = tasks[measure]
        else:
            x = pd.Series(math.nan, index=outcomes.index)
        for outcome in OUTCOMES:
            rows.append(
                {"method": method, "outcome": outcome, **predict_linear(x, outcomes[outcome], x0)}
            )
    columns = ["method", "outcome", "value", "lo", "hi", "slope", "intercept", "r2", "p"]
    predictions = pd.DataFrame(rows, columns=[*columns, "n", "fitted", "note"])
    context = {
        "measure": measure,
        "measure_value": x0,
        "verdict": verdict.sentence,
        "baseline": study.baseline,
        "study_tasks": len(tasks),
        "study_range": (
            [float(tasks[measure].min()), float(tasks[measure].max())] if measure else None
        ),
    }
    return predictions, context


def _recommend(predictions: pd.DataFrame, context: dict) -> tuple[str, str, list[str]]:
    scores = predictions[predictions["outcome"] == "score"].set_index("method")
    scores = scores[scores["value"].notna()].sort_values("value", ascending=False)
    notes = []
    baseline = context["baseline"]
    if scores.empty:
        return (
            baseline,
            "The study has no fine-tuning run with a zeroshot baseline to learn from, so the "
            "only safe advice is to keep the model zero-shot.",
            notes,
        )
    best, row = scores.index[0], scores.iloc[0]

    def outcome(name: str) -> float:
        hit = predictions[(predictions["method"] == best) & (predictions["outcome"] == name)]
        return float(hit["value"].iloc[0])

    measure = context["measure"]
    where = (
        f"at {measure} = {context['measure_value']:.4g}"
        if row["fitted"]
        else "as the study average (no fit)"
    )
    reason = (
        f"{best} has the highest predicted balance score, {_pp(row['value'])} pp "
        f"(95% prediction interval {_pp(row['lo'])} to {_pp(row['hi'])}) {where}: predicted ID "
        f"gain {_pp(outcome('id_gain'))}, DG gain {_pp(outcome('dg_gain'))}, CF drop "
        f"{_pp(outcome('cf_drop'))} pp."
    )
    recommended = best
    if row["value"] <= 0:
        recommended = baseline
        reason += (
            " No method is predicted to beat leaving the model zero-shot, so the advice is "
            f"not to fine-tune ({baseline})."
        )
    if len(scores) > 1:
        second, second_value = scores.index[1], scores["value"].iloc[1]
        if math.isfinite(row["lo"]) and second_value >= row["lo"]:
            reason += (
                f" The runner-up {second} ({_pp(second_value)} pp) lies inside that interval, "
                "so the choice is not clear-cut."
            )
    if not row["fitted"]:
        reason += f" No fit was possible ({row['note']}), so this is the study average."
    elif row["r2"] < WEAK_R2 or row["p"] > 0.05:
        reason += (
            f" The fit of {best}'s score on {measure} is weak (R^2 = {row['r2']:.2f}, "
            f"p = {row['p']:.2g}, n = {int(row['n'])} tasks): read the prediction as close to "
            f"the study average for {best}."
        )
    elif row["n"] < 10:
        reason += f" The fit rests on n = {int(row['n'])} tasks only."
    if row["note"] and row["fitted"]:
        reason += f" The new task's {measure} {row['note']}: the prediction extrapolates."
    weak = predictions[predictions["fitted"] & (predictions["r2"] < WEAK_R2)]
    if len(weak):
        notes.append(
            f"{len(weak)} of {int(predictions['fitted'].sum())} fits explain less than "
            f"{WEAK_R2:.0%} of the variance across tasks"
        )
    return recommended, reason, notes


def advise(
    study_dir: str | Path,
    data,
    model=None,
    templates: str | Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    **measure_options,
) -> Advice:
    """Measure `data` zero-shot and recommend a fine-tuning method from the study's relations.

    `model` defaults to the study spec's model: measures are only comparable with the same
    model. `measure_options` go to `clipgauge.task_measures.measure` (cache, device, split, ...).
    """

    study = load_study(study_dir)
    if model is None:
        model = study.model_source()
        if model is None:
            raise ClipgaugeError(
                f"the study in {study_dir} does not name its model in its spec; pass --model"
            )
    measure_options.setdefault("progress", False)
    report = measure(model, data, domains=domains, templates=templates, **measure_options)
    overall = report.rows[OVERALL]
    predictions, context = predict_outcomes(study, overall)
    recommended, reason, notes = _recommend(predictions, context)
    notes.insert(0, context["verdict"])
    study_fingerprint = study.model_fingerprint()
    new_fingerprint = report.provenance.get("model", {}).get("fingerprint")
    if study_fingerprint and new_fingerprint and study_fingerprint != new_fingerprint:
        notes.append(
            f"the new task was measured with model fingerprint {new_fingerprint}, the study used "
            f"{study_fingerprint}: measures of different models are not comparable"
        )
    provenance = {
        "study": str(Path(study_dir)),
        "study_spec": study.spec_name(),
        "study_model_fingerprint": study_fingerprint,
        "measure_provenance": report.provenance,
        "predictor": context["measure"],
        "study_range": context["study_range"],
        "study_tasks": context["study_tasks"],
        "confidence": CONFIDENCE,
    }
    return Advice(
        recommended=recommended,
        reason=reason,
        measure=context["measure"],
        measure_value=context["measure_value"],
        predictions=predictions,
        new_task=dict(overall),
        notes=notes,
        provenance=provenance,
    )
