"""Time opening a 100,000-file DomainBed folder against os.walk plus one os.stat per file.

Run: python benchmarks/bench_folders.py [--files N] [--rounds R]
The opener lists folders and stats files but never reads them, so the generated images are
empty files. Also times the embedding cache's dataset fingerprint over the same items and
measures what the opened dataset holds per item. Prints ratios; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from clipgauge.cache import cache_key
from clipgauge.data.folders import from_image_folder

DOMAINS = 4
CLASSES = 50


def make_tree(root: Path, n_files: int) -> int:
    """`<root>/<domain>/<class>/<image>.jpg`, empty files; returns the number written."""
    per_class = max(1, n_files // (DOMAINS * CLASSES))
    for d in range(DOMAINS):
        for c in range(CLASSES):
            folder = root / f"domain_{d}" / f"class_{c:03d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                with open(folder / f"image_{i:06d}.jpg", "wb"):
                    pass
    return DOMAINS * CLASSES * per_class


def walk_and_stat(root: Path) -> int:
    """The floor: list every folder and stat every file once."""
    count = 0
    for current, _, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(current, name))
            count += 1
    return count


def data_cache_key(dataset) -> str:
    """The dataset part of `embed_dataset`'s image cache key (the rest is a few short fields)."""
    return cache_key(kind="images", data=dataset.fingerprint())


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the tree")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-folders-") as tmp:
        root = Path(tmp) / "dataset"
        n = make_tree(root, args.files)
        print(f"{n:,} empty .jpg files, {DOMAINS} domains x {CLASSES} classes, in {root}")
        walk_and_stat(root)  # warm the file system caches for both sides alike
        walks, opens, keys = [], [], []
        for _ in range(args.rounds):
            seconds, count = timed(walk_and_stat, root)
            walks.append(seconds)
            seconds, dataset = timed(from_image_folder, root)
            opens.append(seconds)
            seconds, _ = timed(data_cache_key, dataset)
            keys.append(seconds)
            assert count == len(dataset) == n
            del dataset
        walk, opened, key = (statistics.median(t) for t in (walks, opens, keys))
        print(f"median of {args.rounds} alternating rounds:")
        print(f"  os.walk + os.stat per file   {walk:8.3f} s")
        print(f"  from_image_folder            {opened:8.3f} s   RATIO {opened / walk:.2f}x")
        print(f"  data fingerprint + cache key {key:8.3f} s   RATIO {key / walk:.2f}x")

        tracemalloc.start()
        dataset = from_image_folder(root)
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        path_chars = sum(len(item.path) for item in dataset.items) / n
        print(f"memory (tracemalloc, paths of {path_chars:.0f} characters on average):")
        print(
            f"  the opened dataset holds {held / n:6.0f} bytes per item "
            f"(items, paths, file stats): {held / n * 1e6 / 2**20:,.0f} MiB per million items"
        )
        print(
            f"  peak while opening       {peak / n:6.0f} bytes per item: "
            f"{peak / n * 1e6 / 2**20:,.0f} MiB per million items"
        )


if __name__ == "__main__":
    main()
