"""The report's detail sections, after the answer: findings, methods with intervals, measures,
the advice check and the per-task measures. Each adds its sections to a Document."""

from __future__ import annotations

import pandas as pd

from clipgauge.analysis.advice_check import AdviceCheck
from clipgauge.analysis.bootstrap import OutcomeBootstrap
from clipgauge.analysis.correlations import ACCURACY, DIFFICULTY_MEASURES
from clipgauge.analysis.findings import ACLIP, RULE, Finding
from clipgauge.analysis.measure_contrast import OUTCOME_LABELS as CONTRAST_LABELS
from clipgauge.analysis.measure_contrast import MeasureContrast
from clipgauge.analysis.summary import OUTCOME_LABELS, OUTCOMES
from clipgauge.report.correlation_tables import correlation_blocks, relations_sentence
from clipgauge.report.document import Document, Figure, Paragraph, Table, long_table
from clipgauge.report.format import fmt, interval, pp

INTERVAL_HEADERS = ["method", *[f"{OUTCOME_LABELS[o]} [95% CI]" for o in OUTCOMES]]


def findings_section(doc: Document, findings: list[Finding]) -> None:
    section = doc.section("Findings")
    section.add(
        Paragraph(
            "Each finding of the study clipgauge implements, checked on this study: one "
            "statistic, oriented so that > 0 supports the finding, with its 95% bootstrap "
            f"interval. Rule: {RULE}."
        )
    )
    rows = []
    for f in findings:
        spec = "+.2f" if f.unit == "pp" else "+.3f"
        why = f"{f.reason}" + (f"; {f.support}" if f.support else "")
        rows.append([f.finding, f.verdict, interval(f.value, f.lo, f.hi, spec), f.statistic, why])
    section.add(Table(["finding", "verdict", "value [95% CI]", "statistic", "why"], rows))


def _interval_rows(table: pd.DataFrame, order, mark: bool = False) -> list[list[str]]:
    rows = []
    for method in [m for m in order if m in table.index]:
        row = table.loc[method]
        cells = [
            interval(100 * row[o], 100 * row[f"{o}_lo"], 100 * row[f"{o}_hi"], mark=mark)
            for o in OUTCOMES
        ]
        rows.append([str(method), *cells])
    return rows


def methods_section(
    doc: Document, summary: pd.DataFrame, boot: OutcomeBootstrap, figures: dict[str, Figure]
) -> None:
    """Figures of the method outcomes, their bootstrap intervals and the A-CLIP differences."""
    doc.section("Methods in detail").add(
        figures["outcomes"], figures["tradeoff"], figures["heatmap"]
    )
    doc.section("Method means with 95% bootstrap intervals", level=3).add(
        Paragraph(
            f"Paired bootstrap, {boot.n_boot} replicates over {len(boot.tasks)} task(s): "
            f"{boot.note}. Seeds are averaged as in the table above, not resampled. Values "
            "in pp."
        ),
        Table(INTERVAL_HEADERS, _interval_rows(boot.table(), summary.index)),
    )
    section = doc.section("Differences against A-CLIP", level=3)
    differences = boot.differences(ACLIP)
    if differences.empty:
        section.add(Paragraph("The study has no usable A-CLIP (aclip) runs to compare with."))
        return
    section.add(
        Paragraph(
            "Each method minus A-CLIP, paired replicate by replicate (same tasks, same "
            "images); an interval that excludes 0 (bold) separates the two. Values in pp."
        ),
        Table(INTERVAL_HEADERS, _interval_rows(differences, summary.index, mark=True)),
    )


def measures_section(doc: Document, correlations, verdicts, figure: Figure) -> None:
    verdict_tasks, verdict_domains = verdicts
    doc.section("Does zero-shot misalignment tell how hard a task is?").add(
        Paragraph(verdict_tasks.sentence, strong=True),
        Paragraph(verdict_domains.sentence),
        figure,
    )
    accuracy_rows = correlations[correlations["outcome"] == ACCURACY]
    for unit in ("tasks", "task-domains"):
        rows = accuracy_rows[accuracy_rows["unit"] == unit]
        doc.section(f"Measure vs zero-shot accuracy, across {unit}", level=3).add(
            *correlation_blocks(rows, "measure", "measure", "measures")
        )


