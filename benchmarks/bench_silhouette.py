"""Time clipgauge's cosine silhouette against scikit-learn's on random clustered embeddings.

Run: python benchmarks/bench_silhouette.py [--quick]
Prints ratios and differences; timings depend on the machine, so nothing here is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import silhouette_score

from clipgauge.measures import silhouette

DIM = 512
N_CLUSTERS = 10


def clustered_embeddings(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 points scattered around N_CLUSTERS random centres, like per-class embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLUSTERS, DIM), dtype=np.float32)
    labels = rng.integers(0, N_CLUSTERS, n)
    points = rng.standard_normal((n, DIM), dtype=np.float32)
    points += centres[labels]
    return points, labels


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(fastest wall time in seconds, result) over `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip N = 20,000 and N = 1,000,000")
    args = parser.parse_args()
    sizes = [2_000, 10_000] if args.quick else [2_000, 10_000, 20_000]

    print(f"cosine silhouette, D = {DIM}, {N_CLUSTERS} clusters, float32 input")
    header = f"{'N':>10} {'clipgauge s':>12} {'sklearn s':>10} {'speed-up':>9} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        X, labels = clustered_embeddings(n)
        ours, ours_value = best_time(lambda X=X, labels=labels: silhouette(X, labels), repeats=5)
        theirs, their_value = best_time(
            lambda X=X, labels=labels: silhouette_score(X, labels, metric="cosine"), repeats=1
        )
        diff = abs(ours_value - their_value)
        print(f"{n:>10,} {ours:>12.4f} {theirs:>10.2f} {theirs / ours:>8.0f}x {diff:>11.1e}")
    if not args.quick:
        n = 1_000_000
        X, labels = clustered_embeddings(n)
        ours, _ = best_time(lambda: silhouette(X, labels), repeats=1)
        print(f"{n:>10,} {ours:>12.4f} {'n/a':>10} {'n/a':>9} {'n/a':>11}")


if __name__ == "__main__":
    main()
