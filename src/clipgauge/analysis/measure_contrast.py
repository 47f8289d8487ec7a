"""Does ss measure task difficulty better than ACS? The difference of their correlations with
zero-shot accuracy, and with what fine-tuning gains, with a paired bootstrap interval.

Orientation (what the paper expects): a higher ss (silhouette_modality: image and class-text
clouds further apart) means a harder task, a higher ACS a better aligned, easier one. Each
measure's Spearman correlation across tasks is turned so that + means "as expected":
- with zero-shot accuracy (harder = less accurate): -rho(ss, acc) and +rho(ACS, acc);
- with the fine-tuning gain (harder = more to gain): +rho(ss, gain) and -rho(ACS, gain), where
  a task's gain is the ID gain of its best fine-tuning method (largest mean over seeds and
  train domains): the most fine-tuning achieved on that task, whichever method did it.
The statistic is oriented(ss) - oriented(ACS): > 0 says ss tracks difficulty better.
Units: tasks (each task's zero-shot `overall` measures, see correlations.py). The interval is
a paired percentile bootstrap over tasks: each replicate draws tasks with replacement and
computes both correlations on the same draw; draws where a measure or the outcome is constant
have no correlation and are dropped (counted in the note).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clipgauge.analysis.bootstrap import BOOTSTRAP_SEED, CONFIDENCE, N_BOOTSTRAP
from clipgauge.analysis.bootstrap import percentile_interval as _interval
from clipgauge.analysis.correlations import MIN_PAIRS, _row_pearson, task_measure_table
from clipgauge.analysis.load import ACCURACY, Study, as_study
from clipgauge.analysis.summary import per_task_outcomes, run_outcomes

SS = "silhouette_modality"
ACS = "acs"
# Expected sign of each measure's correlation with each outcome (module docstring).
EXPECTED_SIGN = {
    ACCURACY: {SS: -1.0, ACS: +1.0},
    "best_id_gain": {SS: +1.0, ACS: -1.0},
}
OUTCOME_LABELS = {
    ACCURACY: "zero-shot accuracy",
    "best_id_gain": "ID gain of the best fine-tuning method",
}


@dataclass
class MeasureContrast:
    """oriented rho(ss) - oriented rho(ACS) against one outcome across tasks, with interval."""

    outcome: str
    n: int
    rho_ss: float
    rho_acs: float
    value: float
    lo: float
    hi: float
    note: str


def spearman_replicates(x: np.ndarray, y: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Spearman rho of (x, y) on each row of task draws; NaN where either side is constant."""
    xb, yb = x[draws], y[draws]
    return _row_pearson(
        stats.rankdata(xb, axis=1).astype(float), stats.rankdata(yb, axis=1).astype(float)
    )


def task_draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) task indices drawn with replacement, from a generator seeded with `seed`."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def contrast(
    outcome: str,
    table: pd.DataFrame,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> MeasureContrast:
    """The oriented ss - ACS contrast for `outcome`, a column of `table` (one row per task,
    with SS and ACS columns)."""
    columns = [SS, ACS, outcome]
    data = table.reindex(columns=columns).astype(float).dropna()
    n = len(data)
    nan = MeasureContrast(outcome, n, *([math.nan] * 5), "")
    if n < MIN_PAIRS:
        nan.note = f"n = {n} task(s) with ss, ACS and {OUTCOME_LABELS[outcome]}: too few"
        return nan
    x_ss, x_acs, y = (data[c].to_numpy() for c in columns)
    if any(np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())) for v in (x_ss, x_acs, y)):
        nan.note = "a measure or the outcome does not vary across tasks"
        return nan
    sign = EXPECTED_SIGN[outcome]
    rho_ss = float(stats.spearmanr(x_ss, y).statistic)
    rho_acs = float(stats.spearmanr(x_acs, y).statistic)
    draws = task_draws(n, n_boot, seed)
    boot = sign[SS] * spearman_replicates(x_ss, y, draws) - sign[ACS] * spearman_replicates(
        x_acs, y, draws
    )
    lo, hi = _interval(boot, confidence)
    dropped = int((~np.isfinite(boot)).sum())
    note = f"{dropped} of {n_boot} resamples had a constant side, dropped" if dropped else ""
    value = sign[SS] * rho_ss - sign[ACS] * rho_acs
    return MeasureContrast(outcome, n, rho_ss, rho_acs, value, lo, hi, note)


def best_id_gain(study: Study) -> pd.Series:
    """Per task: the largest seed-averaged ID gain of any fine-tuning method."""
    per_task = per_task_outcomes(run_outcomes(study))
    if per_task.empty:
        return pd.Series(dtype=float)
    gains = per_task["id_gain"].unstack("method")
    gains = gains.drop(columns=[c for c in gains.columns if c == study.baseline])
    return gains.max(axis=1, skipna=True)


def compare_measures(
    study: Study | str | Path, *, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> list[MeasureContrast]:
    """The ss - ACS contrast against zero-shot accuracy, then against the best ID gain."""
    study = as_study(study)
    table = task_measure_table(study).copy()
    table["best_id_gain"] = best_id_gain(study).reindex(table.index)
    return [contrast(o, table, n_boot=n_boot, seed=seed) for o in EXPECTED_SIGN]
