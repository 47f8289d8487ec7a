"""Build `report.md`, a self-contained `report.html` and `summary.json` (keys and units:
clipgauge.analysis.study_summary) from a study folder's databases alone."""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clipgauge import __version__
from clipgauge.analysis.advice_check import AdviceCheck, check_advice
from clipgauge.analysis.bootstrap import OutcomeBootstrap, bootstrap_outcomes
from clipgauge.analysis.correlations import (
    ACCURACY,
    DIFFICULTY_MEASURES,
    correlation_table,
    domain_measure_table,
    task_measure_table,
    which_measure_predicts_best,
)
from clipgauge.analysis.findings import ACLIP, RULE, Finding, study_findings
from clipgauge.analysis.load import Study, as_study
from clipgauge.analysis.measure_contrast import OUTCOME_LABELS as CONTRAST_LABELS
from clipgauge.analysis.measure_contrast import MeasureContrast, compare_measures
from clipgauge.analysis.study_summary import SUMMARY_FILE, study_summary, write_summary
from clipgauge.analysis.summary import (
    OUTCOME_LABELS,
    OUTCOMES,
    format_method_table,
    method_summary,
    per_task_outcomes,
    run_outcomes,
    verdict_sentence,
)
from clipgauge.cache import atomic_write_bytes
from clipgauge.report import figures

DEFINITIONS = [
    "Accuracies are zero-shot (class-prompt) accuracies on test splits; gains and drops are in "
    "accuracy points (pp).",
    "Baseline: the `zeroshot` run (no training) of the same task, train domains and seed.",
    "ID gain: accuracy on the test split of the train domains, minus the baseline's.",
    "DG gain: accuracy on the test split of the task's other domains, minus the baseline's "
    "(n/a for a task with one domain).",
    "CF drop: mean over the forgetting suite of zero-shot accuracy before minus after "
    "fine-tuning; positive means the model forgot.",
    "Score: mean of ID gain, DG gain and -CF drop over those available, per run. Per method, "
    "each value is averaged over train-domain choices, then over tasks, once per seed; the "
    "table shows the mean over seeds, ± the standard deviation over seeds.",
    "Only finished runs with a finished baseline enter the averages; failed runs are listed.",
    "Correlations: across tasks (each task's zero-shot `overall` measures) and task-domains "
    "(per-domain measures), averaged over seeds. Pearson and Spearman p-values are scipy's; "
    "intervals are 95% percentile bootstrap intervals from 2000 resamples of the pairs "
    "(seed 0). With fewer than 10 units, call any correlation weak evidence.",
    "Bootstrap intervals of method means (and of their differences): 2000 replicates (seed 0), "
    "each drawing tasks with replacement (a task keeps its train-domain settings, methods and "
    "seeds) and, independently, the test images of every task and domain with replacement, "
    "the same draw for every run scored on those images, so gains and differences between "
    "methods pair image by image; seeds are averaged as in the point estimate, not "
    "resampled. Each replicate recomputes the table's arithmetic; the interval is the 2.5th "
    "to 97.5th percentile. Studies stored without per-image predictions resample tasks only.",
    "Findings: each statistic is oriented so that > 0 supports the finding; " + RULE + ".",
    "Advice check: each task's advice is made from the other tasks only (leave one out); "
    "regret = the task's best actual score (zero-shot counting as 0) minus the recommended "
    "method's actual score, in pp.",
    "summary.json beside this report holds the headline numbers in pp (its keys are documented "
    "in clipgauge.analysis.study_summary).",
]