def contrast_section(doc: Document, contrasts: list[MeasureContrast]) -> None:
    section = doc.section("ss against ACS", level=3)
    section.add(
        Paragraph(
            "Oriented Spearman correlations across tasks (+ = as expected: a higher ss means a "
            "harder task, a higher ACS an easier one: lower zero-shot accuracy and more to "
            "gain from fine-tuning for a hard task), and their difference ss - ACS with a "
            "paired bootstrap interval over tasks; > 0: ss tracks difficulty better."
        )
    )
    rows = [
        [
            CONTRAST_LABELS[c.outcome],
            str(c.n),
            fmt(c.rho_ss),
            fmt(c.rho_acs),
            interval(c.value, c.lo, c.hi, mark=True),
            c.note,
        ]
        for c in contrasts
    ]
    headers = ["outcome", "tasks", "rho(ss)", "rho(ACS)", "oriented ss - ACS [95% CI]", "note"]
    section.add(Table(headers, rows))


def outcome_correlations_section(doc: Document, correlations: pd.DataFrame) -> None:
    section = doc.section("Method outcomes against zero-shot measures, across tasks")
    method_rows = correlations[correlations["outcome"] != ACCURACY].copy()
    if method_rows.empty:
        section.add(
            Paragraph("No fine-tuning runs with a zeroshot baseline: nothing to correlate.")
        )
        return
    method_rows["what"] = [
        f"{m}: {OUTCOME_LABELS[o]} ~ {s}"
        for m, o, s in zip(
            method_rows["method"], method_rows["outcome"], method_rows["measure"], strict=True
        )
    ]
    section.add(
        relations_sentence(method_rows, "what"),
        *correlation_blocks(method_rows, "what", "method: outcome ~ measure", "relations"),
    )


def advice_section(doc: Document, check: AdviceCheck) -> None:
    section = doc.section("Checking the advice: leave one task out")
    if check.per_task.empty:
        section.add(Paragraph("; ".join(check.notes) or "No task to check the advice on."))
        return
    table = check.per_task
    picked = int((table["recommended"] == table["best"]).sum())
    section.add(
        Paragraph(
            f"Mean regret: advice {pp(check.mean_regret)} pp; always the method best on the "
            f"other tasks {pp(check.baselines['overall_best'])} pp; always zero-shot "
            f"{pp(check.baselines['zeroshot'])} pp. The advice picked the best method on "
            f"{picked} of {len(table)} task(s).",
            strong=True,
        ),
        Paragraph(
            "For each task, `clipgauge advise` was run on the other tasks only, with this "
            "task's zero-shot measures. Regret = the best actual score on the task (zero-shot "
            "= 0) minus the recommended method's actual score, in pp; 0 = the advice picked "
            "the best."
        ),
    )
    rows = [
        [
            str(task),
            str(row["recommended"]),
            str(row["best"]),
            pp(row["regret"]),
            str(row["overall_best"]),
            pp(row["overall_best_regret"]),
            pp(row["zeroshot_regret"]),
        ]
        for task, row in table.iterrows()
    ]
    headers = ["task", "recommended", "best", "regret", "overall best", "its regret"]
    section.add(*long_table([*headers, "zero-shot regret"], rows, "tasks"))
    section.add(*[Paragraph(f"Note: {note}") for note in check.notes])


def task_measures_section(doc: Document, tasks: pd.DataFrame) -> None:
    section = doc.section("Zero-shot measures per task")
    columns = [ACCURACY, *DIFFICULTY_MEASURES]
    if ACCURACY in tasks and tasks[ACCURACY].notna().any():
        order = tasks[ACCURACY].dropna().sort_values()
        hardest = ", ".join(f"{t} ({a:.2f})" for t, a in order.head(3).items())
        easiest = ", ".join(f"{t} ({a:.2f})" for t, a in order.tail(3)[::-1].items())
        section.add(Paragraph(f"Lowest zero-shot accuracy: {hardest}; highest: {easiest}."))
    rows = [
        [str(task), *[fmt(row.get(c, float("nan")), ".4f") for c in columns]]
        for task, row in tasks.iterrows()
    ]
    section.add(*long_table(["task", *[f"`{c}`" for c in columns]], rows, "tasks"))
