"""Build `report.md`, a self-contained `report.html` and `summary.json` (keys and units:
clipgauge.analysis.study_summary) from a study folder's databases alone.

The report reads answer first: what was studied and what came out with the ranked method table
(answer.py), the detail sections (sections.py), the full definitions, and provenance last. It
is assembled once as a Document and rendered to both formats by render.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipgauge.analysis.advice_check import AdviceCheck, check_advice
from clipgauge.analysis.bootstrap import OutcomeBootstrap, bootstrap_outcomes
from clipgauge.analysis.correlations import (
    correlation_table,
    domain_measure_table,
    task_measure_table,
    which_measure_predicts_best,
)
from clipgauge.analysis.findings import Finding, study_findings
from clipgauge.analysis.load import Study, as_study
from clipgauge.analysis.measure_contrast import MeasureContrast, compare_measures
from clipgauge.analysis.study_summary import SUMMARY_FILE, study_summary, write_summary
from clipgauge.analysis.summary import method_summary, per_task_outcomes, run_outcomes
from clipgauge.analysis.wise import WiseCurves, wise_curves
from clipgauge.cache import atomic_write_bytes
from clipgauge.report import figures, sections
from clipgauge.report.answer import answer_section
from clipgauge.report.definitions import DEFINITIONS
from clipgauge.report.document import Bullets, Document, Figure
from clipgauge.report.provenance import provenance_section
from clipgauge.report.render import to_html, to_markdown
from clipgauge.report.wise_section import wise_section

CAPTIONS = {
    "outcomes": "ID gain, DG gain and CF drop per method (error bars: std over seeds)",
    "tradeoff": "DG gain against CF drop per method (large, named points) and per task "
    "(small points)",
    "heatmap": "Balance score per task and method (pp)",
    "measures": "Zero-shot measures against zero-shot accuracy across tasks (blue, named; "
    "line: least-squares fit) and task-domains (grey)",
}


@dataclass
class _Checks:
    """The bootstrap-based analyses the report and summary.json share."""

    boot: OutcomeBootstrap
    contrasts: list[MeasureContrast]
    findings: list[Finding]
    advice: AdviceCheck
    wise: WiseCurves | None


def _checks(study: Study) -> _Checks:
    boot = bootstrap_outcomes(study)
    contrasts = compare_measures(study, n_boot=boot.n_boot, seed=boot.seed)
    findings = study_findings(study, boot, contrasts, seed=boot.seed)
    wise = wise_curves(study, n_boot=boot.n_boot, seed=boot.seed)
    return _Checks(boot, contrasts, findings, check_advice(study), wise)


def _figures(study: Study, summary, correlations, tasks, domains) -> dict[str, Figure]:
    """Every figure as a document block, its PNG rendered once."""
    per_task = per_task_outcomes(run_outcomes(study))
    scores = per_task["score"].unstack("method") if len(per_task) else pd.DataFrame()
    if len(scores.columns):
        order = [m for m in summary.index if m in scores.columns and m != study.baseline]
        scores = scores[order]
    built = {
        "measures": figures.measure_vs_accuracy(tasks, domains, correlations),
        "outcomes": figures.method_outcomes(summary),
        "tradeoff": figures.dg_vs_cf(summary, per_task),
        "heatmap": figures.task_method_heatmap(scores),
    }
    return {
        key: Figure(figures.FIGURE_NAMES[key], figures.png(fig), CAPTIONS[key])
        for key, fig in built.items()
    }


def report_document(study: Study) -> tuple[Document, _Checks]:
    """The whole report of `study` as a Document, and the checks summary.json shares."""
    summary = method_summary(study)
    correlations = correlation_table(study)
    tasks, domains = task_measure_table(study), domain_measure_table(study)
    verdicts = tuple(
        which_measure_predicts_best(correlations, u) for u in ("tasks", "task-domains")
    )
    checks = _checks(study)
    blocks = _figures(study, summary, correlations, tasks, domains)

    doc = Document(f"clipgauge study report: {study.spec_name()}")
    answer_section(doc, study, summary, checks.findings, verdicts[0])
    sections.findings_section(doc, checks.findings)
    sections.methods_section(doc, summary, checks.boot, blocks)
    wise_section(doc, checks.wise)
    sections.measures_section(doc, correlations, verdicts, blocks["measures"])
    sections.contrast_section(doc, checks.contrasts)
    sections.outcome_correlations_section(doc, correlations)
    sections.advice_section(doc, checks.advice)
    sections.task_measures_section(doc, tasks)
    doc.section("How each number is defined").add(Bullets(DEFINITIONS))
    provenance_section(doc, study, summary)
    return doc, checks


def build_report(out_dir: Study | str | Path) -> Path:
    """Rebuild the report of the study in `out_dir` from its databases; return report.md's path.

    Writes `report.md`, `report.html` (figures embedded, no external resources),
    `summary.json` and `figures/*.png` into the study folder, each atomically.
    """
    study = as_study(out_dir)
    out_dir = study.out_dir
    doc, checks = report_document(study)
    for _, figure in doc.figures():
        atomic_write_bytes(out_dir / "figures" / figure.file_name, figure.png)
    md_path = out_dir / "report.md"
    atomic_write_bytes(md_path, to_markdown(doc).encode("utf-8"))
    atomic_write_bytes(out_dir / "report.html", to_html(doc).encode("utf-8"))
    content = study_summary(study, checks.boot, checks.findings, checks.advice, checks.wise)
    write_summary(out_dir / SUMMARY_FILE, content)
    return md_path
