"""Paired, hierarchical bootstrap intervals for each method's mean outcomes and for the
differences between methods.

One replicate resamples, independently:
- tasks: the tasks that have a usable run (finished, with its zero-shot baseline), drawn with
  replacement; a task carries all its train-domain settings, methods and seeds;
- test images: in every test cell its n images, drawn with replacement once per replicate,
  and that same draw is used for every run scored on the cell (every method, seed and
  train-domain setting; for the cells that measure forgetting of a task, every other trained
  task's runs). So gains against zero-shot and differences between methods are paired image
  by image. A cell is a task's domain as its own runs are scored on it (id, dg), or as runs
  of other tasks measure forgetting on it (cf_before, cf_after: the spec may cap those to a
  subset, so the two are drawn separately). A task drawn twice reuses its image draw (tasks
  and images are crossed, as the forgetting cells are in the study itself), which is
  slightly conservative.
Seeds are not resampled: as in the point estimate, each (method, seed) averages its tasks and
a method's value is the mean over its seeds. Seeds vary independently from task to task, so
the task resampling already carries their spread; 2 or 3 seeds are too few to resample on
their own (the method table's ± shows the spread over seeds).

Each replicate repeats the point estimate's arithmetic (summary.py) on the resampled data: per
run, ID and DG accuracy pooled over the run's domains (correct images / images), gains against
the same (task, train domains, seed) zero-shot run, CF drop = mean over forgetting tasks of
before - after, score = mean(ID gain, DG gain, -CF drop); the mean over train-domain settings
per (method, seed, task); the task mean per (method, seed), each task weighted by how often
the replicate drew it; the mean over seeds. Row 0 of every replicate array is the point
estimate, equal to `method_summary`. Intervals are 95% percentile intervals of the
`N_BOOTSTRAP` replicates (numpy generator seeded with `BOOTSTRAP_SEED`); replicates where a
value is undefined (no drawn task has it) are dropped, and with fewer than half left the
interval is NaN.

Without per-image predictions (databases written before they were stored, a run whose rows are
missing, or rows that disagree with the stored accuracies) the study is resampled over tasks
only; `level` and `note` say so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from clipgauge.analysis.load import (
    ACCURACY,
    OVERALL,
    Study,
    as_study,
    load_predictions,
    unpack_correct,
)
from clipgauge.analysis.summary import OUTCOMES, run_outcomes

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
TASKS_AND_IMAGES = "tasks+images"
TASKS_ONLY = "tasks"
# Image draws are made in blocks of at most this many (replicate, image) pairs: bounded memory.
BLOCK_DRAWS = 4_000_000
# A run's gains recomputed from its per-image flags must match the stored ones this closely.
AGREEMENT = 1e-6
# float32 sums of 0/1 flags times integer weights are exact below this many images.
FLOAT32_EXACT = 2**24
# A test cell: one draw of images per replicate serves every prediction row of it.
CELL = ["eval_task", "domain", "family"]


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; NaN when fewer than half are finite."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if len(finite) == 0 or len(finite) < 0.5 * len(values):
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass
class OutcomeBootstrap:
    """Replicates of each method's mean outcomes; `values[outcome]` has shape
    (n_boot + 1, len(methods)), row 0 the point estimate (fractions of accuracy)."""

    level: str
    note: str
    methods: list[str]
    tasks: list[str]
    baseline: str | None
    values: dict[str, np.ndarray]
    n_boot: int
    seed: int
    confidence: float

    def point(self, method: str, outcome: str) -> float:
        return float(self.values[outcome][0, self.methods.index(method)])

    def replicates(self, method: str, outcome: str) -> np.ndarray:
        return self.values[outcome][1:, self.methods.index(method)]

    def interval(self, replicates: np.ndarray) -> tuple[float, float]:
        return percentile_interval(replicates, self.confidence)

    def table(self) -> pd.DataFrame:
        """Per method: each outcome's point estimate with `<outcome>_lo` and `<outcome>_hi`."""
        return self._table(self.values, self.methods)

    def differences(self, reference: str) -> pd.DataFrame:
        """Per other method: (method - reference) for each outcome, paired replicate by
        replicate, with its interval. Empty when the reference has no usable run."""
        if reference not in self.methods:
            return self._table({o: np.empty((self.n_boot + 1, 0)) for o in OUTCOMES}, [])
        ref = self.methods.index(reference)
        others = [m for m in self.methods if m != reference]
        keep = [self.methods.index(m) for m in others]
        diffs = {o: v[:, keep] - v[:, [ref]] for o, v in self.values.items()}
        return self._table(diffs, others)

    def _table(self, values: dict[str, np.ndarray], methods: list[str]) -> pd.DataFrame:
        rows = []
        for j, method in enumerate(methods):
            row: dict = {"method": method}
            for outcome in OUTCOMES:
                column = values[outcome][:, j]
                row[outcome] = float(column[0])
                row[f"{outcome}_lo"], row[f"{outcome}_hi"] = self.interval(column[1:])
            rows.append(row)
        columns = ["method", *[f"{o}{s}" for o in OUTCOMES for s in ("", "_lo", "_hi")]]
        return pd.DataFrame(rows, columns=columns).set_index("method")


