"""Draw a Scene in a domain's style: one renderer, every domain a set of parameters (styles.py).

Speed comes from work done once per image size (noise fields, texture patterns, shape distance
templates) and sampled per image by random crops, so one 64x64 image is a few dozen numpy
operations. All per-image randomness is one draw from the caller's generator.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from clipgauge.errors import DataError
from clipgauge.world.scene import COLOURS, Scene
from clipgauge.world.shapes import EXTENT, MAX_REACH, RESOLUTION, sdf_template
from clipgauge.world.styles import DomainStyle, get_style

_VARIANTS = 6  # precomputed fields per noise kind and texture; crops add the variety
_FAR = np.float32(1e3)  # signed distance "no object here"
MIN_SIZE, MAX_SIZE = 16, 256


@dataclass(frozen=True)
class _Assets:
    """Everything rendering at one image size reuses: fields are (variants, 2 size, 2 size)."""

    pixels: np.ndarray  # (size,) pixel centres: 0.5, 1.5, ...
    ramp: np.ndarray  # (size,) the same in -1..1
    noise: dict[str, np.ndarray]  # coarse, fine, streak, wobble: zero mean, unit std
    grain: np.ndarray  # (variants, 2 size, 2 size, 3) per-channel pixel noise
    patterns: dict[str, np.ndarray]  # texture -> coverage in 0..1 (solid has none)


def _unit(field: np.ndarray) -> np.ndarray:
    field = field - field.mean(axis=(-2, -1), keepdims=True)
    return (field / field.std(axis=(-2, -1), keepdims=True)).astype(np.float32)


def _streaks(rng: np.random.Generator, side: int, px: float) -> np.ndarray:
    """Noise smeared along one random direction, like brush strokes."""
    big = int(side * 1.5)
    raw = rng.standard_normal((big, big))
    smeared = ndimage.gaussian_filter(raw, sigma=(0.6 * px, 4.0 * px), mode="wrap")
    turned = ndimage.rotate(smeared, rng.uniform(0, 180), reshape=False, order=1, mode="wrap")
    lo = (big - side) // 2
    return turned[lo : lo + side, lo : lo + side]


def _pattern(texture: str, side: int, px: float, variant: int) -> np.ndarray:
    """Anti-aliased coverage of a texture pattern; periods are in pixels, not object units."""
    c = np.arange(side, dtype=np.float32) + 0.5
    x, y = c[None, :], c[:, None]
    if texture == "striped":
        angle = math.radians(45.0 * (variant % 4))
        period = 6.0 * px
        t = (x * math.cos(angle) + y * math.sin(angle)) % period
        return np.clip(period / 4 - np.abs(t - period / 2) + 0.5, 0, 1)
    if texture == "dotted":
        period, radius = 7.0 * px, 1.7 * px
        dx, dy = x % period - period / 2, y % period - period / 2
        if variant % 2:  # every other row of dots shifted: a hexagonal-ish grid
            dx = (x + period / 2 * (np.floor(y / period) % 2)) % period - period / 2
        return np.clip(radius - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1)
    if texture == "checkered":
        cell = 4.0 * px
        return ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)
    raise ValueError(texture)


@lru_cache(maxsize=4)
def _assets(size: int) -> _Assets:
    rng = np.random.default_rng(20240613 + size)  # fixed: the same fields in every process
    side, px = 2 * size, size / 64
    shape = (_VARIANTS, side, side)
    pixels = np.arange(size, dtype=np.float32) + 0.5
    smooth = [ndimage.gaussian_filter(f, 5.0 * px, mode="wrap") for f in rng.standard_normal(shape)]
    wobble = [ndimage.gaussian_filter(f, 3.0 * px, mode="wrap") for f in rng.standard_normal(shape)]
    noise = {
        "coarse": _unit(np.stack(smooth) + 0.35 * rng.standard_normal(shape)),
        "fine": _unit(rng.standard_normal(shape)),
        "streak": _unit(np.stack([_streaks(rng, side, px) for _ in range(_VARIANTS)])),
        "wobble": _unit(np.stack(wobble)),
    }
    grain = rng.standard_normal((_VARIANTS, 3, side, side)).astype(np.float32)
    patterns = {
        texture: np.stack([_pattern(texture, side, px, v) for v in range(_VARIANTS)])
        for texture in ("striped", "dotted", "checkered")
    }
    return _Assets(pixels, pixels / size * 2 - 1, noise, grain, patterns)


def _crop(bank: np.ndarray, size: int, u: np.ndarray) -> np.ndarray:
    """A size x size window of a random variant at a random offset (a view, no copy)."""
    k = int(u[0] * len(bank))
    oy, ox = int(u[1] * size), int(u[2] * size)
    return bank[k, ..., oy : oy + size, ox : ox + size]


def _lerp(bounds: tuple[float, float], t: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * t


def _channels(rgb: tuple[float, ...] | list[float]) -> np.ndarray:
    """An RGB colour in 0..1 as a (3, 1, 1) array in 0..255, ready to broadcast over an image."""
    return (np.asarray(rgb, dtype=np.float32) * np.float32(255)).reshape(3, 1, 1)


def _object_colour(scene: Scene, style: DomainStyle, u: np.ndarray) -> list[float]:
    jittered = [
        c + style.colour_jitter * (2 * float(t) - 1)
        for c, t in zip(COLOURS[scene.colour], u, strict=True)
    ]
    gray = sum(jittered) / 3
    return [min(max(gray + (c - gray) * style.fill_saturation, 0.0), 1.0) for c in jittered]


def _pattern_colour(colour: list[float]) -> list[float]:
    """The second colour of a texture: dark on light colours, light on dark ones."""
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return [c * 0.3 if luminance > 0.5 else c + (1 - c) * 0.8 for c in colour]


def _stamp(
    sdf: np.ndarray,
    shade: np.ndarray | None,
    template: np.ndarray,
    pixels: np.ndarray,
    centre: tuple[float, float],
    radius: float,
    angle: float,
    margin: float,
    light: tuple[float, float],
    shading: float,
) -> None:
    """Merge one object's signed distance (pixels) into `sdf`, and its shading into `shade`."""
    size = sdf.shape[0]
    cx, cy = centre[0] * size, centre[1] * size
    half = min(radius + margin, MAX_REACH * radius - 0.5)
    x0, x1 = max(math.floor(cx - half), 0), min(math.ceil(cx + half), size)
    y0, y1 = max(math.floor(cy - half), 0), min(math.ceil(cy + half), size)
    if x0 >= x1 or y0 >= y1:
        return
    xs, ys = pixels[x0:x1] - np.float32(cx), pixels[y0:y1] - np.float32(cy)
    # Pixel offsets to template cells: rotate by -angle, scale to cells per pixel.
    cells = RESOLUTION / (2 * EXTENT * radius)
    c, s = math.cos(math.radians(angle)) * cells, math.sin(math.radians(angle)) * cells
    mid = RESOLUTION // 2
    iu = (c * xs)[None, :] + (s * ys + mid)[:, None]
    iv = (c * ys + mid)[:, None] - (s * xs)[None, :]
    # Both are >= 0, so truncating floor(iv) * R + iu gives the cell floor(iv) * R + floor(iu).
    np.floor(iv, out=iv)
    iv *= RESOLUTION
    iv += iu
    distance = template.take(iv.astype(np.int32))
    distance *= np.float32(radius)
    window = sdf[y0:y1, x0:x1]
    if shade is not None:
        lx, ly = light
        fall = ((xs / radius - lx) ** 2)[None, :] + ((ys / radius - ly) ** 2)[:, None]
        np.copyto(shade[y0:y1, x0:x1], 1.15 - (0.45 * shading) * fall, where=distance < window)
    np.minimum(window, distance, out=window)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Binomial blur of a (3, H, W) image: [1 2 1] / 4 passes along both axes, edges repeated.

    Each pass adds variance 1/2, so sigma needs about 2 sigma^2 passes.
    """
    _, h, w = image.shape
    padded = np.empty((3, h + 2, w + 2), dtype=np.float32)
    for _ in range(max(1, round(2 * sigma * sigma))):
        padded[:, 1:-1, 1:-1] = image
        padded[:, 1:-1, 0] = image[:, :, 0]
        padded[:, 1:-1, -1] = image[:, :, -1]
        across = padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
        across += image
        across += image
        padded[:, 1:-1, 1:-1] = across
        padded[:, 0, 1:-1] = across[:, 0]
        padded[:, -1, 1:-1] = across[:, -1]
        image = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1]
        image += across
        image += across
        image *= np.float32(1 / 16)
    return image


def check_size(size: object) -> int:
    """An image side in pixels, checked: a DataError for anything outside MIN_SIZE..MAX_SIZE."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise DataError(f"world image size must be an integer number of pixels, not {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"world image size must be in {MIN_SIZE}..{MAX_SIZE} pixels, not {size}")
    return int(size)