def _fmt(value, spec: str = "+.2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def _pp(value) -> str:
    return _fmt(100 * value if value is not None else None)


def _p(value) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _interval(lo, hi) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


@dataclass
class _Document:
    """The report written once, rendered as Markdown and as HTML in step."""

    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, strong: bool = False) -> None:
        self.md.append(f"**{text}**\n" if strong else f"{text}\n")
        body = f"<strong>{html.escape(text)}</strong>" if strong else html.escape(text)
        self.html.append(f"<p>{body}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {item}" for item in items) + "\n")
        self.html.append(
            "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"
        )

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        def md_cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |"]
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
        self.md.append("\n".join(lines) + "\n")
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def preformatted(self, text: str) -> None:
        self.md.append(f"```\n{text}\n```\n")
        self.html.append(f"<pre>{html.escape(text)}</pre>")

    def figure(self, file_name: str, png: bytes, caption: str) -> None:
        self.md.append(f"![{caption}](figures/{file_name})\n\n*{caption}*\n")
        data = base64.b64encode(png).decode("ascii")
        self.html.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )


STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _render_html(doc: _Document, title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(doc.html)
        + "\n</body></html>\n"
    )


def _spec_where(study: Study) -> str:
    """Where the spec came from, never as an absolute path of the machine that ran it: a spec
    shipped with clipgauge by name, another relative to the study folder where it can be."""
    path = study.info.get("spec_path")
    if not path:
        return "path not stored"
    spec = Path(path)
    if spec.parent.name == "specs" and spec.parent.parent.name == "study":
        return "shipped with clipgauge"
    try:
        return os.path.relpath(spec, study.out_dir.resolve())
    except ValueError:  # another drive (Windows)
        return spec.name


def _provenance(doc: _Document, study: Study, summary: pd.DataFrame) -> None:
    runs = study.runs
    status = runs["status"].value_counts()
    seeds = ", ".join(str(s) for s in study.seeds) or "none"
    doc.bullets(
        [
            f"study folder: {study.out_dir.name}",
            f"databases: {', '.join(p.name for p in study.databases)}",
            f"spec: {study.spec_name()} ({_spec_where(study)})",
            f"model: {study.model_source() or 'not named in the spec'}, "
            f"fingerprint {study.model_fingerprint() or 'not stored'}",
            f"tasks ({len(study.tasks)}): {', '.join(study.tasks)}",
            f"methods: {', '.join(study.methods)}",
            f"seeds: {seeds}",
            f"runs: {len(runs)} ({int(status.get('finished', 0))} finished, "
            f"{int(status.get('failed', 0))} failed, "
            f"{len(runs) - int(status.get('finished', 0)) - int(status.get('failed', 0))} "
            "unfinished)",
            f"study written by clipgauge {study.info.get('clipgauge_version', '?')} on "
            f"{study.info.get('created', '?')}; report by clipgauge {__version__}",
        ]
    )
    orphans = int(summary["no_baseline_runs"].sum())
    if orphans:
        doc.paragraph(
            f"{orphans} finished run(s) have no finished zeroshot run of the same task, train "
            "domains and seed to compare with; they are left out of every average."
        )
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        doc.paragraph("Failed runs (left out of every average):")
        rows = []
        for _, run in failed.iterrows():
            error = str(run["error"] or "no error stored").strip().splitlines()
            first = error[0] if error else ""
            rows.append([run["run_id"], run["task"], run["method"], str(run["seed"]), first[:200]])
        doc.table(["run", "task", "method", "seed", "error"], rows)


def _method_rows(summary: pd.DataFrame) -> list[list[str]]:
    rows = []
    for method, row in summary.iterrows():
        spread = "" if math.isnan(row["score_std"]) else f" ± {_fmt(100 * row['score_std'], '.2f')}"
        rows.append(
            [
                str(method),
                _pp(row["id_gain"]),
                _pp(row["dg_gain"]),
                _pp(row["cf_drop"]),
                _pp(row["score"]) + spread,
                "-" if math.isnan(row["rank"]) else str(int(row["rank"])),
                str(int(row["n_tasks"])),
                str(int(row["n_seeds"])),
                str(int(row["n_runs"])),
                str(int(row["failed_runs"])),
            ]
        )
    return rows


