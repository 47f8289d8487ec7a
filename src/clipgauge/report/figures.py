"""The report's figures. Uses matplotlib's object API with the Agg canvas only, so no pyplot
state or display backend is touched. Each builder returns a matplotlib Figure; `png` saves it.

Sized to be read where they are shown: no figure is wider than MAX_WIDTH_IN, so in the HTML
column (COLUMN_PX in clipgauge.report.render) it is shown at its own pixel size, and no text
is smaller than MIN_FONT_PT (at DPI, 8 pt is 12 px).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clipgauge.analysis.correlations import DIFFICULTY_MEASURES
from clipgauge.measures import ACCURACY
from clipgauge.report.labels import MARKER_GID, Marks, place_labels, settle

FIGURE_NAMES = {
    "measures": "measure_vs_accuracy.png",
    "outcomes": "method_outcomes.png",
    "tradeoff": "dg_gain_vs_cf_drop.png",
    "heatmap": "task_method_score.png",
}
DPI = 110
MAX_WIDTH_IN = 8.6  # 946 px at DPI: fits the report's 960 px column unscaled
MIN_FONT_PT = 8.0
GRID_COLUMNS = 3  # panels per row of the measure grid


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes at DPI (deterministic: no timestamp or software tag)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No Software tag: the bytes then depend only on the data, and carry no web address.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(min(width_in, MAX_WIDTH_IN), height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _empty(ax, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True
    )
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


def _measure_panel(ax, measure: str, tasks, domains, correlations) -> bool:
    """Tasks (labelled) and task-domains against zero-shot accuracy; False when no data."""
    ax.set_xlabel(measure)
    if measure not in tasks or ACCURACY not in tasks:
        # Not _empty: its tick removal would reach the panels sharing this y axis.
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return False
    if measure in domains and ACCURACY in domains:
        ax.scatter(domains[measure], domains[ACCURACY], s=12, color="0.7", label="task-domain")
    x, y = tasks[measure].to_numpy(float), tasks[ACCURACY].to_numpy(float)
    ax.scatter(x, y, s=36, color="#4477aa", label="task", zorder=3, gid=MARKER_GID)
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
    return True


def measure_vs_accuracy(
    tasks: pd.DataFrame, domains: pd.DataFrame, correlations: pd.DataFrame
) -> Figure:
    """A grid with one panel per measure: tasks (large, named) and task-domains (small) against
    zero-shot accuracy, with the least-squares line through the tasks; the last cell holds the
    legend."""
    n_rows = math.ceil((len(DIFFICULTY_MEASURES) + 1) / GRID_COLUMNS)
    fig = _new_figure(MAX_WIDTH_IN, 2.9 * n_rows)
    axes = fig.subplots(n_rows, GRID_COLUMNS, squeeze=False, sharey=True).ravel()
    drawn = [
        _measure_panel(ax, measure, tasks, domains, correlations)
        for ax, measure in zip(axes, DIFFICULTY_MEASURES, strict=False)
    ]
    for ax in axes[::GRID_COLUMNS]:
        ax.set_ylabel("zero-shot accuracy")
    legend_ax = axes[len(DIFFICULTY_MEASURES)]
    legend_ax.axis("off")
    for ax in axes[len(DIFFICULTY_MEASURES) + 1 :]:
        ax.axis("off")
    if any(drawn):
        handles, names = axes[drawn.index(True)].get_legend_handles_labels()
        legend_ax.legend(handles, names, loc="center", fontsize=9, frameon=False)
    settle(fig)
    for ax, measure, ok in zip(axes, DIFFICULTY_MEASURES, drawn, strict=False):
        if ok:
            soft = domains[[measure, ACCURACY]].to_numpy(float) if measure in domains else None
            place_labels(
                ax,
                tasks[[measure, ACCURACY]].to_numpy(float),
                list(tasks.index),
                radius_pt=3.0,
                soft=Marks(soft, 1.8) if soft is not None else None,
            )
    return fig


def method_outcomes(summary: pd.DataFrame) -> Figure:
    """Grouped bars of ID gain, DG gain and CF drop per method (pp), seed std as error bars."""
    rows = summary[~summary["baseline"] & summary["score"].notna()]
    fig = _new_figure(max(5.0, 1.1 * len(rows) + 2), 3.6)
    ax = fig.subplots()
    if rows.empty:
        _empty(ax, "no fine-tuning run with a zeroshot baseline")
        return fig
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
    ax.legend(fontsize=MIN_FONT_PT)
    return fig


def dg_vs_cf(summary: pd.DataFrame, per_task: pd.DataFrame) -> Figure:
    """DG gain against CF drop: one large, named point per method (seed std bars), small points
    per task."""
    rows = summary[~summary["baseline"] & summary["score"].notna()]
    fig = _new_figure(6.4, 4.6)
    ax = fig.subplots()
    if rows.empty or rows["dg_gain"].isna().all():
        _empty(ax, "no DG gain to plot (no method runs, or no task with a second domain)")
        return fig
    colors = _colors(rows.index)
    small = []
    for method, row in rows.iterrows():
        if method in per_task.index.get_level_values("method"):
            tasks = per_task.xs(method, level="method")
            small.append(100 * tasks[["cf_drop", "dg_gain"]].to_numpy(float))
            ax.scatter(small[-1][:, 0], small[-1][:, 1], s=14, alpha=0.35, color=colors[method])
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
            gid=MARKER_GID,
        )
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.margins(0.12)
    ax.set_xlabel("CF drop (pp, lower = forgets less)")
    ax.set_ylabel("DG gain (pp)")
    ax.set_title("Trade-off: upper left is best; small points = tasks", fontsize=9)
    settle(fig)
    named = place_labels(
        ax,
        100 * rows[["cf_drop", "dg_gain"]].to_numpy(float),
        [str(m) for m in rows.index],
        radius_pt=4.5,
        soft=Marks(np.vstack(small), 1.9) if small else None,
        fontsize=9,
    )
    if len(named) < len(rows):  # a name had no clear spot: the legend names every colour
        ax.legend(fontsize=MIN_FONT_PT)
    return fig


def task_method_heatmap(scores: pd.DataFrame) -> Figure:
    """Task x method balance score (pp), annotated, diverging colours centred on 0."""
    fig = _new_figure(max(4.5, 1.1 * scores.shape[1] + 2.5), max(2.5, 0.4 * scores.shape[0] + 1.6))
    ax = fig.subplots()
    if scores.empty or not np.isfinite(scores.to_numpy(float)).any():
        _empty(ax, "no scores")
        return fig
    values = 100 * scores.to_numpy(float)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(np.arange(scores.shape[1]), scores.columns, rotation=30, ha="right")
    ax.set_yticks(np.arange(scores.shape[0]), scores.index)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "n/a" if math.isnan(values[i, j]) else f"{values[i, j] + 0.0:+.1f}"
            text = "0.0" if text in ("+0.0", "-0.0") else text
            strong = not math.isnan(values[i, j]) and abs(values[i, j]) > 0.6 * limit
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if strong else "black",
            )
    fig.colorbar(image, ax=ax, label="score (pp)")
    ax.set_title("Score = mean(ID gain, DG gain, -CF drop) per task", fontsize=9)
    return fig
