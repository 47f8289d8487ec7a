"""The findings of the study clipgauge implements, checked on this study: each one statistic
with a 95% bootstrap interval and a verdict.

Every statistic is oriented so that a value > 0 supports the finding, and one rule gives every
verdict: "held" when the whole interval lies above 0, "contradicted" when it lies wholly below
0 (the data support the opposite), otherwise "inconclusive". A finding whose methods the study
lacks, or whose statistic cannot be computed, is "inconclusive" with the reason.

Statistics (pp = accuracy points; "the other methods" = the study's other fine-tuning methods,
the zero-shot baseline excluded), in the order of the study's findings:
- ss measures difficulty better than ACS: oriented Spearman correlation with zero-shot accuracy
  across tasks, ss's minus ACS's (measure_contrast.py).
- A-CLIP gives the best balance between DG and CF: balance = (DG gain - CF drop) / 2 of a
  method's means; A-CLIP's balance minus the highest balance of the other methods (the
  minimum over them of the difference, taken in each replicate).
- LoRA forgets least: the smallest CF drop of the other methods minus LoRA's.
- LoRA gains less ID/DG: gain = (ID gain + DG gain) / 2 of a method's means; the other
  methods' mean gain minus LoRA's.
- BitFit gains ID but forgets a lot: min(BitFit's ID gain, BitFit's CF drop minus the other
  methods' mean CF drop).
- BitFit forgets more when ss is high: Spearman rho across tasks between ss and BitFit's CF
  drop (per task, mean over seeds and train domains).
- Full fine-tuning, and CLIP-Adapter, gain DG at a CF cost: min(DG gain, CF drop) of each.
Intervals of statistics built from method means come from the paired tasks-and-images
bootstrap of bootstrap.py: the same replicates for every method, so the comparisons between
methods pair task by task and image by image. Correlations across tasks are bootstrapped over
tasks (measure_contrast.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clipgauge.analysis.bootstrap import BOOTSTRAP_SEED, OutcomeBootstrap, bootstrap_outcomes
from clipgauge.analysis.correlations import MIN_PAIRS, task_measure_table
from clipgauge.analysis.load import Study, as_study
from clipgauge.analysis.measure_contrast import (
    SS,
    MeasureContrast,
    compare_measures,
    spearman_replicates,
    task_draws,
)
from clipgauge.analysis.summary import per_task_outcomes, run_outcomes

HELD, CONTRADICTED, INCONCLUSIVE = "held", "contradicted", "inconclusive"
ACLIP, LORA, BITFIT, FULL, ADAPTER = "aclip", "lora", "bitfit", "full", "clip-adapter"
RULE = (
    "held if the whole 95% interval is above 0, contradicted if it is wholly below 0, "
    "otherwise inconclusive"
)


@dataclass
class Finding:
    """One finding checked: `value`, `lo`, `hi` in `unit` (pp or a correlation); `support`
    says what a value > 0 means, `rule` is RULE with it, `reason` why the verdict."""

    finding: str
    statistic: str
    unit: str
    value: float
    lo: float
    hi: float
    verdict: str
    support: str
    rule: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(lo: float, hi: float) -> tuple[str, str]:
    """The verdict for a statistic oriented so that > 0 supports the finding, and why."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE, "no interval could be computed"
    if lo > 0:
        return HELD, "the interval lies above 0"
    if hi < 0:
        return CONTRADICTED, "the interval lies below 0: the data support the opposite"
    return INCONCLUSIVE, "the interval includes 0"


def _finding(finding: str, statistic: str, unit: str, support: str, boot_values, interval):
    """A Finding from replicates (row 0 the point estimate) and an interval function."""
    values = np.asarray(boot_values, dtype=float)
    value = float(values[0])
    lo, hi = interval(values[1:])
    if not math.isfinite(value):
        lo = hi = math.nan
    word, reason = verdict(lo, hi)
    rule = f"{RULE} ({support})"
    return Finding(finding, statistic, unit, value, lo, hi, word, support, rule, reason)


def _missing(finding: str, statistic: str, unit: str, reason: str) -> Finding:
    nan = math.nan
    return Finding(finding, statistic, unit, nan, nan, nan, INCONCLUSIVE, "", RULE, reason)


