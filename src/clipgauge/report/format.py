"""How the report writes numbers: signed, in pp where they are accuracy differences."""

from __future__ import annotations

import math


def fmt(value, spec: str = "+.2f") -> str:
    """`value` formatted by `spec`, or "n/a" for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def pp(value) -> str:
    """A fraction of accuracy as signed accuracy points."""
    return fmt(100 * value if value is not None else None)


def p_value(value) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def excludes_zero(lo, hi) -> bool:
    """Whether the interval [lo, hi] is known and lies wholly on one side of 0."""
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return False
    return lo > 0 or hi < 0


def interval(value, lo, hi, spec: str = "+.2f", mark: bool = False) -> str:
    """`value [lo, hi]`; with `mark`, in bold when the interval excludes 0."""
    text = f"{fmt(value, spec)} [{fmt(lo, spec)}, {fmt(hi, spec)}]"
    return f"**{text}**" if mark and excludes_zero(lo, hi) else text
