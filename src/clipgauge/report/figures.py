"""The report's figures as PNG bytes. Uses matplotlib's object API with the Agg canvas only,
so no pyplot state or display backend is touched."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clipgauge.analysis.correlations import DIFFICULTY_MEASURES
from clipgauge.measures import ACCURACY

FIGURE_NAMES = {
    "measures": "measure_vs_accuracy.png",
    "outcomes": "method_outcomes.png",
    "tradeoff": "dg_gain_vs_cf_drop.png",
    "heatmap": "task_method_score.png",
}
DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No Software tag: the bytes then depend only on the data, and carry no web address.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _colors(methods) -> dict:
    palette = [
        "#4477aa",
        "#ee6677",
        "#228833",
        "#ccbb44",
        "#66ccee",
        "#aa3377",
        "#bbbbbb",
        "#000000",
    ]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def measure_vs_accuracy(
    tasks: pd.DataFrame, domains: pd.DataFrame, correlations: pd.DataFrame
) -> bytes:
    """One panel per measure: tasks (large) and task-domains (small) vs zero-shot accuracy,
    with the least-squares line through the tasks."""
    fig = Figure(figsize=(3.2 * len(DIFFICULTY_MEASURES), 3.4), layout="constrained")
    axes = fig.subplots(1, len(DIFFICULTY_MEASURES), squeeze=False)[0]
    for ax, measure in zip(axes, DIFFICULTY_MEASURES, strict=True):
        ax.set_xlabel(measure)
        ax.set_ylabel("zero-shot accuracy")
        if measure not in tasks or ACCURACY not in tasks:
            _empty(ax, "no data")
            continue
        if measure in domains and ACCURACY in domains:
            ax.scatter(domains[measure], domains[ACCURACY], s=12, color="0.7", label="task-domain")
        x, y = tasks[measure].to_numpy(float), tasks[ACCURACY].to_numpy(float)
        ax.scatter(x, y, s=36, color="#4477aa", label="task", zorder=3)
        for name, xi, yi in zip(tasks.index, x, y, strict=True):
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(
                    str(name), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        keep = np.isfinite(x) & np.isfinite(y)
        if keep.sum() >= 2 and np.ptp(x[keep]) > 0:
            slope, intercept = np.polyfit(x[keep], y[keep], 1)
            grid = np.linspace(x[keep].min(), x[keep].max(), 50)
            ax.plot(grid, intercept + slope * grid, color="#ee6677", lw=1.5, label="fit (tasks)")
        row = correlations[
            (correlations["unit"] == "tasks")
            & (correlations["outcome"] == ACCURACY)
            & (correlations["measure"] == measure)
        ]
        if len(row) and not math.isnan(row["pearson_r"].iloc[0]):
            r, rho, n = row["pearson_r"].iloc[0], row["spearman_rho"].iloc[0], row["n"].iloc[0]
            ax.set_title(f"r = {r:+.2f}, rho = {rho:+.2f}, n = {n}", fontsize=9)
        else:
            ax.set_title("too few tasks for r", fontsize=9)
    axes[0].legend(fontsize=7, loc="best")
    return _png(fig)


def method_outcomes(summary: pd.DataFrame) -> bytes:
    """Grouped bars of ID gain, DG gain and CF drop per method (pp), seed std as error bars."""
    rows = summary[~summary["baseline"] & summary["score"].notna()]
    fig = Figure(figsize=(max(5.0, 1.3 * len(rows) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    if rows.empty:
        _empty(ax, "no fine-tuning run with a zeroshot baseline")
        return _png(fig)
    outcomes = [
        ("id_gain", "ID gain", "#4477aa"),
        ("dg_gain", "DG gain", "#228833"),
        ("cf_drop", "CF drop (forgetting)", "#ee6677"),
    ]
    positions = np.arange(len(rows))
    width = 0.27
    for i, (name, label, color) in enumerate(outcomes):
        values = 100 * rows[name].to_numpy(float)
        errors = 100 * np.nan_to_num(rows[f"{name}_std"].to_numpy(float))
        ax.bar(
            positions + (i - 1) * width,
            np.nan_to_num(values),
            width,
            yerr=errors,
            capsize=3,
            color=color,
            label=label,
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(positions, rows.index)
    ax.set_ylabel("accuracy points vs zeroshot")
    ax.set_title("Per method, averaged over tasks; error bars = std over seeds", fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


def dg_vs_cf(summary: pd.DataFrame, per_task: pd.DataFrame) -> bytes:
    """DG gain against CF drop: one large point per method (seed std bars), small per task."""
    rows = summary[~summary["baseline"] & summary["score"].notna()]
    fig = Figure(figsize=(5.6, 4.4), layout="constrained")
    ax = fig.subplots()
    if rows.empty or rows["dg_gain"].isna().all():
        _empty(ax, "no DG gain to plot (no method runs, or no task with a second domain)")
        return _png(fig)
    colors = _colors(rows.index)
    for method, row in rows.iterrows():
        if method in per_task.index.get_level_values("method"):
            tasks = per_task.xs(method, level="method")
            ax.scatter(
                100 * tasks["cf_drop"],
                100 * tasks["dg_gain"],
                s=14,
                alpha=0.35,
                color=colors[method],
            )
        ax.errorbar(
            100 * row["cf_drop"],
            100 * row["dg_gain"],
            xerr=100 * np.nan_to_num(row["cf_drop_std"]),
            yerr=100 * np.nan_to_num(row["dg_gain_std"]),
            fmt="o",
            ms=9,
            capsize=3,
            color=colors[method],
            label=str(method),
        )
        ax.annotate(
            str(method),
            (100 * row["cf_drop"], 100 * row["dg_gain"]),
            fontsize=8,
            xytext=(6, 4),
            textcoords="offset points",
        )
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_xlabel("CF drop (pp, lower = forgets less)")
    ax.set_ylabel("DG gain (pp)")
    ax.set_title("Trade-off: upper left is best; small points = tasks", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def task_method_heatmap(scores: pd.DataFrame) -> bytes:
    """Task x method balance score (pp), annotated, diverging colours centred on 0."""
    fig = Figure(
        figsize=(max(4.5, 1.1 * scores.shape[1] + 2), max(2.5, 0.45 * scores.shape[0] + 1.5)),
        layout="constrained",
    )
    ax = fig.subplots()
    if scores.empty or not np.isfinite(scores.to_numpy(float)).any():
        _empty(ax, "no scores")
        return _png(fig)
    values = 100 * scores.to_numpy(float)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(np.arange(scores.shape[1]), scores.columns, rotation=30, ha="right")
    ax.set_yticks(np.arange(scores.shape[0]), scores.index)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "n/a" if math.isnan(values[i, j]) else f"{values[i, j]:+.1f}"
            strong = not math.isnan(values[i, j]) and abs(values[i, j]) > 0.6 * limit
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if strong else "black",
            )
    fig.colorbar(image, ax=ax, label="score (pp)")
    ax.set_title("Score = mean(ID gain, DG gain, -CF drop) per task", fontsize=9)
    return _png(fig)
