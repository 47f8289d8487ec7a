"""Embedding cache: time a first and a second identical `measure` on the same images.

Run: .venv/bin/python benchmarks/bench_cache.py [--images 2000] [--model world-clip]
Both runs go through the whole public API (model load and fingerprint, dataset scan, embedding
or cache read, measures). Without --model, a ViT-B/32-shaped random CLIP is built.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clipgauge.cache import TensorCache
from clipgauge.models.build import VIT_B32_SHAPE, build_clip
from clipgauge.task_measures import measure

CLASSES = ["cat", "dog", "car", "tree", "house", "boat", "bird", "horse", "plane", "flower"]
DOMAINS = ["photo", "sketch"]


def make_images(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / DOMAINS[i % 2] / CLASSES[(i // 2) % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, size=(160, 160, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "data", args.images)
        model = args.model or str(
            build_clip(
                tmp / "vit-b-32",
                CLASSES + ["a", "photo", "of"],
                **VIT_B32_SHAPE,
            )
        )
        cache = TensorCache(tmp / "cache")
        times, reports = [], []
        for _ in range(2):
            start = time.perf_counter()
            reports.append(measure(model, str(tmp / "data"), cache=cache, progress=False))
            times.append(time.perf_counter() - start)
        same = reports[0].rows == reports[1].rows
        print(f"measure on {args.images} images ({model if args.model else 'ViT-B/32-shaped'}):")
        print(f"  first run (embeds, writes cache) {times[0]:8.2f} s")
        print(f"  second run (reads cache)         {times[1]:8.2f} s")
        print(
            f"  speed-up {times[0] / times[1]:.1f}x; identical measures: {same}; "
            f"second run from cache: {reports[1].provenance['from_cache']}"
        )


if __name__ == "__main__":
    main()