def _nanmin(arrays: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates stay NaN
        return np.nanmin(np.stack(arrays), axis=0)


def _nanmean(arrays: list[np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(arrays), axis=0)


class _MethodStats:
    """Replicate arrays (row 0 = point) of method means, in pp."""

    def __init__(self, boot: OutcomeBootstrap):
        self.boot = boot
        self.tuned = [m for m in boot.methods if m != boot.baseline]

    def has(self, method: str) -> bool:
        return method in self.tuned and math.isfinite(self.boot.point(method, "score"))

    def others(self, method: str) -> list[str]:
        return [m for m in self.tuned if m != method and self.has(m)]

    def get(self, method: str, outcome: str) -> np.ndarray:
        return 100 * self.boot.values[outcome][:, self.boot.methods.index(method)]

    def balance(self, method: str) -> np.ndarray:
        return (self.get(method, "dg_gain") - self.get(method, "cf_drop")) / 2

    def gain(self, method: str) -> np.ndarray:
        return _nanmean([self.get(method, "id_gain"), self.get(method, "dg_gain")])


# (finding, statistic, subject, support, computation from _MethodStats and the subject)
METHOD_FINDINGS: list[tuple[str, str, str, str, Callable]] = [
    (
        "A-CLIP gives the best balance between DG and CF",
        "A-CLIP's balance (DG gain - CF drop) / 2 minus the highest balance of the other "
        "fine-tuning methods (pp)",
        ACLIP,
        "> 0: A-CLIP's balance is above every other method's",
        lambda s, m: _nanmin([s.balance(m) - s.balance(o) for o in s.others(m)]),
    ),
    (
        "LoRA forgets least",
        "smallest CF drop of the other fine-tuning methods minus LoRA's CF drop (pp)",
        LORA,
        "> 0: every other method forgets more than LoRA",
        lambda s, m: _nanmin([s.get(o, "cf_drop") - s.get(m, "cf_drop") for o in s.others(m)]),
    ),
    (
        "LoRA gains less ID/DG",
        "mean over the other fine-tuning methods of their gain (ID gain + DG gain) / 2, minus "
        "LoRA's (pp)",
        LORA,
        "> 0: LoRA gains less than the other methods on average",
        lambda s, m: _nanmean([s.gain(o) for o in s.others(m)]) - s.gain(m),
    ),
    (
        "BitFit gains ID but forgets a lot",
        "min(BitFit's ID gain, BitFit's CF drop minus the other fine-tuning methods' mean CF "
        "drop) (pp)",
        BITFIT,
        "> 0: BitFit gains ID and forgets more than the other methods on average",
        lambda s, m: _nanmin(
            [
                s.get(m, "id_gain"),
                s.get(m, "cf_drop") - _nanmean([s.get(o, "cf_drop") for o in s.others(m)]),
            ]
        ),
    ),
    (
        "Full fine-tuning gains DG at a CF cost",
        "min(DG gain, CF drop) of full fine-tuning (pp)",
        FULL,
        "> 0: full fine-tuning both gains DG and forgets",
        lambda s, m: _nanmin([s.get(m, "dg_gain"), s.get(m, "cf_drop")]),
    ),
    (
        "CLIP-Adapter gains DG at a CF cost",
        "min(DG gain, CF drop) of CLIP-Adapter (pp)",
        ADAPTER,
        "> 0: CLIP-Adapter both gains DG and forgets",
        lambda s, m: _nanmin([s.get(m, "dg_gain"), s.get(m, "cf_drop")]),
    ),
]
NEEDS_OTHERS = {ACLIP: True, LORA: True, BITFIT: True, FULL: False, ADAPTER: False}


def _method_finding(stats_: _MethodStats, entry) -> Finding:
    finding, statistic, subject, support, compute = entry
    if not stats_.has(subject):
        return _missing(finding, statistic, "pp", f"the study has no usable {subject} runs")
    if NEEDS_OTHERS[subject] and not stats_.others(subject):
        return _missing(finding, statistic, "pp", "the study has no other fine-tuning method")
    return _finding(
        finding, statistic, "pp", support, compute(stats_, subject), stats_.boot.interval
    )


def _ss_finding(contrast: MeasureContrast) -> Finding:
    finding = "ss measures difficulty better than ACS"
    statistic = (
        "oriented Spearman correlation with zero-shot accuracy across tasks, ss's minus ACS's: "
        "-rho(ss, accuracy) - rho(ACS, accuracy) (a difference of correlations)"
    )
    unit = "difference of correlations"
    if not math.isfinite(contrast.value):
        return _missing(finding, statistic, unit, contrast.note or "no correlation")
    support = "> 0: ss follows zero-shot accuracy more closely, in the expected direction"
    values = np.array([contrast.value])
    interval = (contrast.lo, contrast.hi)
    return _finding(finding, statistic, unit, support, values, lambda _: interval)


def _bitfit_ss_finding(study: Study, boot: OutcomeBootstrap, seed: int) -> Finding:
    finding = "BitFit forgets more when ss is high"
    statistic = "Spearman rho across tasks between ss and BitFit's CF drop (a correlation)"
    unit = "Spearman rho"
    if BITFIT not in boot.methods:
        return _missing(finding, statistic, unit, "the study has no usable bitfit runs")
    per_task = per_task_outcomes(run_outcomes(study))
    measures = task_measure_table(study)
    cf = per_task["cf_drop"].xs(BITFIT, level="method")
    ss = measures[SS] if SS in measures else pd.Series(dtype=float)
    data = pd.DataFrame({"ss": ss, "cf": cf}).dropna()
    if len(data) < MIN_PAIRS or data.nunique().min() < 2:
        return _missing(
            finding, statistic, unit, f"n = {len(data)} task(s) with varying ss and CF drop"
        )
    x, y = data["ss"].to_numpy(), data["cf"].to_numpy()
    replicates = spearman_replicates(x, y, task_draws(len(data), boot.n_boot, seed))
    values = np.concatenate([[stats.spearmanr(x, y).statistic], replicates])
    support = "> 0: BitFit's CF drop rises with ss"
    return _finding(finding, statistic, unit, support, values, boot.interval)


def study_findings(
    study: Study | str | Path,
    boot: OutcomeBootstrap | None = None,
    contrasts: list[MeasureContrast] | None = None,
    *,
    seed: int = BOOTSTRAP_SEED,
) -> list[Finding]:
    """Every finding checked (module docstring); pass `boot` and `contrasts` to reuse them."""
    study = as_study(study)
    boot = boot or bootstrap_outcomes(study, seed=seed)
    contrasts = contrasts or compare_measures(study, n_boot=boot.n_boot, seed=seed)
    method_stats = _MethodStats(boot)
    out = [_ss_finding(contrasts[0])]
    out += [_method_finding(method_stats, entry) for entry in METHOD_FINDINGS[:4]]
    out.append(_bitfit_ss_finding(study, boot, seed))
    out += [_method_finding(method_stats, entry) for entry in METHOD_FINDINGS[4:]]
    return out


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.to_dict() for f in findings])
