"""Preprocessed pixels of dataset items: load (decode or render), then the model's own processor.

Embedding and training read pixels through `item_pixels`. A `PixelCache` keeps them in memory
for reuse: a study shares one across all runs of a process, so each task's images are decoded
(or rendered) and preprocessed once instead of once per run and epoch.
"""

from __future__ import annotations

import torch

from clipgauge.data.dataset import ImageDataset

# 4 GiB: about 87,000 preprocessed 3 x 64 x 64 float32 images, or 21,000 at 224 x 224.
DEFAULT_MAX_BYTES = 4 << 30
# A JPEG is decoded at reduced scale (1/2, 1/4 or 1/8, Pillow's draft mode) only while its
# shorter side stays at least this many times the resize target, so the processor's bicubic
# resize still averages over >= 3 source pixels per output pixel: the preprocessed pixels stay
# within a few levels of a full decode (tests/test_pixels.py) and decoding gets several times
# faster (benchmarks/bench_datapath.py, docs/benchmarks.md; 2 flipped 1.4% of world-clip's
# near-tie zero-shot predictions, 3 none). None decodes every image in full.
JPEG_DRAFT_FACTOR: int | None = 3


def processor_settings(processor) -> dict:
    """What decides the pixel values a processor gives (two equal dicts give equal pixels),
    including how JPEGs are decoded."""
    settings = processor.to_dict()
    settings.pop("processor_class", None)
    return {"type": type(processor).__name__, **decode_settings(), **settings}


def decode_settings() -> dict:
    """How image files are decoded, beyond the processor (stored with pixels and results)."""
    return {"jpeg_draft_factor": JPEG_DRAFT_FACTOR}


def resize_target(processor) -> int | None:
    """The longest side the processor resizes to before cropping (its shortest-edge target,
    or the larger of height and width); None when it does not resize."""
    if not getattr(processor, "do_resize", True):
        return None
    size = getattr(processor, "size", None) or {}  # a dict or transformers' SizeDict
    if size.get("shortest_edge"):
        return int(size["shortest_edge"])
    sides = [int(size.get(k)) for k in ("height", "width") if size.get(k)]
    return max(sides) if sides else None


def decode_min_side(processor, factor: int | None) -> int | None:
    """The shorter side a reduced-scale decode must keep for `processor` with draft `factor`
    (JPEG_DRAFT_FACTOR); None: full decode."""
    target = resize_target(processor)
    return None if factor is None or target is None else factor * target


class PixelCache:
    """Preprocessed pixels by (item loader, item path), for one set of processor settings.

    Items are added until `max_bytes` is reached; later ones are computed every time. The
    cache lives in one process: DataLoader workers read it but do not add to it.
    """

    def __init__(self, processor, max_bytes: int = DEFAULT_MAX_BYTES):
        self.settings = processor_settings(processor)
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._pixels: dict[tuple[int, str], torch.Tensor] = {}
        self._loaders: dict[int, object] = {}  # keeps each loader alive, so its id stays its own

    def fits(self, processor) -> bool:
        """Whether `processor` gives the pixels this cache holds."""
        return processor_settings(processor) == self.settings

    def get(self, dataset: ImageDataset, index: int) -> torch.Tensor | None:
        pixels = self._pixels.get((id(dataset.loader), dataset.items[index].path))
        if pixels is None:
            self.misses += 1
        else:
            self.hits += 1
        return pixels

    def put(self, dataset: ImageDataset, index: int, pixels: torch.Tensor) -> None:
        size = pixels.numel() * pixels.element_size()
        if self.bytes + size > self.max_bytes:
            return
        self._loaders.setdefault(id(dataset.loader), dataset.loader)
        self._pixels[(id(dataset.loader), dataset.items[index].path)] = pixels
        self.bytes += size


def item_pixels(
    dataset: ImageDataset, index: int, processor, cache: PixelCache | None = None
) -> torch.Tensor:
    """The processor's pixel tensor (C x H x W) of item `index`; DataError if unreadable.

    `cache` must hold pixels of this processor's settings (`PixelCache.fits`)."""
    if cache is not None and (pixels := cache.get(dataset, index)) is not None:
        return pixels
    image = dataset.load_image(index, min_side=decode_min_side(processor, JPEG_DRAFT_FACTOR))
    pixels = processor(images=image, return_tensors="pt")["pixel_values"][0]
    if cache is not None:
        cache.put(dataset, index, pixels)
    return pixels


def usable_cache(cache: PixelCache | None, processor) -> PixelCache | None:
    """`cache` if it holds this processor's pixels, else None."""
    return cache if cache is not None and cache.fits(processor) else None
