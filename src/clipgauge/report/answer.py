"""The top of the report, the answer first: what was studied and what came out, the ranked
method table beside it, then the four terms the table uses."""

from __future__ import annotations

import math

import pandas as pd

from clipgauge.analysis.correlations import Verdict
from clipgauge.analysis.findings import CONTRADICTED, HELD, INCONCLUSIVE, Finding
from clipgauge.analysis.load import Study
from clipgauge.analysis.summary import verdict_sentence
from clipgauge.report.definitions import TERMS
from clipgauge.report.document import Bullets, Document, Paragraph, Table
from clipgauge.report.format import fmt, pp

ANSWER_HEADING = "Summary"
METHOD_HEADERS = [
    "method",
    "ID gain",
    "DG gain",
    "CF drop",
    "score ± std",
    "rank",
    "tasks",
    "seeds",
    "runs",
    "failed",
]


def method_rows(summary: pd.DataFrame) -> list[list[str]]:
    """The headline table's rows, in the table's order (by score, best first)."""
    rows = []
    for method, row in summary.iterrows():
        spread = "" if math.isnan(row["score_std"]) else f" ± {fmt(100 * row['score_std'], '.2f')}"
        rows.append(
            [
                str(method),
                pp(row["id_gain"]),
                pp(row["dg_gain"]),
                pp(row["cf_drop"]),
                pp(row["score"]) + spread,
                "-" if math.isnan(row["rank"]) else str(int(row["rank"])),
                str(int(row["n_tasks"])),
                str(int(row["n_seeds"])),
                str(int(row["n_runs"])),
                str(int(row["failed_runs"])),
            ]
        )
    return rows


def _studied(study: Study, summary: pd.DataFrame) -> str:
    trained = [m for m in study.methods if m != study.baseline]
    model = study.model_source() or "a CLIP model"
    n_tasks = len(study.tasks)
    text = f"The study *{study.spec_name()}* measured {model} zero-shot on {n_tasks} task(s)"
    if trained:
        n_trained = int(summary["n_tasks"].max()) if len(summary) else 0
        on = "each" if n_trained == n_tasks else f"{n_trained} of them"
        text += f" and fine-tuned it with {', '.join(trained)} on {on}"
    return (
        f"{text} ({len(study.seeds)} seed(s), {len(study.runs)} runs), scoring each run "
        "against the same task's zero-shot model."
    )


def _measure_sentence(verdict: Verdict) -> str:
    if verdict.measure is None:
        return "No zero-shot measure could be correlated with accuracy across tasks."
    return (
        f"Across tasks, `{verdict.measure}` tracks zero-shot accuracy best (Spearman rho "
        f"{fmt(verdict.spearman_rho)}, 95% interval {fmt(verdict.spearman_lo)} to "
        f"{fmt(verdict.spearman_hi)}, n = {verdict.n})."
    )


def findings_sentence(findings: list[Finding]) -> str:
    """The findings grouped by verdict, in one sentence."""
    if not findings:
        return ""
    groups = []
    for verdict in (HELD, CONTRADICTED, INCONCLUSIVE):
        names = [f.finding for f in findings if f.verdict == verdict]
        listed = f" ({len(names)}): {'; '.join(names)}" if names else ": none"
        groups.append(f"**{verdict}**{listed}.")
    text = f"Of the {len(findings)} findings checked: " + " ".join(groups)
    if any("best" in f.finding.lower() for f in findings):
        text += (
            " A finding is judged on its own statistic (see *Findings*), which may weigh the "
            "outcomes differently from the score the table ranks by."
        )
    return text


def answer_section(
    doc: Document,
    study: Study,
    summary: pd.DataFrame,
    findings: list[Finding],
    measure_verdict: Verdict,
) -> None:
    """The opening: one paragraph of what was studied and found, the table, the terms."""
    n_tasks = int(summary["n_tasks"].max()) if len(summary) else 0
    ranked = verdict_sentence(summary, n_tasks) if len(summary) else "No runs."
    parts = [_studied(study, summary), ranked, _measure_sentence(measure_verdict)]
    parts.append(findings_sentence(findings))
    section = doc.section(ANSWER_HEADING)
    section.add(
        Paragraph(" ".join(p for p in parts if p)),
        Table(METHOD_HEADERS, method_rows(summary)),
        Paragraph(
            "Ranked by score, best first; values in accuracy points (pp) against zero-shot; "
            "± is the standard deviation over seeds. 95% intervals: *Methods in detail*."
        ),
    )
    doc.section("ID, DG, CF and score", level=3).add(Bullets(TERMS))
