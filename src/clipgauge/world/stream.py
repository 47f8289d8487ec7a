"""Captioned world images for contrastive pretraining, as an endless seeded stream of batches."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from clipgauge.errors import DataError
from clipgauge.world.captions import caption_for
from clipgauge.world.render import check_size, render
from clipgauge.world.scene import sample_scene
from clipgauge.world.styles import domain_names

_STREAM_TAG = 0x57524C44  # keeps stream seeds apart from task image seeds


def _domain_table(domain_weights: Mapping[str, float] | None) -> tuple[list[str], np.ndarray]:
    """The domains that can be drawn and their cumulative probabilities."""
    names = domain_names()
    if domain_weights is None:
        domain_weights = dict.fromkeys(names, 1.0)
    unknown = sorted(set(domain_weights) - set(names))
    if unknown:
        raise DataError(f"unknown domain(s) {unknown} in domain weights; known: {', '.join(names)}")
    weights = np.array([float(domain_weights.get(n, 0.0)) for n in names])
    if (weights < 0).any() or weights.sum() <= 0:
        raise DataError(f"domain weights must be >= 0 with a positive sum, not {domain_weights}")
    used = weights > 0  # a domain of weight 0 can never be drawn, rounding notwithstanding
    cumulative = np.cumsum(weights[used] / weights.sum())
    cumulative[-1] = 1.0
    return [n for n, keep in zip(names, used, strict=True) if keep], cumulative


def pretraining_sample(
    seed: int,
    index: int,
    size: int = 64,
    domain_weights: Mapping[str, float] | None = None,
    mention: Mapping[str, float] | None = None,
    fixed: Mapping[str, object] | None = None,
) -> tuple[np.ndarray, str, str]:
    """Sample `index` of stream `seed`: (image, caption, domain), a function of the arguments."""
    names, cumulative = _domain_table(domain_weights)
    return _sample(seed, index, size, names, cumulative, mention, fixed)


def _sample(
    seed: int,
    index: int,
    size: int,
    names: list[str],
    cumulative: np.ndarray,
    mention: Mapping[str, float] | None,
    fixed: Mapping[str, object] | None,
) -> tuple[np.ndarray, str, str]:
    rng = np.random.default_rng(np.random.SeedSequence([_STREAM_TAG, seed, index]))
    domain = names[int(np.searchsorted(cumulative, rng.random(), side="right"))]
    scene = sample_scene(rng, **(fixed or {}))
    image = render(scene, domain, size, rng)
    return image, caption_for(scene, domain, rng, mention), domain


def pretraining_stream(
    seed: int,
    batch_size: int,
    size: int = 64,
    domain_weights: Mapping[str, float] | None = None,
    mention: Mapping[str, float] | None = None,
    start: int = 0,
    fixed: Mapping[str, object] | None = None,
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Endless batches of (uint8 images B x size x size x 3, captions) with random scenes.

    Sample i of the stream depends only on (seed, i), so a run resumed with `start` continues
    it exactly. `domain_weights` sets how often each domain appears (missing domains: never;
    default: all equally), `mention` the odds of captions naming each attribute, and `fixed`
    pins scene attributes as `sample_scene` does.
    """
    size = check_size(size)
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, not {batch_size}")
    names, cumulative = _domain_table(domain_weights)
    index = start
    while True:
        images = np.empty((batch_size, size, size, 3), dtype=np.uint8)
        captions = []
        for b in range(batch_size):
            images[b], caption, _ = _sample(
                seed, index + b, size, names, cumulative, mention, fixed
            )
            captions.append(caption)
        index += batch_size
        yield images, captions
