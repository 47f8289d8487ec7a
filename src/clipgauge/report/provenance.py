"""Where the study's numbers come from: folder, databases, spec, model, runs, failures.

Paths are never absolute paths of the machine that ran the study: the folder by its name, the
spec by name (shipped with clipgauge) or relative to the study folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from clipgauge import __version__
from clipgauge.analysis.load import Study
from clipgauge.report.document import Bullets, Document, Paragraph, long_table


def spec_where(study: Study) -> str:
    """Where the spec came from: shipped with clipgauge, or relative to the study folder."""
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


def run_counts(runs: pd.DataFrame) -> str:
    status = runs["status"].value_counts()
    finished, failed = int(status.get("finished", 0)), int(status.get("failed", 0))
    unfinished = len(runs) - finished - failed
    return f"{len(runs)} ({finished} finished, {failed} failed, {unfinished} unfinished)"


def provenance_section(doc: Document, study: Study, summary: pd.DataFrame) -> None:
    section = doc.section("Provenance")
    seeds = ", ".join(str(s) for s in study.seeds) or "none"
    section.add(
        Bullets(
            [
                f"study folder: {study.out_dir.name}",
                f"databases: {', '.join(p.name for p in study.databases)}",
                f"spec: {study.spec_name()} ({spec_where(study)})",
                f"model: {study.model_source() or 'not named in the spec'}, "
                f"fingerprint {study.model_fingerprint() or 'not stored'}",
                f"tasks ({len(study.tasks)}): {', '.join(study.tasks)}",
                f"methods: {', '.join(study.methods)}",
                f"seeds: {seeds}",
                f"runs: {run_counts(study.runs)}",
                f"study written by clipgauge {study.info.get('clipgauge_version', '?')} on "
                f"{study.info.get('created', '?')}; report by clipgauge {__version__}",
            ]
        )
    )
    orphans = int(summary["no_baseline_runs"].sum())
    if orphans:
        section.add(
            Paragraph(
                f"{orphans} finished run(s) have no finished zeroshot run of the same task, "
                "train domains and seed to compare with; they are left out of every average."
            )
        )
    failed = study.runs[study.runs["status"] == "failed"]
    if len(failed):
        section.add(Paragraph(f"Failed runs ({len(failed)}, left out of every average):"))
        rows = []
        for _, run in failed.iterrows():
            error = str(run["error"] or "no error stored").strip().splitlines()
            first = error[0] if error else ""
            rows.append([run["run_id"], run["task"], run["method"], str(run["seed"]), first[:200]])
        section.add(*long_table(["run", "task", "method", "seed", "error"], rows, "failed runs"))
