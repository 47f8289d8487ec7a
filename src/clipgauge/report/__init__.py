"""The study report: Markdown and self-contained HTML with figures, rebuilt from the databases.

`build_report` is imported on first use, so the CLI can register `report` without loading
pandas and matplotlib, which are slow to import.
"""

from __future__ import annotations

__all__ = ["build_report"]


def __getattr__(name: str):
    if name == "build_report":
        from clipgauge.report.build import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
