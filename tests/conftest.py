"""Shared fixtures; image and folder builders live in tests/imagegen.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from imagegen import make_domainbed, make_folder


@pytest.fixture
def domainbed_root(tmp_path: Path) -> Path:
    """Two domains x two classes x two PNGs: art/{dog,ice_cream}, photo/{dog,ice_cream}."""
    return make_domainbed(tmp_path / "pacs", ["photo", "art"], ["dog", "ice_cream"])


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """One domain `pets` with classes cat, dog, hot-dog (three images each)."""
    return make_folder(tmp_path / "pets", ["dog", "cat", "hot-dog"], per_class=3)


TINY_WORDS = "a photo of the cat dog hot ice cream bird car sketch art painting".split()


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random-weight CLIP (32x32 images, width 32) with a word-level tokenizer, saved as HF."""
    from clipgauge.models.build import build_clip

    return build_clip(tmp_path_factory.mktemp("models") / "tiny-clip", TINY_WORDS, seed=0)


@pytest.fixture
def one_thread():
    """Tiny models train far faster on one thread, above all on a busy shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
