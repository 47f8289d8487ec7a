"""Analysis of a study's databases: per-method outcomes with bootstrap intervals, correlations,
the study's findings checked, advice for a new task and a check of that advice.

Reads only the study folder's SQLite files (written by `clipgauge study`); never trains.
"""

from clipgauge.analysis.advice_check import AdviceCheck, check_advice
from clipgauge.analysis.advise import Advice, advise
from clipgauge.analysis.bootstrap import OutcomeBootstrap, bootstrap_outcomes
from clipgauge.analysis.correlations import (
    Verdict,
    correlate,
    correlation_table,
    which_measure_predicts_best,
)
from clipgauge.analysis.findings import Finding, study_findings
from clipgauge.analysis.load import Study, load_predictions, load_study
from clipgauge.analysis.measure_contrast import MeasureContrast, compare_measures
from clipgauge.analysis.study_summary import study_summary
from clipgauge.analysis.summary import method_summary, method_table, run_outcomes

__all__ = [
    "Advice",
    "AdviceCheck",
    "Finding",
    "MeasureContrast",
    "OutcomeBootstrap",
    "Study",
    "Verdict",
    "advise",
    "bootstrap_outcomes",
    "check_advice",
    "compare_measures",
    "correlate",
    "correlation_table",
    "load_predictions",
    "load_study",
    "method_summary",
    "method_table",
    "run_outcomes",
    "study_findings",
    "study_summary",
    "which_measure_predicts_best",
]
