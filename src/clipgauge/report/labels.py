"""Point labels that never cover a marker or each other.

Each label tries a ring of spots around its point, nearest first, and takes the first whose
bounding box (as matplotlib draws it) stays inside the axes and clear of the marked points and
of the labels placed before it. A label with no clear spot is left out: a hidden name is better
than an unreadable one, and the tables hold every value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

LABEL_GID = "point-label"
MARKER_GID = "labelled-marker"
# (dx, dy) directions, tried in this order at each distance; ha/va keep the text beside the point.
_DIRECTIONS = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
_GAPS_PT = (2.0, 7.0, 14.0)


@dataclass
class Marks:
    """Markers to keep clear of: data coordinates and a radius in points."""

    xy: np.ndarray
    radius_pt: float


def settle(fig: Figure) -> None:
    """Draw once so the layout and axis limits are final, then freeze both: labels are placed
    in display pixels, which must not move afterwards."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    for ax in fig.axes:
        ax.set_xlim(ax.get_xlim())
        ax.set_ylim(ax.get_ylim())
    fig.set_layout_engine("none")


def _boxes(ax, marks: Marks) -> list[Bbox]:
    finite = marks.xy[np.isfinite(marks.xy).all(axis=1)]
    if not len(finite):
        return []
    radius = marks.radius_pt * ax.figure.dpi / 72
    centres = ax.transData.transform(finite)
    return [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centres]


def _clear(box: Bbox, inside: Bbox, obstacles: list[Bbox]) -> bool:
    within = inside.x0 <= box.x0 <= box.x1 <= inside.x1 and inside.y0 <= box.y0 <= box.y1
    return within and box.y1 <= inside.y1 and not any(box.overlaps(o) for o in obstacles)


def place_labels(
    ax,
    xy: np.ndarray,
    names: list[str],
    *,
    radius_pt: float,
    soft: Marks | None = None,
    fontsize: float = 8.0,
) -> list:
    """Label the points `xy` (data coordinates, markers of `radius_pt` points) with `names`.

    Call `settle(fig)` first. Labels keep clear of these markers, of each other and of the axes
    edge; they keep clear of the `soft` markers too where any spot allows. Returns the labels
    placed (matplotlib Text, gid LABEL_GID).
    """
    xy = np.asarray(xy, dtype=float)
    renderer = ax.figure.canvas.get_renderer()
    hard = _boxes(ax, Marks(xy, radius_pt))
    soft_boxes = _boxes(ax, soft) if soft is not None else []
    inside = ax.get_window_extent(renderer)
    placed: list = []
    for (x, y), name in zip(xy, names, strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        label = _best_spot(
            ax,
            (x, y),
            str(name),
            radius_pt,
            fontsize,
            renderer,
            inside,
            [hard, [t.get_window_extent(renderer) for t in placed], soft_boxes],
        )
        if label is not None:
            placed.append(label)
            if max(abs(v) for v in label.get_position()) > radius_pt + _GAPS_PT[0]:
                _leader(ax, label, radius_pt)
    return placed


def _best_spot(ax, point, name, radius_pt, fontsize, renderer, inside, obstacles):
    """The label at the first clear spot (clear of soft marks too if possible), else None."""
    hard, labels, soft = obstacles
    label = ax.annotate(
        name, point, xytext=(0, 0), textcoords="offset points", fontsize=fontsize, gid=LABEL_GID
    )
    label.set_in_layout(False)
    fallback = None
    for gap in _GAPS_PT:
        for dx, dy in _DIRECTIONS:
            distance = radius_pt + gap
            label.set_position((dx * distance, dy * distance))
            label.set_ha({1: "left", -1: "right", 0: "center"}[dx])
            label.set_va({1: "bottom", -1: "top", 0: "center"}[dy])
            box = label.get_window_extent(renderer)
            if not _clear(box, inside, hard + labels):
                continue
            if not any(box.overlaps(o) for o in soft):
                return label
            if fallback is None:
                fallback = (label.get_position(), label.get_ha(), label.get_va())
    if fallback is None:
        label.remove()
        return None
    position, ha, va = fallback
    label.set_position(position)
    label.set_ha(ha)
    label.set_va(va)
    return label


def _leader(ax, label, radius_pt: float):
    """A thin line from a label set apart from its point back to the point's marker edge."""
    ax.annotate(
        "",
        label.xy,
        xytext=label.get_position(),
        textcoords="offset points",
        arrowprops=dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=1, shrinkB=radius_pt),
    ).set_in_layout(False)
