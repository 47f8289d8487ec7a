"""What an image shows: the attribute vocabulary, the Scene record and seeded scene sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clipgauge.errors import DataError

# Bump whenever scene sampling, rendering or a domain style changes: it is recorded in every
# world dataset's `source`, so cached embeddings and results never mix two renderings.
WORLD_VERSION = "1"

SHAPES = (
    "arrow",
    "circle",
    "cross",
    "diamond",
    "heart",
    "hexagon",
    "ring",
    "square",
    "star",
    "triangle",
)
# Strong, well separated colours (RGB in 0..1); no white or black, which backgrounds and
# outlines use.
COLOURS: dict[str, tuple[float, float, float]] = {
    "blue": (0.13, 0.30, 0.90),
    "brown": (0.50, 0.30, 0.12),
    "cyan": (0.10, 0.80, 0.88),
    "gray": (0.52, 0.52, 0.52),
    "green": (0.12, 0.66, 0.18),
    "orange": (0.98, 0.52, 0.05),
    "pink": (0.98, 0.45, 0.72),
    "purple": (0.52, 0.18, 0.75),
    "red": (0.88, 0.08, 0.10),
    "yellow": (0.96, 0.88, 0.10),
}
TEXTURES = ("checkered", "dotted", "solid", "striped")
COUNTS = (1, 2, 3, 4)
SIZES = ("large", "small")
POSITIONS = ("bottom", "center", "left", "right", "top")

ATTRIBUTES: dict[str, tuple] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "count": COUNTS,
    "size": SIZES,
    "position": POSITIONS,
}

# Object radius as a fraction of the image side, by size and count: more objects are smaller,
# but large ones always stay larger than small ones, so size can be told at any count.
_RADIUS = {
    "large": {1: 0.23, 2: 0.18, 3: 0.16, 4: 0.145},
    "small": {1: 0.13, 2: 0.11, 3: 0.10, 4: 0.09},
}
# Where the group of objects sits (x, y as fractions of the side, y down).
_ANCHORS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
_SPACING = 2.4  # centre-to-centre distance in radii: objects never touch, outlines included
_MARGIN = 0.03  # objects keep this far (fraction of the side) from the image border
# Direction (degrees, y down) from each edge position towards the image centre: groups line up
# along their edge, so a left group stays narrow and visibly left whatever its count.
_INWARD = {"left": 0.0, "right": 180.0, "top": 90.0, "bottom": 270.0}
_GROUP_TURN = {1: 0.0, 2: 90.0, 3: 0.0, 4: 0.0}  # pairs stand across the inward direction
# Base rotations in degrees a shape may take; every shape also gets a small random tilt.
_ROTATIONS = {"arrow": (0, 90, 180, 270), "triangle": (0, 180)}
_TILT = 12.0


@dataclass(frozen=True)
class Scene:
    """One image's content: attributes shared by every object, plus their layout.

    Coordinates are fractions of the image side (x right, y down), so a scene renders at any size.
    """

    shape: str
    colour: str
    texture: str
    count: int
    size: str
    position: str
    centres: tuple[tuple[float, float], ...]
    radius: float
    angles: tuple[float, ...]  # degrees, one per object

    def attributes(self) -> dict[str, object]:
        """The six attribute values by name (shape, colour, texture, count, size, position)."""
        return {name: getattr(self, name) for name in ATTRIBUTES}


def allowed_values(attribute: str, wanted: object = None) -> tuple:
    """The values `attribute` may take: all of them, or `wanted` (one value or a list), checked."""
    if attribute not in ATTRIBUTES:
        raise DataError(f"unknown scene attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}")
    values = ATTRIBUTES[attribute]
    if wanted is None:
        return values
    chosen = tuple(wanted) if isinstance(wanted, (list, tuple)) else (wanted,)
    bad = [v for v in chosen if v not in values]
    if bad or not chosen:
        raise DataError(
            f"{attribute} cannot be {bad[0] if bad else 'an empty list'!r}; "
            f"choose from {', '.join(map(str, values))}"
        )
    return chosen


def sample_scene(rng: np.random.Generator, **fixed: object) -> Scene:
    """A random scene; `fixed` pins attributes to a value or a list of allowed values.

    Draws from `rng` in a fixed order, so the same generator state always gives the same scene.
    """
    unknown = sorted(set(fixed) - set(ATTRIBUTES))
    if unknown:
        raise DataError(f"unknown scene attribute(s) {unknown}; known: {', '.join(ATTRIBUTES)}")
    u = rng.random(16).tolist()
    chosen = {}
    for k, (attribute, values) in enumerate(ATTRIBUTES.items()):
        if attribute in fixed:
            values = allowed_values(attribute, fixed[attribute])
        chosen[attribute] = values[min(int(u[k] * len(values)), len(values) - 1)]
    count, shape = chosen["count"], chosen["shape"]
    radius = _RADIUS[chosen["size"]][count] * (0.95 + 0.1 * u[6])
    centres = _layout(count, radius, chosen["position"], u[7], u[8], u[9])
    bases = _ROTATIONS.get(shape, (0,))
    base = bases[min(int(u[10] * len(bases)), len(bases) - 1)]
    angles = tuple(base + _TILT * (2 * t - 1) for t in u[11 : 11 + count])
    return Scene(centres=centres, radius=radius, angles=angles, **chosen)


def _layout(
    count: int, radius: float, position: str, u_turn: float, u_x: float, u_y: float
) -> tuple[tuple[float, float], ...]:
    """Object centres: a regular cluster (pair, triangle, 2x2) placed at the position's anchor."""
    step = _SPACING * radius
    if count == 1:
        offsets = [(0.0, 0.0)]
    elif count == 4:
        offsets = [(sx * step / 2, sy * step / 2) for sx in (-1, 1) for sy in (-1, 1)]
    else:
        ring = step / (2 * math.sin(math.pi / count))  # polygon with side length `step`
        offsets = [
            (ring * math.cos(2 * math.pi * k / count), ring * math.sin(2 * math.pi * k / count))
            for k in range(count)
        ]
    if position in _INWARD:
        degrees = _INWARD[position] + _GROUP_TURN[count] + 30.0 * (u_turn - 0.5)
    else:
        degrees = 360.0 * u_turn
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    offsets = [(c * x - s * y, s * x + c * y) for x, y in offsets]
    ax, ay = _ANCHORS[position]
    gx, gy = ax + 0.1 * (u_x - 0.5), ay + 0.1 * (u_y - 0.5)
    # Shift the whole group inside the border. Radii and group shapes are chosen so that an edge
    # group keeps its centroid at least 0.1 off the centre, on its side (tested).
    lo = radius + _MARGIN
    xs, ys = [gx + x for x, _ in offsets], [gy + y for _, y in offsets]
    gx += max(0.0, lo - min(xs)) - max(0.0, max(xs) - (1 - lo))
    gy += max(0.0, lo - min(ys)) - max(0.0, max(ys) - (1 - lo))
    return tuple((gx + x, gy + y) for x, y in offsets)
