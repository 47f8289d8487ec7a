"""Do zero-shot measures tell how hard a task is, and how each method will fare on it?

Units: `tasks` (the `overall` row of each task's zero-shot `measure_before`) and `task-domains`
(its per-domain rows), both from the zeroshot runs (any finished run of a task that has no
zeroshot run), averaged over seeds and train-domain choices. Per-method outcomes (ID gain, DG
gain, CF drop, see summary.py) are related to the task-level measures.

Each pair gets Pearson r and Spearman rho with scipy.stats p-values, n, and a 95% percentile
bootstrap interval: 2000 resamples of the (x, y) pairs with replacement, numpy generator seeded
with 0; resamples where x or y is constant have no correlation and are dropped (counted in the
note). Pairs with a NaN are dropped first; n < 3 gives NaN everywhere and says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clipgauge.analysis.load import ACCURACY, OVERALL, Study, as_study
from clipgauge.analysis.summary import per_task_outcomes, run_outcomes
from clipgauge.measures import MEASURE_FIELDS

DIFFICULTY_MEASURES = (
    "silhouette_modality",
    "silhouette_class",
    "acs",
    "modality_gap",
    "iimm",
)
METHOD_OUTCOMES = ("id_gain", "dg_gain", "cf_drop")
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
MIN_PAIRS = 3
# Below this many units an interval that excludes 0 is still called weak evidence.
FEW_UNITS = 10

CORRELATION_COLUMNS = [
    "n",
    "pearson_r",
    "pearson_p",
    "pearson_lo",
    "pearson_hi",
    "spearman_rho",
    "spearman_p",
    "spearman_lo",
    "spearman_hi",
    "note",
]


def _tiny(v: np.ndarray) -> float:
    """Spread below this is rounding noise: the values are constant."""
    return 1e-12 * max(1.0, float(np.abs(v).max()))


def _is_constant(v: np.ndarray) -> bool:
    return bool(np.ptp(v) <= _tiny(v))


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair; NaN where a row is constant."""
    constant = (np.ptp(a, axis=1) <= _tiny(a)) | (np.ptp(b, axis=1) <= _tiny(b))
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    r[constant] = np.nan
    return np.clip(r, -1.0, 1.0)


def correlate(
    x, y, *, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE
) -> dict:
    """Pearson and Spearman correlation of paired values, with p-values and bootstrap intervals.

    Returns a dict with the CORRELATION_COLUMNS keys; `note` explains any NaN.
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y has {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    result = {c: math.nan for c in CORRELATION_COLUMNS}
    result["n"] = n
    notes = []
    if n < MIN_PAIRS:
        result["note"] = f"n = {n} < {MIN_PAIRS}: too few pairs for a correlation"
        return result
    if _is_constant(x) or _is_constant(y):
        result["note"] = f"{'x' if _is_constant(x) else 'y'} is constant: no correlation"
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on near-constant input and small n
        pearson = stats.pearsonr(x, y)
        spearman = stats.spearmanr(x, y)
    result["pearson_r"] = float(pearson.statistic)
    result["pearson_p"] = float(pearson.pvalue)
    result["spearman_rho"] = float(spearman.statistic)
    result["spearman_p"] = float(spearman.pvalue)

    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_boot, n))
    xb, yb = x[index], y[index]
    boot = {
        "pearson": _row_pearson(xb, yb),
        "spearman": _row_pearson(
            stats.rankdata(xb, axis=1).astype(float), stats.rankdata(yb, axis=1).astype(float)
        ),
    }
    alpha = (1.0 - confidence) / 2
    for name, values in boot.items():
        values = values[np.isfinite(values)]
        if len(values) < 0.5 * n_boot:
            notes.append(f"{name} interval: only {len(values)} of {n_boot} resamples usable")
        if len(values):
            lo, hi = np.quantile(values, [alpha, 1 - alpha])
            result[f"{name}_lo"], result[f"{name}_hi"] = float(lo), float(hi)
    dropped = n_boot - int(np.isfinite(boot["pearson"]).sum())
    if dropped:
        notes.append(f"{dropped} of {n_boot} bootstrap resamples constant, dropped")
    if n < FEW_UNITS:
        notes.append(f"n = {n}: weak evidence")
    result["note"] = "; ".join(notes)
    return result


def _measure_rows(study: Study) -> pd.DataFrame:
    """`measure_before` rows of the zeroshot runs; of any finished run for tasks without one."""
    metrics = study.metrics[study.metrics["protocol"] == "measure_before"]
    runs = study.finished[["run_id", "task", "method"]]
    rows = metrics.drop(columns="eval_task").merge(runs, on="run_id")
    is_baseline = rows["method"] == study.baseline
    zeroshot_tasks = set(rows.loc[is_baseline, "task"])
    chosen = is_baseline | ~rows["task"].isin(zeroshot_tasks)
    return rows[chosen]


def _measure_table(study: Study, by: list[str]) -> pd.DataFrame:
    rows = _measure_rows(study)
    if by == ["task"]:
        rows = rows[rows["domain"] == OVERALL]
    else:
        rows = rows[rows["domain"] != OVERALL]
    # Mean per run first, so a run with repeated rows does not weigh more.
    per_run = rows.groupby([*by, "run_id", "name"])["value"].mean()
    table = per_run.groupby(level=[*by, "name"]).mean().unstack("name")
    columns = [c for c in MEASURE_FIELDS if c in table.columns]
    return table.reindex(columns=columns)


def task_measure_table(study: Study | str | Path) -> pd.DataFrame:
    """Zero-shot measures per task (`overall` rows), averaged over seeds; index = task."""
    return _measure_table(as_study(study), ["task"])


def domain_measure_table(study: Study | str | Path) -> pd.DataFrame:
    """Zero-shot measures per (task, domain), averaged over seeds; index = (task, domain)."""
    return _measure_table(as_study(study), ["task", "domain"])


def correlation_table(
    study: Study | str | Path,
    *,
    methods: bool = True,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Every correlation of the study, one row each (`methods=False`: only zero-shot accuracy).

    Columns: unit (`tasks` or `task-domains`), method (empty for zero-shot accuracy), outcome
    (`zero_shot_accuracy`, `id_gain`, `dg_gain`, `cf_drop`), measure, then CORRELATION_COLUMNS.
    """
    study = as_study(study)
    rows = []
    tables = {"tasks": task_measure_table(study), "task-domains": domain_measure_table(study)}
    for unit, table in tables.items():
        for measure in DIFFICULTY_MEASURES:
            x = table[measure] if measure in table else pd.Series(np.nan, index=table.index)
            y = table[ACCURACY] if ACCURACY in table else pd.Series(np.nan, index=table.index)
            rows.append(
                {
                    "unit": unit,
                    "method": "",
                    "outcome": ACCURACY,
                    "measure": measure,
                    **correlate(x, y, n_boot=n_boot, seed=seed),
                }
            )
    task_table = tables["tasks"]
    per_task = per_task_outcomes(run_outcomes(study))
    names = per_task.index.get_level_values("method").unique() if methods else []
    for method in [m for m in names if m != study.baseline]:
        outcomes = per_task.xs(method, level="method").reindex(task_table.index)
        for outcome in METHOD_OUTCOMES:
            for measure in DIFFICULTY_MEASURES:
                x = task_table[measure] if measure in task_table else np.full(len(outcomes), np.nan)
                rows.append(
                    {
                        "unit": "tasks",
                        "method": method,
                        "outcome": outcome,
                        "measure": measure,
                        **correlate(x, outcomes[outcome], n_boot=n_boot, seed=seed),
                    }
                )
    return pd.DataFrame(
        rows, columns=["unit", "method", "outcome", "measure", *CORRELATION_COLUMNS]
    )