def _correlation_rows(table: pd.DataFrame, first: str) -> list[list[str]]:
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                str(row[first]),
                str(int(row["n"])),
                f"{_fmt(row['pearson_r'])} {_interval(row['pearson_lo'], row['pearson_hi'])}",
                _p(row["pearson_p"]),
                f"{_fmt(row['spearman_rho'])} {_interval(row['spearman_lo'], row['spearman_hi'])}",
                _p(row["spearman_p"]),
                str(row["note"]),
            ]
        )
    return rows


CORRELATION_HEADERS = ["n", "Pearson r [95% CI]", "p", "Spearman rho [95% CI]", "p", "note"]


@dataclass
class _Checks:
    """The bootstrap-based analyses the report and summary.json share."""

    boot: OutcomeBootstrap
    contrasts: list[MeasureContrast]
    findings: list[Finding]
    advice: AdviceCheck


def _checks(study: Study) -> _Checks:
    boot = bootstrap_outcomes(study)
    contrasts = compare_measures(study, n_boot=boot.n_boot, seed=boot.seed)
    findings = study_findings(study, boot, contrasts, seed=boot.seed)
    return _Checks(boot, contrasts, findings, check_advice(study))


def build_report(out_dir: Study | str | Path) -> Path:
    """Rebuild the report of the study in `out_dir` from its databases; return report.md's path.

    Writes `report.md`, `report.html` (figures embedded, no external resources),
    `summary.json` and `figures/*.png` into the study folder, each atomically.
    """
    study = as_study(out_dir)
    out_dir = study.out_dir
    summary = method_summary(study)
    outcomes = run_outcomes(study)
    per_task = per_task_outcomes(outcomes)
    correlations = correlation_table(study)
    tasks = task_measure_table(study)
    domains = domain_measure_table(study)
    verdict_tasks = which_measure_predicts_best(correlations, "tasks")
    verdict_domains = which_measure_predicts_best(correlations, "task-domains")
    checks = _checks(study)

    scores = per_task["score"].unstack("method") if len(per_task) else pd.DataFrame()
    if len(scores.columns):
        order = [m for m in summary.index if m in scores.columns and m != study.baseline]
        scores = scores[order]
    pngs = {
        "measures": figures.measure_vs_accuracy(tasks, domains, correlations),
        "outcomes": figures.method_outcomes(summary),
        "tradeoff": figures.dg_vs_cf(summary, per_task),
        "heatmap": figures.task_method_heatmap(scores),
    }
    for key, png in pngs.items():
        atomic_write_bytes(out_dir / "figures" / figures.FIGURE_NAMES[key], png)

    title = f"clipgauge study report: {study.spec_name()}"
    doc = _Document()
    doc.heading(1, title)
    _findings_section(doc, checks.findings)
    doc.heading(2, "Provenance")
    _provenance(doc, study, summary)
    _methods_section(doc, summary, pngs)
    _intervals_section(doc, summary, checks.boot)
    _measures_section(doc, correlations, (verdict_tasks, verdict_domains), pngs)
    _contrast_section(doc, checks.contrasts)
    _outcome_correlations_section(doc, correlations)
    _advice_section(doc, checks.advice)
    doc.heading(2, "Zero-shot measures per task")
    columns = [ACCURACY, *DIFFICULTY_MEASURES]
    task_rows = [
        [str(task), *[_fmt(row.get(c, math.nan), ".4f") for c in columns]]
        for task, row in tasks.iterrows()
    ]
    doc.table(["task", *columns], task_rows)
    doc.heading(2, "Text table")
    doc.preformatted(format_method_table(summary))
    doc.heading(2, "How each number is defined")
    doc.bullets(DEFINITIONS)

    md_path = out_dir / "report.md"
    atomic_write_bytes(md_path, "\n".join(doc.md).encode("utf-8"))
    atomic_write_bytes(out_dir / "report.html", _render_html(doc, title).encode("utf-8"))
    content = study_summary(study, checks.boot, checks.findings, checks.advice)
    write_summary(out_dir / SUMMARY_FILE, content)
    return md_path


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


