"""Correlation tables as the report shows them: intervals that exclude 0 in bold, a note shared
by every row stated once above the table, other notes as numbered keys, and a sentence naming
the rows that matter for a long table."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from clipgauge.analysis.correlations import FEW_UNITS
from clipgauge.report.document import Block, Paragraph, long_table
from clipgauge.report.format import excludes_zero, fmt, interval, p_value

CORRELATION_HEADERS = ["n", "Pearson r [95% CI]", "p", "Spearman rho [95% CI]", "p"]
NAMED_ROWS = 5  # rows a summary sentence names before "and N more"


_WEAK = re.compile(r"n = \d+: weak evidence")
_DROPPED = re.compile(r"(\d+) of (\d+) bootstrap resamples constant, dropped")


@dataclass
class Notes:
    """Row notes stated once: the weak-evidence rule, a `dropped` count column for resamples
    left out, parts every row shares, and numbered keys for the rest."""

    weak: bool  # some row has n < FEW_UNITS
    dropped: list[str]  # per row: resamples dropped, "" for none; [] when no row drops any
    n_boot: str
    common: list[str]
    keys: list[str]  # per row: "1", "1, 2" or ""
    legend: dict[str, str]  # note text -> its key

    def paragraph(self) -> Paragraph | None:
        """The notes, each stated once; None when there are none."""
        parts = []
        if self.weak:
            parts.append(f"With n < {FEW_UNITS}, a correlation is weak evidence.")
        if self.dropped:
            parts.append(
                f"The dropped column counts bootstrap resamples (of {self.n_boot}) in which "
                "one side was constant, left out of the intervals."
            )
        if self.common:
            parts.append("Every row: " + "; ".join(self.common) + ".")
        if self.legend:
            keyed = "; ".join(f"({key}) {text}" for text, key in self.legend.items())
            parts.append(f"Notes by key: {keyed}.")
        return Paragraph(" ".join(parts)) if parts else None

    def columns(self, row: int) -> list[str]:
        return ([self.dropped[row]] if self.dropped else []) + (
            [self.keys[row]] if self.legend else []
        )

    def headers(self) -> list[str]:
        return (["dropped"] if self.dropped else []) + (["note"] if self.legend else [])


def factor_notes(notes: list[str]) -> Notes:
    """Split each "a; b" note into parts and state each kind of part once."""
    parts = [[p.strip() for p in str(note).split(";") if p.strip()] for note in notes]
    weak = any(_WEAK.fullmatch(p) for row in parts for p in row)
    dropped, n_boot = [], ""
    for row in parts:
        counts = [m for m in map(_DROPPED.fullmatch, row) if m]
        dropped.append(counts[0].group(1) if counts else "")
        n_boot = counts[0].group(2) if counts else n_boot
    parts = [[p for p in row if not (_WEAK.fullmatch(p) or _DROPPED.fullmatch(p))] for row in parts]
    common = [p for p in parts[0] if all(p in row for row in parts)] if parts else []
    legend: dict[str, str] = {}
    keys = []
    for row in parts:
        own = [p for p in row if p not in common]
        keys.append(", ".join(legend.setdefault(p, str(len(legend) + 1)) for p in own))
    return Notes(weak, dropped if any(dropped) else [], n_boot, common, keys, legend)


def _cells(row) -> list[str]:
    return [
        str(int(row["n"])),
        interval(row["pearson_r"], row["pearson_lo"], row["pearson_hi"], mark=True),
        p_value(row["pearson_p"]),
        interval(row["spearman_rho"], row["spearman_lo"], row["spearman_hi"], mark=True),
        p_value(row["spearman_p"]),
    ]


def correlation_blocks(table: pd.DataFrame, first: str, first_header: str, what: str):
    """The notes and the table (folded when long) of `table`'s rows, labelled by column
    `first`; bold marks an interval that excludes 0."""
    notes = factor_notes(list(table["note"]))
    headers = [first_header, *CORRELATION_HEADERS, *notes.headers()]
    rows = [
        [str(row[first]), *_cells(row), *notes.columns(i)]
        for i, (_, row) in enumerate(table.iterrows())
    ]
    paragraph = notes.paragraph()
    return long_table(headers, rows, what, [paragraph] if paragraph else [])


def _named(row, first: str) -> str:
    return f"{row[first]} (rho {fmt(row['spearman_rho'])})"


def relations_sentence(table: pd.DataFrame, first: str) -> Block:
    """Which rows matter: those whose Spearman interval excludes 0, strongest first, or else
    the strongest relations."""
    usable = table[table["spearman_rho"].notna()].copy()
    if usable.empty:
        return Paragraph(f"None of the {len(table)} relations could be computed.")
    usable["strength"] = usable["spearman_rho"].abs()
    usable = usable.sort_values("strength", ascending=False, kind="stable")
    bounds = zip(usable["spearman_lo"], usable["spearman_hi"], strict=True)
    apart = usable[[excludes_zero(lo, hi) for lo, hi in bounds]]
    shown = apart if len(apart) else usable
    names = ", ".join(_named(row, first) for _, row in shown.head(NAMED_ROWS).iterrows())
    more = f", and {len(shown) - NAMED_ROWS} more" if len(shown) > NAMED_ROWS else ""
    if len(apart):
        text = (
            f"{len(apart)} of {len(table)} relations have a Spearman 95% interval that "
            f"excludes 0 (bold in the table), strongest first: {names}{more}."
        )
    else:
        text = (
            f"None of the {len(table)} relations has a Spearman 95% interval that excludes 0; "
            f"the strongest: {names}."
        )
    smallest = int(table["n"].min())
    if smallest < 10:
        text += f" With as few as {smallest} tasks, treat each as weak evidence."
    return Paragraph(text)