def format_p(p: float) -> str:
    """A p-value for prose: scipy's 0.0 for a perfect rank correlation reads as < 0.001."""
    if p is None or math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def evidence_words(n: int, lo: float, hi: float, unit: str = "tasks") -> str:
    """Plain wording for how much an interval from n units supports a correlation."""
    if n < MIN_PAIRS or math.isnan(lo) or math.isnan(hi):
        return f"n = {n} {unit}: too few to estimate a correlation"
    if lo <= 0 <= hi:
        return f"its 95% interval includes 0, so n = {n} {unit} give no clear evidence"
    if n < FEW_UNITS:
        return f"its 95% interval excludes 0, but n = {n} {unit} is weak evidence"
    return f"its 95% interval excludes 0 (n = {n} {unit})"


@dataclass
class Verdict:
    """The measure whose Spearman correlation with zero-shot accuracy is largest in size."""

    measure: str | None
    unit: str
    spearman_rho: float
    spearman_p: float
    spearman_lo: float
    spearman_hi: float
    pearson_r: float
    n: int
    excludes_zero: bool
    sentence: str

    def to_dict(self) -> dict:
        return asdict(self)


def which_measure_predicts_best(
    study_or_table: Study | str | Path | pd.DataFrame, unit: str = "tasks"
) -> Verdict:
    """Pick the measure with the largest |Spearman rho| against zero-shot accuracy over `unit`.

    Takes a study (or its folder) or a `correlation_table`. The sentence states the interval
    and how much n supports it.
    """
    table = (
        study_or_table
        if isinstance(study_or_table, pd.DataFrame)
        else correlation_table(study_or_table, methods=False)
    )
    rows = table[
        (table["unit"] == unit) & (table["outcome"] == ACCURACY) & table["spearman_rho"].notna()
    ]
    if rows.empty:
        any_rows = table[(table["unit"] == unit) & (table["outcome"] == ACCURACY)]
        n = int(any_rows["n"].max()) if len(any_rows) else 0
        return Verdict(
            None,
            unit,
            *([math.nan] * 5),
            n,
            False,
            f"No measure could be correlated with zero-shot accuracy across {unit} "
            f"(n = {n}; at least {MIN_PAIRS} needed, and values must vary).",
        )
    best = rows.loc[rows["spearman_rho"].abs().idxmax()]
    n, rho, lo, hi = int(best["n"]), best["spearman_rho"], best["spearman_lo"], best["spearman_hi"]
    excludes_zero = bool(not (lo <= 0 <= hi)) if not (math.isnan(lo) or math.isnan(hi)) else False
    direction = "lower" if rho < 0 else "higher"
    sentence = (
        f"Across {unit}, {best['measure']} predicts zero-shot accuracy best: Spearman rho = "
        f"{rho:+.2f} (95% bootstrap interval {lo:+.2f} to {hi:+.2f}, "
        f"p {format_p(best['spearman_p'])}, n = {n}); "
        f"a higher {best['measure']} goes with {direction} accuracy. "
        f"{evidence_words(n, lo, hi, unit).capitalize()}."
    )
    others = rows[rows["measure"] != best["measure"]]
    close = others[(others["spearman_rho"].abs() >= min(abs(lo), abs(hi)))]
    if not close.empty and excludes_zero:
        names = ", ".join(close["measure"])
        sentence += f" Within its interval also: {names}, so the ranking of measures is uncertain."
    return Verdict(
        str(best["measure"]),
        unit,
        float(rho),
        float(best["spearman_p"]),
        float(lo),
        float(hi),
        float(best["pearson_r"]),
        n,
        excludes_zero,
        sentence,
    )