def _methods_section(doc: _Document, summary: pd.DataFrame, pngs: dict[str, bytes]) -> None:
    doc.heading(2, "Methods, ranked by balance score")
    n_tasks = int(summary["n_tasks"].max()) if len(summary) else 0
    doc.paragraph(verdict_sentence(summary, n_tasks) if len(summary) else "No runs.", strong=True)
    doc.table(METHOD_HEADERS, _method_rows(summary))
    doc.paragraph(
        "Values in accuracy points (pp) against zeroshot; CF drop > 0 means forgetting; "
        "± is the standard deviation over seeds."
    )
    doc.figure(
        figures.FIGURE_NAMES["outcomes"],
        pngs["outcomes"],
        "ID gain, DG gain and CF drop per method (error bars: std over seeds)",
    )
    doc.figure(
        figures.FIGURE_NAMES["tradeoff"],
        pngs["tradeoff"],
        "DG gain against CF drop per method (large points) and per task (small points)",
    )
    doc.figure(
        figures.FIGURE_NAMES["heatmap"], pngs["heatmap"], "Balance score per task and method (pp)"
    )


def _measures_section(doc: _Document, correlations, verdicts, pngs: dict[str, bytes]) -> None:
    doc.heading(2, "Does zero-shot misalignment tell how hard a task is?")
    verdict_tasks, verdict_domains = verdicts
    doc.paragraph(verdict_tasks.sentence, strong=True)
    doc.paragraph(verdict_domains.sentence)
    accuracy_rows = correlations[correlations["outcome"] == ACCURACY]
    for unit in ("tasks", "task-domains"):
        doc.heading(3, f"Measure vs zero-shot accuracy, across {unit}")
        doc.table(
            ["measure", *CORRELATION_HEADERS],
            _correlation_rows(accuracy_rows[accuracy_rows["unit"] == unit], "measure"),
        )
    doc.figure(
        figures.FIGURE_NAMES["measures"],
        pngs["measures"],
        "Zero-shot measures against zero-shot accuracy; line = least-squares fit across tasks",
    )


def _outcome_correlations_section(doc: _Document, correlations: pd.DataFrame) -> None:
    doc.heading(2, "Method outcomes against zero-shot measures, across tasks")
    method_rows = correlations[correlations["outcome"] != ACCURACY].copy()
    if method_rows.empty:
        doc.paragraph("No fine-tuning runs with a zeroshot baseline: nothing to correlate.")
        return
    method_rows["what"] = [
        f"{m}: {OUTCOME_LABELS[o]} ~ {s}"
        for m, o, s in zip(
            method_rows["method"], method_rows["outcome"], method_rows["measure"], strict=True
        )
    ]
    doc.table(
        ["method: outcome ~ measure", *CORRELATION_HEADERS],
        _correlation_rows(method_rows, "what"),
    )


def _pp_interval(value, lo, hi) -> str:
    return f"{_pp(value)} [{_pp(lo)}, {_pp(hi)}]"


def _finding_value(finding: Finding) -> str:
    spec = "+.2f" if finding.unit == "pp" else "+.3f"
    return f"{_fmt(finding.value, spec)} [{_fmt(finding.lo, spec)}, {_fmt(finding.hi, spec)}]"


def _findings_section(doc: _Document, findings: list[Finding]) -> None:
    doc.heading(2, "Findings")
    doc.paragraph(
        "Each finding of the study clipgauge implements, checked on this study: one statistic, "
        "oriented so that > 0 supports the finding, with its 95% bootstrap interval. Rule: "
        + RULE
        + "."
    )
    rows = [
        [
            f.finding,
            f.verdict,
            _finding_value(f),
            f.statistic,
            f"{f.reason}" + (f"; {f.support}" if f.support else ""),
        ]
        for f in findings
    ]
    doc.table(["finding", "verdict", "value [95% CI]", "statistic", "why"], rows)


