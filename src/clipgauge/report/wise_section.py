"""The report's WiSE-FT section: each method's DG gain and CF drop along the interpolation from
zero-shot (alpha 0) to fine-tuned (alpha 1), and the alpha that balances best."""

from __future__ import annotations

import numpy as np

from clipgauge.analysis.summary import OUTCOME_LABELS, OUTCOMES
from clipgauge.analysis.wise import WiseCurves
from clipgauge.report import figures
from clipgauge.report.document import Document, Figure, Paragraph, long_table
from clipgauge.report.format import excludes_zero, interval

FIGURE_NAME = "wise_ft_curves.png"
CAPTION = (
    "WiSE-FT: DG gain and CF drop per method against alpha (0 = zero-shot, 1 = fine-tuned); "
    "bars: 95% paired bootstrap intervals"
)


def wise_figure(curves: WiseCurves) -> Figure:
    """Two panels, DG gain and CF drop (pp) against alpha, one line per method."""
    fig = figures._new_figure(figures.MAX_WIDTH_IN, 3.6)
    axes = fig.subplots(1, 2)
    colors = figures._colors(sorted(curves.best))
    for ax, outcome in zip(axes, ("dg_gain", "cf_drop"), strict=True):
        for method in sorted(curves.best):
            mine = curves.table[curves.table["method"] == method].sort_values("alpha")
            values = 100 * mine[outcome].to_numpy(float)
            lo = 100 * mine[f"{outcome}_lo"].to_numpy(float)
            hi = 100 * mine[f"{outcome}_hi"].to_numpy(float)
            errors = np.nan_to_num(np.vstack([values - lo, hi - values]))
            ax.errorbar(
                mine["alpha"], values, yerr=errors, marker="o", capsize=3,
                color=colors[method], label=method,
            )  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(curves.alphas, [f"{a:g}" for a in curves.alphas])
        ax.set_xlabel("alpha (0 = zero-shot, 1 = fine-tuned)")
        ax.set_ylabel(f"{OUTCOME_LABELS[outcome]} (pp)")
        ax.set_title(OUTCOME_LABELS[outcome], fontsize=figures.MIN_FONT_PT + 1)
    axes[0].legend(fontsize=figures.MIN_FONT_PT)
    return Figure(FIGURE_NAME, figures.png(fig), CAPTION)


def _change(name: str, value: float, lo: float, hi: float) -> str:
    """ "CF drop falls by 1.20 [0.40, 2.00] pp", or "... changes by ... (inconclusive)"."""
    text = interval(100 * abs(value), 100 * min(abs(lo), abs(hi)), 100 * max(abs(lo), abs(hi)))
    if not excludes_zero(lo, hi):
        return f"{name} changes by {interval(100 * value, 100 * lo, 100 * hi)} pp (inconclusive)"
    return f"{name} {'rises' if value > 0 else 'falls'} by {text.replace('+', '')} pp"


def _best_sentence(curves: WiseCurves) -> str:
    parts = []
    for method, alpha in sorted(curves.best.items()):
        if alpha == 1.0:
            parts.append(f"{method}, the fine-tuned model itself (no alpha below 1 scores higher)")
            continue
        diff = curves.best_vs_tuned.loc[method]
        what = "the zero-shot model" if alpha == 0.0 else f"alpha {alpha:g}"
        score = _change("the score", diff["score"], diff["score_lo"], diff["score_hi"])
        cf = _change("CF drop", diff["cf_drop"], diff["cf_drop_lo"], diff["cf_drop_hi"])
        parts.append(f"{method}, {what}: against the fine-tuned model {score} and {cf}")
    return "; ".join(parts) + "."


def wise_section(doc: Document, curves: WiseCurves | None) -> None:
    """Nothing when the study evaluated no WiSE-FT alpha."""
    if curves is None or not curves.best:
        return
    section = doc.section("WiSE-FT: interpolating with the zero-shot model")
    section.add(
        Paragraph(
            "Each fine-tuned run was evaluated again with its weights moved alpha of the way "
            "from the zero-shot model (adapters and LoRA updates scaled by alpha), with no "
            f"retraining. Best by balance score, per method: {_best_sentence(curves)} "
            f"Differences are paired on the same runs and test images; {curves.note}."
        ),
        wise_figure(curves),
    )
    headers = ["method", "alpha", *[f"{OUTCOME_LABELS[o]} [95% CI]" for o in OUTCOMES]]
    rows = []
    for row in curves.table.sort_values(["method", "alpha"]).itertuples():
        cells = [
            interval(
                100 * getattr(row, o), 100 * getattr(row, f"{o}_lo"), 100 * getattr(row, f"{o}_hi")
            )
            for o in OUTCOMES
        ]
        rows.append([str(row.method), f"{row.alpha:g}", *cells])
    section.add(*long_table(headers, rows, "method x alpha rows"))
