"""Analysis of a study's databases: per-method outcomes, correlations, advice for a new task.

Reads only the study folder's SQLite files (written by `clipgauge study`); never trains.
"""

from clipgauge.analysis.advise import Advice, advise
from clipgauge.analysis.correlations import (
    Verdict,
    correlate,
    correlation_table,
    which_measure_predicts_best,
)
from clipgauge.analysis.load import Study, load_study
from clipgauge.analysis.summary import method_summary, method_table, run_outcomes

__all__ = [
    "Advice",
    "Study",
    "Verdict",
    "advise",
    "correlate",
    "correlation_table",
    "load_study",
    "method_summary",
    "method_table",
    "run_outcomes",
    "which_measure_predicts_best",
]