INTERVAL_HEADERS = ["method", *[f"{OUTCOME_LABELS[o]} [95% CI]" for o in OUTCOMES]]


def _interval_rows(table: pd.DataFrame, order) -> list[list[str]]:
    rows = []
    for method in [m for m in order if m in table.index]:
        row = table.loc[method]
        cells = [_pp_interval(row[o], row[f"{o}_lo"], row[f"{o}_hi"]) for o in OUTCOMES]
        rows.append([str(method), *cells])
    return rows


def _intervals_section(doc: _Document, summary: pd.DataFrame, boot: OutcomeBootstrap) -> None:
    doc.heading(3, "Method means with 95% bootstrap intervals")
    doc.paragraph(
        f"Paired bootstrap, {boot.n_boot} replicates over {len(boot.tasks)} task(s): "
        f"{boot.note}. Seeds are averaged as in the table above, not resampled. Values in pp."
    )
    doc.table(INTERVAL_HEADERS, _interval_rows(boot.table(), summary.index))
    doc.heading(3, "Differences against A-CLIP")
    differences = boot.differences(ACLIP)
    if differences.empty:
        doc.paragraph("The study has no usable A-CLIP (aclip) runs to compare with.")
        return
    doc.paragraph(
        "Each method minus A-CLIP, paired replicate by replicate (same tasks, same images); "
        "an interval that excludes 0 separates the two. Values in pp."
    )
    doc.table(INTERVAL_HEADERS, _interval_rows(differences, summary.index))


def _contrast_section(doc: _Document, contrasts: list[MeasureContrast]) -> None:
    doc.heading(3, "ss against ACS")
    doc.paragraph(
        "Oriented Spearman correlations across tasks (+ = as expected: a higher ss means a "
        "harder task, a higher ACS an easier one: lower zero-shot accuracy and more to gain "
        "from fine-tuning for a hard task), and their difference ss - ACS with a paired "
        "bootstrap interval over tasks; > 0: ss tracks difficulty better."
    )
    rows = [
        [
            CONTRAST_LABELS[c.outcome],
            str(c.n),
            _fmt(c.rho_ss),
            _fmt(c.rho_acs),
            f"{_fmt(c.value)} {_interval(c.lo, c.hi)}",
            c.note,
        ]
        for c in contrasts
    ]
    doc.table(
        ["outcome", "tasks", "rho(ss)", "rho(ACS)", "oriented ss - ACS [95% CI]", "note"], rows
    )


def _advice_section(doc: _Document, check: AdviceCheck) -> None:
    doc.heading(2, "Checking the advice: leave one task out")
    if check.per_task.empty:
        doc.paragraph("; ".join(check.notes) or "No task to check the advice on.")
        return
    doc.paragraph(
        "For each task, `clipgauge advise` was run on the other tasks only, with this task's "
        "zero-shot measures. Regret = the best actual score on the task (zero-shot = 0) minus "
        "the recommended method's actual score, in pp; 0 = the advice picked the best."
    )
    rows = [
        [
            str(task),
            str(row["recommended"]),
            str(row["best"]),
            _pp(row["regret"]),
            str(row["overall_best"]),
            _pp(row["overall_best_regret"]),
            _pp(row["zeroshot_regret"]),
        ]
        for task, row in check.per_task.iterrows()
    ]
    headers = ["task", "recommended", "best", "regret", "overall best", "its regret"]
    doc.table([*headers, "zero-shot regret"], rows)
    doc.paragraph(
        f"Mean regret: advice {_pp(check.mean_regret)} pp; always the method best on the "
        f"other tasks {_pp(check.baselines['overall_best'])} pp; always zero-shot "
        f"{_pp(check.baselines['zeroshot'])} pp.",
        strong=True,
    )
    for note in check.notes:
        doc.paragraph(f"Note: {note}")
