"""The pixel cache: the same tensors as preprocessing every time, each item processed once."""

import torch
from transformers import CLIPImageProcessor

from clipgauge.data.open import open_dataset
from clipgauge.pixels import PixelCache, item_pixels, usable_cache


def processor(size=32):
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size)


def test_cached_pixels_equal_fresh_ones_and_each_item_is_processed_once():
    dataset = open_dataset("world:textures?per_class=2&size=32")
    proc = processor()
    cache = PixelCache(proc)
    first = [item_pixels(dataset, i, proc, cache) for i in range(len(dataset))]
    again = [item_pixels(dataset, i, proc, cache) for i in range(len(dataset))]
    fresh = [item_pixels(dataset, i, proc) for i in range(len(dataset))]
    assert (cache.misses, cache.hits) == (len(dataset), len(dataset))
    for a, b, c in zip(first, again, fresh, strict=True):
        assert a is b and torch.equal(a, c)
    assert cache.bytes == sum(t.numel() * 4 for t in first)


def test_items_of_another_loader_are_not_confused():
    small = open_dataset("world:textures?per_class=1&size=32&seed=0")
    other = open_dataset("world:textures?per_class=1&size=32&seed=1")
    assert small.items[0].path == other.items[0].path  # same virtual path, other pixels
    proc = processor()
    cache = PixelCache(proc)
    a, b = item_pixels(small, 0, proc, cache), item_pixels(other, 0, proc, cache)
    assert not torch.equal(a, b) and cache.misses == 2


def test_the_byte_budget_and_other_processor_settings():
    dataset = open_dataset("world:textures?per_class=1&size=32")
    proc = processor()
    one_image = 3 * 32 * 32 * 4
    cache = PixelCache(proc, max_bytes=2 * one_image)
    for i in range(4):
        item_pixels(dataset, i, proc, cache)
    assert cache.bytes == 2 * one_image
    assert usable_cache(cache, processor()) is cache  # equal settings, another object
    assert usable_cache(cache, processor(48)) is None