# long: one pass in the order of the random draws, which decides every pixel of every shipped
# image; split into helpers, that order would be spread over several functions.
def render(
    scene: Scene, domain: str, size: int = 64, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw `scene` in `domain` style: an (size, size, 3) uint8 RGB array.

    Every random choice (background, lighting, pattern phase, noise) comes from `rng` (seed 0 when
    omitted), so the same scene, domain, size and generator state always give the same pixels.
    """
    style = get_style(domain)
    size = check_size(size)
    if rng is None:
        rng = np.random.default_rng(0)
    assets = _assets(size)
    px = size / 64
    u = rng.random(32)

    # Work in (3, size, size) float32 in 0..255: whole-plane operations broadcast fast.
    background = colorsys.hsv_to_rgb(
        float(u[0]),
        _lerp(style.background_saturation, float(u[1])),
        _lerp(style.background_value, float(u[2])),
    )
    image = np.empty((3, size, size), dtype=np.float32)
    image[:] = _channels(background)
    if style.background_noise:
        texture = _crop(assets.noise[style.background_noise_kind], size, u[3:6])
        image *= 1 + style.background_noise * texture

    # Light comes from the upper left, give or take; shadows fall the other way.
    light = (-0.45 + 0.3 * float(u[6]), -0.45 + 0.3 * float(u[7]))
    shadow_offset = max(1, round(2.5 * px))
    margin = 1.5 * px + style.outline_width * px / 2 + 2.5 * style.edge_wobble * px
    if style.shadow:
        margin += shadow_offset + 1.5 * px
    sdf = np.full((size, size), _FAR, dtype=np.float32)
    shade = np.ones((size, size), dtype=np.float32) if style.shading else None
    template = sdf_template(scene.shape)
    radius = scene.radius * size
    for centre, angle in zip(scene.centres, scene.angles, strict=True):
        _stamp(
            sdf, shade, template, assets.pixels, centre, radius, angle, margin, light, style.shading
        )
    if style.edge_wobble:
        sdf += (style.edge_wobble * px) * _crop(assets.noise["wobble"], size, u[8:11])

    if style.shadow:
        d = shadow_offset
        shifted = np.full_like(sdf, _FAR)
        shifted[d:, d:] = sdf[:-d, :-d]
        darkness = np.clip(0.5 - shifted * np.float32(1 / (3.0 * px)), 0, style.shadow)
        image *= 1 - darkness

    coverage = np.clip(0.5 - sdf, 0, 1)
    colour = _object_colour(scene, style, u[11:14])
    pattern = None
    if scene.texture in assets.patterns:
        pattern = _crop(assets.patterns[scene.texture], size, u[14:17])
    if style.fill_opacity:
        fill = _channels(colour)
        if pattern is not None and style.pattern_contrast:
            fill = fill + (style.pattern_contrast * pattern) * (
                _channels(_pattern_colour(colour)) - fill
            )
        if shade is not None:
            fill = fill * shade
        image += (style.fill_opacity * coverage) * (fill - image)
    if pattern is not None and style.pattern_ink:
        image *= 1 - (style.pattern_ink * coverage) * pattern
    if style.outline_width:
        line = np.clip((style.outline_width * px / 2 + 0.5) - np.abs(sdf), 0, 1)
        image += line * (_channels(style.outline_colour) - image)

    if style.lighting:
        direction = 2 * math.pi * float(u[17])
        ramp = np.add.outer(math.sin(direction) * assets.ramp, math.cos(direction) * assets.ramp)
        image *= 1 + style.lighting * ramp
    if style.blur:
        image = _blur(image, style.blur * px)
    if style.brush_noise:
        strokes = _crop(assets.noise["streak"], size, u[18:21])
        tint = (0.6 + 0.8 * u[21:24]).astype(np.float32).reshape(3, 1, 1)
        image += (255 * style.brush_noise * strokes) * tint
    if style.pixel_noise:
        image += (255 * style.pixel_noise) * _crop(assets.grain, size, u[24:27])

    np.clip(image, 0, 255, out=image)
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    for channel in range(3):
        pixels[..., channel] = image[channel]
    return pixels