def bootstrap_outcomes(
    study: Study | str | Path,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> OutcomeBootstrap:
    """Bootstrap every method's mean ID gain, DG gain, CF drop and score (module docstring)."""
    study = as_study(study)
    outcomes = run_outcomes(study)
    usable = outcomes[outcomes["has_baseline"]].reset_index(drop=True)
    methods = sorted(usable["method"].unique())
    tasks = sorted(usable["task"].unique())
    image_seed, task_seed = np.random.SeedSequence(seed).spawn(2)
    per_run, level, note = run_replicates(study, usable, n_boot, np.random.default_rng(image_seed))
    weights = _task_weights(len(tasks), n_boot, np.random.default_rng(task_seed))
    values = _method_values(per_run, usable, methods, tasks, weights)
    return OutcomeBootstrap(
        level, note, methods, tasks, study.baseline, values, n_boot, seed, confidence
    )


def _task_weights(n_tasks: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each replicate draws each task, (n_boot + 1, n_tasks); row 0 all ones."""
    weights = np.ones((n_boot + 1, n_tasks))
    if n_tasks:
        draws = rng.integers(0, n_tasks, size=(n_boot, n_tasks))
        offsets = (np.arange(n_boot) * n_tasks)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_tasks)
        weights[1:] = counts.reshape(n_boot, n_tasks)
    return weights


def _nan_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _method_values(
    per_run: dict[str, np.ndarray],
    usable: pd.DataFrame,
    methods: list[str],
    tasks: list[str],
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per replicate and method: train settings averaged per (method, seed, task), tasks
    averaged with the replicate's weights per (method, seed), seeds averaged; NaN skipped."""
    seeds = sorted(usable["seed"].unique())
    shape = (len(methods), len(seeds), len(tasks))
    unit = (
        np.ravel_multi_index(
            (
                usable["method"].map({m: i for i, m in enumerate(methods)}).to_numpy(int),
                usable["seed"].map({s: i for i, s in enumerate(seeds)}).to_numpy(int),
                usable["task"].map({t: i for i, t in enumerate(tasks)}).to_numpy(int),
            ),
            shape,
        )
        if len(usable)
        else np.zeros(0, dtype=int)
    )
    onehot = np.zeros((len(usable), int(np.prod(shape))))
    onehot[np.arange(len(usable)), unit] = 1.0
    out = {}
    for outcome in OUTCOMES:
        runs = per_run[outcome]
        finite = np.isfinite(runs)
        cells = _nan_ratio(np.where(finite, runs, 0.0) @ onehot, finite @ onehot)
        cells = cells.reshape(len(cells), *shape)
        has = np.isfinite(cells)
        task_weights = weights[:, None, None, :]
        per_seed = _nan_ratio(
            (np.where(has, cells, 0.0) * task_weights).sum(-1), (has * task_weights).sum(-1)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all seeds NaN: NaN is right
            values = np.nanmean(per_seed, axis=2)
        out[outcome] = np.broadcast_to(values, (len(weights), len(methods))).copy()
    return out


def _score(id_gain: np.ndarray, dg_gain: np.ndarray, cf_drop: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN runs: NaN is right
        return np.nanmean(np.stack([id_gain, dg_gain, -cf_drop]), axis=0)


def run_replicates(
    study: Study, usable: pd.DataFrame, n_boot: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], str, str]:
    """Per usable run (rows of `usable`, as `run_outcomes` gives them): each outcome per
    replicate, (n_boot + 1, runs) resampling images, else (1, runs) stored values; the level
    and a note on it."""
    stored = {o: usable[o].to_numpy(float)[None, :] for o in OUTCOMES}
    if usable.empty:
        return stored, TASKS_ONLY, "no finished run has a zero-shot baseline"
    predictions = load_predictions(study)
    if predictions is None:
        return (
            stored,
            TASKS_ONLY,
            "the study's databases hold no per-image predictions (written before they were "
            "stored), so intervals resample tasks only",
        )
    plan = _ImagePlan(study, usable, predictions)
    if plan.problem:
        return stored, TASKS_ONLY, f"{plan.problem}, so intervals resample tasks only"
    per_run = plan.replicate(n_boot, rng)
    point = {o: v[0] for o, v in per_run.items()}
    bad = np.zeros(len(usable), dtype=bool)
    for outcome in OUTCOMES:
        a, b = point[outcome], stored[outcome][0]
        bad |= ~(np.isclose(a, b, rtol=0, atol=AGREEMENT) | (np.isnan(a) & np.isnan(b)))
    if bad.any():
        return (
            stored,
            TASKS_ONLY,
            f"per-image predictions of {int(bad.sum())} of {len(usable)} run(s) disagree with "
            "their stored accuracies, so intervals resample tasks only",
        )
    for outcome in OUTCOMES:
        per_run[outcome][0] = stored[outcome][0]  # the point estimate exactly as summary.py's
    return (
        per_run,
        TASKS_AND_IMAGES,
        "intervals resample tasks and, within them, test images (paired across runs)",
    )


class _ImagePlan:
    """Which stored accuracy each prediction row contributes to, and with what weight."""

    def __init__(self, study: Study, usable: pd.DataFrame, predictions: pd.DataFrame):
        self.usable = usable
        self.problem = ""
        position = {r: i for i, r in enumerate(usable["run_id"])}
        keys = _needed_keys(study, usable)
        rows = predictions.copy()
        rows["key"] = list(zip(rows["run_id"], rows["protocol"], rows["eval_task"], strict=True))
        rows = rows[rows["key"].isin(keys)].copy()
        is_cf = rows["protocol"].isin(["cf_before", "cf_after"])
        rows["family"] = np.where(is_cf, "forgetting", "own")
        missing = keys - set(rows["key"])
        if missing:
            runs = len({k[0] for k in missing})
            self.problem = f"per-image predictions are missing for {runs} of {len(usable)} run(s)"
            return
        if (rows.groupby(CELL)["n"].nunique() > 1).any():
            self.problem = "runs were scored on test cells of different sizes"
            return
        images = rows.groupby("key")["n"].sum()
        forgetting = rows[rows["protocol"] == "cf_before"].groupby("run_id")["eval_task"].nunique()
        rows["run"] = rows["run_id"].map(position)
        rows["images"] = rows["key"].map(images).astype(float)
        n_forgetting = rows["run_id"].map(forgetting).fillna(1.0).astype(float)
        sign = np.where(rows["protocol"] == "cf_after", -1.0, 1.0)
        rows["coef"] = sign / (rows["images"] * np.where(is_cf, n_forgetting, 1.0))
        rows["target"] = np.where(is_cf, "cf", rows["protocol"])
        self.rows = rows
        self.has = {
            target: np.isin(np.arange(len(usable)), rows.loc[rows["target"] == target, "run"])
            for target in ("id", "dg", "cf")
        }

    def replicate(self, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        sums = {t: np.zeros((n_boot + 1, len(self.usable))) for t in ("id", "dg", "cf")}
        for _, cell in self.rows.groupby(CELL, sort=True):
            n = int(cell["n"].iloc[0])
            blobs = list(dict.fromkeys(cell["correct"]))
            column = cell["correct"].map({b: i for i, b in enumerate(blobs)}).to_numpy()
            flags = np.stack([unpack_correct(b, n) for b in blobs], axis=1)
            counts = np.empty((n_boot + 1, len(blobs)))
            counts[0] = flags.sum(axis=0)
            counts[1:] = resampled_counts(flags, n_boot, rng)
            for (target, _), part in cell.groupby(["target", "protocol"]):
                runs = part["run"].to_numpy()  # unique within one (cell, protocol)
                picked = column[cell.index.get_indexer(part.index)]
                sums[target][:, runs] += counts[:, picked] * part["coef"].to_numpy()
        for target, values in sums.items():
            values[:, ~self.has[target]] = np.nan
        baseline = self.usable["baseline_run_id"].map(
            {r: i for i, r in enumerate(self.usable["run_id"])}
        )
        base = baseline.to_numpy(int)
        id_gain = sums["id"] - sums["id"][:, base]
        dg_gain = sums["dg"] - sums["dg"][:, base]
        cf_drop = sums["cf"]
        is_baseline = (self.usable["run_id"] == self.usable["baseline_run_id"]).to_numpy()
        cf_drop[:, is_baseline & ~self.has["cf"]] = 0.0  # as run_outcomes: forgets nothing
        return {
            "id_gain": id_gain,
            "dg_gain": dg_gain,
            "cf_drop": cf_drop,
            "score": _score(id_gain, dg_gain, cf_drop),
        }


def _needed_keys(study: Study, usable: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(run_id, protocol, eval_task) of every stored overall accuracy the outcomes use."""
    metrics = study.metrics
    rows = metrics[
        metrics["run_id"].isin(set(usable["run_id"]) | set(usable["baseline_run_id"]))
        & (metrics["domain"] == OVERALL)
        & (metrics["name"] == ACCURACY)
        & metrics["value"].notna()
    ]
    run_task = dict(zip(usable["run_id"], usable["task"], strict=True))
    own = rows[rows["protocol"].isin(["id", "dg"])]
    own = own[own["eval_task"] == own["run_id"].map(run_task)]
    keys = set(zip(own["run_id"], own["protocol"], own["eval_task"], strict=True))
    cf = rows[rows["protocol"].isin(["cf_before", "cf_after"])]
    both = cf.groupby(["run_id", "eval_task"])["protocol"].nunique()
    for run_id, eval_task in both[both == 2].index:
        keys |= {(run_id, "cf_before", eval_task), (run_id, "cf_after", eval_task)}
    return keys


def resampled_counts(flags: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Correct images per bootstrap draw of a cell's images: (n_boot, columns) for flags of
    shape (images, columns), every column resampled with the same draws."""
    n = flags.shape[0]
    dtype = np.float32 if n < FLOAT32_EXACT else np.float64
    flags = flags.astype(dtype)
    out = np.empty((n_boot, flags.shape[1]))
    block = max(1, BLOCK_DRAWS // max(n, 1))
    ones = np.ones(block * n, dtype=dtype)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        # int32 indices spare scipy a check and a copy (BLOCK_DRAWS < 2**31).
        draws = rng.integers(0, n, size=size * n, dtype=np.int32)
        indptr = np.arange(0, size * n + 1, n, dtype=np.int32)
        # A CSR matrix with one entry per draw: densifying sums repeats into draw counts.
        weights = sparse.csr_matrix(
            (ones[: size * n], draws, indptr), shape=(size, n), copy=False
        ).toarray()
        out[start : start + size] = weights @ flags
    return out
