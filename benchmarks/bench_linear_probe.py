"""Cost of a training epoch: linear-probe (and coop) on cached image features vs full
fine-tuning, through the real engine (`clipgauge.training.finetune`).

Run: .venv/bin/python benchmarks/bench_linear_probe.py [--quick] [--images N] [--epochs N]
Model: a ViT-B/32-shaped CLIP with random weights and a word-level tokenizer (224 px, both
towers 12 blocks, widths 768/512); `--quick` a small one. Data: generated colour images, two
classes. `epoch s` is the engine's own `epoch_seconds` (median over epochs); `setup s` is the
wall time outside the epochs (model load, splits, and for frozen-tower methods the one pass
that embeds every training and validation image). Times depend on the machine and its load:
compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

WORDS = "a photo of the cat dog".split()
SHAPES = {
    "vitb32": dict(
        vision_width=768, vision_layers=12, vision_heads=12, image_size=224, patch_size=32,
        text_width=512, text_layers=12, text_heads=8, projection_dim=512, context_length=77,
    ),
    "quick": dict(
        vision_width=128, vision_layers=4, vision_heads=4, image_size=64, patch_size=16,
        text_width=128, text_layers=4, text_heads=4, projection_dim=128, context_length=32,
    ),
}  # fmt: skip


def write_images(root: Path, per_class: int, size: int) -> Path:
    for c, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            shade = 40 + (200 * i) // per_class
            colour = (230, shade, 60) if c == 0 else (60, shade, 230)
            path = root / "photo" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (size, size), colour).save(path)
    return root


def time_method(model_dir: Path, data: Path, method: str, epochs: int, out: Path) -> dict:
    from clipgauge.training import TrainConfig, finetune

    config = TrainConfig(batch_size=16, epochs=epochs, lr=1e-4, val_fraction=0.1)
    options = {"n_ctx": 4} if method == "coop" else {}
    started = time.perf_counter()
    result = finetune(
        str(model_dir), str(data), ["photo"], method, options, config, out / method,
        device="cpu", progress=False,
    )  # fmt: skip
    total = time.perf_counter() - started
    epoch_times = [m["epoch_seconds"] for m in result.metrics if "epoch_seconds" in m]
    return {"epoch_s": statistics.median(epoch_times), "setup_s": total - sum(epoch_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model")
    parser.add_argument("--images", type=int, default=64, help="images per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--methods", default="full,linear-probe,coop")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from clipgauge.models.build import build_clip

    shape = SHAPES["quick" if args.quick else "vitb32"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_clip(tmp / "model", WORDS, **shape)
        data = write_images(tmp / "data", args.images, shape["image_size"])
        rows = {
            name: time_method(model_dir, data, name, args.epochs, tmp / "runs")
            for name in args.methods.split(",")
        }
    print(
        f"{'quick' if args.quick else 'ViT-B/32-shaped'}, {2 * args.images} images, "
        f"{args.epochs} epochs, batch 16, {torch.get_num_threads()} threads, CPU"
    )
    full = rows.get("full", {}).get("epoch_s")
    print(f"{'method':<14}{'epoch s':>9}{'x full':>9}{'setup s':>9}")
    for name, row in rows.items():
        ratio = f"{row['epoch_s'] / full:.4f}" if full else "-"
        print(f"{name:<14}{row['epoch_s']:>9.3f}{ratio:>9}{row['setup_s']:>9.1f}")


if __name__ == "__main__":
    main()
