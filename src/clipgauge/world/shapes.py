"""Shape outlines as signed-distance templates, built once and sampled per object.

Each shape is defined as a filled region in object units (the shape fits the unit circle, y down).
A template holds its signed distance (negative inside) on a fine grid over [-EXTENT, EXTENT]^2;
rendering scales, turns and samples it, so every shape costs the same few array operations and
edges come out anti-aliased for free.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from clipgauge.world.scene import SHAPES

# Template half-width in object radii. Rendering draws each object in a square window of
# half-width at most MAX_REACH radii; turned any way it stays inside EXTENT (2.2 * sqrt 2 < 3.2),
# so lookups never need clamping.
EXTENT = 3.2
MAX_REACH = 2.2
RESOLUTION = 512  # cells per side: 0.2 px per cell for the largest objects at 64x64


def _regular(n: int, radius: float, start: float = -90.0) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(math.radians(start + 360.0 * k / n)),
            radius * math.sin(math.radians(start + 360.0 * k / n)),
        )
        for k in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, start=-54.0)
    return [(x, y + 0.08) for pair in zip(outer, inner, strict=True) for x, y in pair]


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    scale = 0.95 / 17.0
    return list(zip((x * scale).tolist(), (y * scale + 0.08).tolist(), strict=True))


# Polygons in object units; `circle` and `ring` are drawn as ellipses instead.
_POLYGONS = {
    "arrow": [
        (-0.92, -0.22),
        (0.12, -0.22),
        (0.12, -0.66),
        (0.95, 0.0),
        (0.12, 0.66),
        (0.12, 0.22),
        (-0.92, 0.22),
    ],
    "cross": [
        (-0.28, -0.92),
        (0.28, -0.92),
        (0.28, -0.28),
        (0.92, -0.28),
        (0.92, 0.28),
        (0.28, 0.28),
        (0.28, 0.92),
        (-0.28, 0.92),
        (-0.28, 0.28),
        (-0.92, 0.28),
        (-0.92, -0.28),
        (-0.28, -0.28),
    ],
    "diamond": [(0.0, -1.0), (0.64, 0.0), (0.0, 1.0), (-0.64, 0.0)],
    "heart": _heart(),
    "hexagon": _regular(6, 0.95),
    "square": [(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)],
    "star": _star(),
    "triangle": [(0.0, -0.85), (0.95, 0.72), (-0.95, 0.72)],
}
_DISCS = {"circle": (0.9, 0.0), "ring": (0.92, 0.52)}  # (outer, inner) radius


def _to_cells(x: float) -> float:
    return (x + EXTENT) / (2 * EXTENT) * RESOLUTION


def _mask(shape: str) -> np.ndarray:
    canvas = Image.new("L", (RESOLUTION, RESOLUTION), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in _DISCS:
        for radius, fill in zip(_DISCS[shape], (255, 0), strict=True):
            if radius > 0:
                lo, hi = _to_cells(-radius), _to_cells(radius)
                draw.ellipse([lo, lo, hi, hi], fill=fill)
    else:
        draw.polygon([(_to_cells(x), _to_cells(y)) for x, y in _POLYGONS[shape]], fill=255)
    return np.asarray(canvas) > 127


@cache
def sdf_template(shape: str) -> np.ndarray:
    """Signed distance in object radii (float32, RESOLUTION x RESOLUTION, row = y), built once."""
    inside = _mask(shape)
    edge = inside & ~ndimage.binary_erosion(inside)
    distance = ndimage.distance_transform_edt(~edge)
    distance[inside] *= -1
    return (distance * (2 * EXTENT / RESOLUTION)).astype(np.float32)


def all_templates() -> dict[str, np.ndarray]:
    return {shape: sdf_template(shape) for shape in SHAPES}
