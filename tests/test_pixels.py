"""The pixel cache: the same tensors as preprocessing every time, each item processed once;
reduced-scale (draft) JPEG decoding: close to a full decode, same predictions, never mixed."""

import pytest
import torch
from transformers import CLIPImageProcessor

from clipgauge import pixels
from clipgauge.data.open import open_dataset
from clipgauge.embeddings import embed_dataset
from clipgauge.models.loading import load_clip
from clipgauge.pixels import (
    PixelCache,
    decode_min_side,
    item_pixels,
    resize_target,
    usable_cache,
)


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


DRAFT = pixels.JPEG_DRAFT_FACTOR


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory):
    """World images upscaled to camera-like sizes (500 x 375, 1024 x 768) and saved as JPEG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("jpegs")
    source = open_dataset("world:shapes?per_class=1")
    for i, item in enumerate(source.items):
        path = root / source.class_names[item.label] / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        size = (1024, 768) if i % 2 else (500, 375)
        source.load_image(i).resize(size, Image.BICUBIC).save(path, quality=90)
    return open_dataset(str(root))


def with_draft(monkeypatch, factor, fn):
    monkeypatch.setattr(pixels, "JPEG_DRAFT_FACTOR", factor)
    return fn()


def test_draft_decoded_pixels_stay_close_to_a_full_decode(large_jpegs, monkeypatch):
    proc = load_clip("world-clip").image_processor  # 64 px: the 1024 x 768 images are drafted

    def all_pixels():
        return torch.stack([item_pixels(large_jpegs, i, proc) for i in range(len(large_jpegs))])

    full, draft = (with_draft(monkeypatch, f, all_pixels) for f in (None, DRAFT))
    levels = ((full - draft) * torch.tensor(proc.image_std).view(1, 3, 1, 1) * 255).abs()
    # In 8-bit levels: on average under 1, at the 99th percentile under 10 (edges move most).
    assert 0 < levels.mean() < 1.0
    assert torch.quantile(levels.flatten()[::7], 0.99) < 10


def test_draft_decoding_keeps_zero_shot_predictions(large_jpegs, monkeypatch):
    bundle = load_clip("world-clip")

    def top1():
        emb = embed_dataset(bundle, large_jpegs, ["a {}."], progress=False, num_workers=0)
        return (emb.image_embeds @ emb.text_embeds.T).argmax(dim=1), emb.preprocessing

    (full, full_prep), (draft, draft_prep) = (
        with_draft(monkeypatch, f, top1) for f in (None, DRAFT)
    )
    assert (full == draft).float().mean() >= 0.99  # 500 images: benchmarks/bench_datapath.py
    assert (full_prep["jpeg_draft_factor"], draft_prep["jpeg_draft_factor"]) == (None, DRAFT)


def test_draft_decoding_is_part_of_the_pixel_cache_settings(monkeypatch):
    proc = processor()
    cache = with_draft(monkeypatch, None, lambda: PixelCache(proc))
    assert not with_draft(monkeypatch, DRAFT, lambda: cache.fits(proc))


def test_draft_targets_follow_the_processor():
    assert decode_min_side(processor(224), 2) == 448
    assert decode_min_side(processor(224), None) is None
    exact = CLIPImageProcessor(size={"height": 256, "width": 192})
    assert resize_target(exact) == 256
    assert resize_target(CLIPImageProcessor(do_resize=False)) is None
