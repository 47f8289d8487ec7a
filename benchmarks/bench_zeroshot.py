"""Zero-shot classification throughput: clipgauge vs transformers' pipeline, same model, CPU.

Run: .venv/bin/python benchmarks/bench_zeroshot.py [--images 256] [--threads N]
Builds a ViT-B/32-shaped CLIP with random weights (transformers' CLIPConfig defaults, patch 32)
and a folder of generated JPEGs, then classifies every image with both tools and prints
images/second and the ratio, measured in this one run. Predictions are compared too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipgauge.data.folders import from_folder
from clipgauge.embeddings import embed_dataset
from clipgauge.models.build import VIT_B32_SHAPE, build_clip
from clipgauge.models.loading import load_clip

CLASSES = ["cat", "dog", "car", "tree", "house", "boat", "bird", "horse", "plane", "flower"]
TEMPLATE = "a photo of a {}."


def make_images(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        (root / cls).mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(200, 400, size=2)
        arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        path = root / cls / f"{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    return paths


def run_clipgauge(bundle, dataset, batch_size: int, workers: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    emb = embed_dataset(
        bundle,
        dataset,
        [TEMPLATE],
        cache=None,
        batch_size=batch_size,
        num_workers=workers,
        progress=False,
    )
    pred = (emb.image_embeds @ emb.text_embeds.T).argmax(1).numpy()
    return time.perf_counter() - start, pred


def run_pipeline(model_dir: Path, paths: list[str], batch_size: int | None) -> tuple[float, list]:
    from transformers import pipeline

    pipe = pipeline("zero-shot-image-classification", model=str(model_dir), device="cpu")
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    start = time.perf_counter()
    out = pipe(paths, candidate_labels=CLASSES, hypothesis_template=TEMPLATE, **kwargs)
    elapsed = time.perf_counter() - start
    return elapsed, [o[0]["label"] for o in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        words = " ".join(CLASSES + [TEMPLATE.replace("{}", "")]).split()
        model_dir = build_clip(
            tmp / "vit-b-32",
            words,
            **VIT_B32_SHAPE,
        )
        paths = make_images(tmp / "images", args.images)
        bundle = load_clip(str(model_dir), device="cpu")
        dataset = from_folder(tmp / "images")
        order = {p: i for i, p in enumerate(it.path for it in dataset.items)}
        run_clipgauge(bundle, dataset.subset(range(8)), 8, 0)  # warm-up

        rows = []
        t, pred_ours = run_clipgauge(bundle, dataset, 32, 0)
        rows.append(("clipgauge (batch 32, no worker)", t))
        t, _ = run_clipgauge(bundle, dataset, 32, 1)
        rows.append(("clipgauge (batch 32, 1 worker)", t))
        t_default, pred_pipe = run_pipeline(model_dir, paths, None)
        rows.append(("pipeline (default batch)", t_default))
        t, _ = run_pipeline(model_dir, paths, 32)
        rows.append(("pipeline (batch 32)", t))

        agree = np.mean(
            [
                dataset.class_names[pred_ours[order[str(Path(p).resolve())]]] == q
                for p, q in zip(paths, pred_pipe, strict=True)
            ]
        )
        n = args.images
        print(
            f"zero-shot classification, ViT-B/32-shaped random CLIP, {n} images, "
            f"{len(CLASSES)} classes, CPU, {args.threads} threads"
        )
        print(f"{'tool':34s} {'seconds':>8s} {'img/s':>8s} {'vs pipeline default':>20s}")
        for name, secs in rows:
            print(f"{name:34s} {secs:8.2f} {n / secs:8.1f} {t_default / secs:19.2f}x")
        print(f"top-1 agreement clipgauge vs pipeline: {agree:.3f}")


if __name__ == "__main__":
    main()
