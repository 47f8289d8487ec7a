"""Rendering speed of the procedural world on one core: images/second per domain and overall.

Run: .venv/bin/python benchmarks/bench_world.py [--images 2000] [--size 64] [--repeats 3]
Times what a dataset item costs (per-image seeding, scene sampling, rendering to a uint8 array)
for every domain, then the pretraining stream (images plus captions) and the dataset loader
(which also converts to a PIL image). Single process, single thread; the best of `repeats` runs
is shown, since other work on the machine only ever slows a run down. Nothing is asserted.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from clipgauge.world import (  # noqa: E402
    domain_names,
    pretraining_stream,
    render_task_image,
    world_dataset,
)
from clipgauge.world.shapes import all_templates  # noqa: E402

TARGET = 2000  # images/second on one core at 64x64, the design goal


def best_rate(run: Callable[[], int], repeats: int) -> float:
    """Highest images/second over `repeats` calls of `run` (which returns how many it made)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images per timed run")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, size = args.images, args.size

    all_templates()  # built once per process; not part of the per-image cost
    render_task_image("shapes", "test", "photo", 0, 0, size=size)

    print(f"world rendering, {size}x{size}, one core, best of {args.repeats} x {n:,} images")
    header = f"{'what':<28} {'images/s':>9} {'vs 2,000/s':>11}"
    print(header)
    print("-" * len(header))
    rates = []
    for domain in domain_names():

        def run(domain: str = domain) -> int:
            for i in range(n):
                render_task_image("shapes", "test", domain, i % 10, i, seed=0, size=size)
            return n

        rate = best_rate(run, args.repeats)
        rates.append(rate)
        print(f"{'render ' + domain:<28} {rate:>9,.0f} {rate / TARGET:>10.2f}x")
    overall = len(rates) / sum(1 / r for r in rates)  # equal numbers of images per domain
    print(f"{'render, all domains':<28} {overall:>9,.0f} {overall / TARGET:>10.2f}x")

    batch = 250

    def stream() -> int:
        batches = pretraining_stream(seed=0, batch_size=batch, size=size)
        for _ in range(n // batch):
            next(batches)
        return n // batch * batch

    rate = best_rate(stream, args.repeats)
    print(f"{'pretraining stream + caption':<28} {rate:>9,.0f} {rate / TARGET:>10.2f}x")

    dataset = world_dataset("colours", per_class=max(1, n // 30), size=size)

    def load() -> int:
        for i in range(len(dataset)):
            dataset.load_image(i)
        return len(dataset)

    rate = best_rate(load, args.repeats)
    print(f"{'dataset loader (PIL image)':<28} {rate:>9,.0f} {rate / TARGET:>10.2f}x")


if __name__ == "__main__":
    main()
