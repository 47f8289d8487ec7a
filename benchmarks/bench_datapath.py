"""Does the data path keep the model busy? Loader images/s per worker count against the model's.

Run: .venv/bin/python benchmarks/bench_datapath.py [--images 500] [--batch 128]
         [--accelerator-images-per-second 3000] [--training]

On a generated folder of camera-sized JPEGs (half 500 x 375, half 1024 x 768: world images
upscaled, so world-clip can classify them) it prints
  1. the loader alone (decode + the model's own processor, batches of --batch, draft decoding
     as shipped) in images/s with 0, 1 and 2 workers, for a ViT-B/32 processor (224 px: these
     sizes are too small to draft for it) and world-clip's (64 px);
  2. reduced-scale (draft) JPEG decoding against a full decode: loader speed, and world-clip's
     zero-shot top-1 agreement on every image;
  3. the bare model at the same batch: forward and forward+backward images/s of a ViT-B/32-shaped
     CLIP with random weights and of world-clip, on this CPU, and how many loader workers it
     takes to keep up with each;
  4. the cores an accelerator needs at --accelerator-images-per-second (an assumed figure, not
     measured here), from the loader's images/s per worker;
  5. with --training: seconds per training epoch on world data (world-clip preset) with
     num_workers 0, 1 and 2 on this CPU.
The frozen-tower saving (features computed once instead of per epoch) is measured by
benchmarks/bench_study_speed.py (lever 2).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from clipgauge import pixels
from clipgauge.data.open import open_dataset
from clipgauge.embeddings import embed_dataset
from clipgauge.models.build import VIT_B32_SHAPE, new_clip
from clipgauge.models.loading import load_clip
from clipgauge.training.engine import LabelledPixels
from clipgauge.training.finetuning import finetune

SIZES = ((500, 375), (1024, 768))
# Assumed, not measured: an H100-class GPU's order of magnitude for ViT-B/32 forward+backward
# in bf16 at batch 128-256 (a few thousand images/s). Give your own with the option.
ASSUMED_ACCELERATOR_IPS = 3000.0


def write_jpegs(root: Path, count: int) -> None:
    per_class = math.ceil(count / 40)  # world shapes: 10 classes x 4 domains per `per_class`
    source = open_dataset(f"world:shapes?per_class={per_class}")
    for i in range(count):
        item = source.items[i * len(source) // count]
        path = root / source.class_names[item.label] / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = source.load_image(i * len(source) // count)
        image.resize(SIZES[i % 2], Image.BICUBIC).save(path, quality=90)


def loader_ips(dataset, processor, workers: int, batch: int, limit: int) -> float:
    subset = dataset.subset(range(min(limit, len(dataset))))
    loader = torch.utils.data.DataLoader(
        LabelledPixels(subset, processor), batch_size=batch, num_workers=workers
    )
    started = time.perf_counter()
    for _ in loader:
        pass
    return len(subset) / (time.perf_counter() - started)


def model_ips(model, size: int, batch: int) -> tuple[float, float]:
    """(forward, forward+backward) images/s of the image tower on random pixels, one batch."""
    pixels_in = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        started = time.perf_counter()
        model.get_image_features(pixel_values=pixels_in)
        forward = batch / (time.perf_counter() - started)
    started = time.perf_counter()
    out = model.get_image_features(pixel_values=pixels_in)
    out = out if torch.is_tensor(out) else out.pooler_output
    out.float().square().mean().backward()
    backward = batch / (time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    return forward, backward


def draft_agreement(dataset, bundle, batch: int, limit: int) -> tuple[float, float, float]:
    """(world-clip zero-shot top-1 agreement, loader images/s with a full decode, with draft
    decoding), the loader in the main process."""
    top1, speed = {}, {}
    for factor in (None, pixels.JPEG_DRAFT_FACTOR or 3):
        pixels.JPEG_DRAFT_FACTOR = factor
        speed[factor] = loader_ips(dataset, bundle.image_processor, 0, batch, limit)
        emb = embed_dataset(bundle, dataset, ["a {}."], progress=False, num_workers=0)
        top1[factor] = (emb.image_embeds @ emb.text_embeds.T).argmax(dim=1)
    (full, draft), (full_ips, draft_ips) = top1.values(), speed.values()
    return float((full == draft).float().mean()), full_ips, draft_ips


def loaders(dataset, processors: dict, batch: int, limit: int) -> dict:
    """Images/s per (processor name, workers)."""
    table = {}
    for name, processor in processors.items():
        row = [loader_ips(dataset, processor, w, batch, limit) for w in (0, 1, 2)]
        table[name] = row
        print(f"   {name:9s} " + "  ".join(f"{w} workers {ips:7.1f}" for w, ips in enumerate(row)))
    return table


def training_epochs(per_class: int) -> None:
    data = f"world:shapes?per_class={per_class}&domains=cartoon"
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (0, 1, 2):
            options = {"epochs": 2, "num_workers": workers}
            result = finetune("world-clip", data, None, "full", None, options, f"{tmp}/{workers}",
                              progress=False, device="cpu")  # fmt: skip
            seconds = result.metrics[-1]["epoch_seconds"]  # the second: workers already started
            print(f"   num_workers {workers}: {seconds:.2f} s per epoch (full, world-clip preset)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--loader-images", type=int, default=256, help="images per loader timing")
    parser.add_argument(
        "--accelerator-images-per-second",
        type=float,
        default=ASSUMED_ACCELERATOR_IPS,
        help="ViT-B/32 forward+backward throughput of the accelerator (default: an assumption "
        "for an H100-class GPU, not a measurement)",
    )
    parser.add_argument("--training", action="store_true", help="also time training epochs")
    args = parser.parse_args()
    torch.manual_seed(0)
    world = load_clip("world-clip", device="cpu")
    vit_model, _, vit_processor = new_clip(["photo"], **VIT_B32_SHAPE)
    processors = {"ViT-B/32": vit_processor, "world-clip": world.image_processor}
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        dataset = open_dataset(tmp)
        print(f"{len(dataset)} JPEGs ({' and '.join(f'{w}x{h}' for w, h in SIZES)}), "
              f"{torch.get_num_threads()} threads, batch {args.batch}")  # fmt: skip
        print("1. loader alone (decode + processor), images/s:")
        table = loaders(dataset, processors, args.batch, args.loader_images)
        factor = pixels.JPEG_DRAFT_FACTOR
        agree, full, draft = draft_agreement(dataset, world, args.batch, args.loader_images)
    print(f"2. draft JPEG decoding (factor {factor}), world-clip loader (64 px, 0 workers): "
          f"{full:.1f} images/s full decode, {draft:.1f} draft: {draft / full:.2f}x;\n"
          f"   zero-shot top-1 agreement {100 * agree:.2f}% of {len(dataset)} images")  # fmt: skip
    print("3. bare model at the same batch on this CPU, images/s (workers to keep up):")
    for name, model, size in (("ViT-B/32", vit_model, 224), ("world-clip", world.model, 64)):
        per_worker = table[name][1]
        forward, backward = model_ips(model, size, args.batch)
        print(f"   {name:9s} forward {forward:8.1f} ({math.ceil(forward / per_worker)}), "
              f"forward+backward {backward:8.1f} ({math.ceil(backward / per_worker)})")  # fmt: skip
    target, per_worker = args.accelerator_images_per_second, table["ViT-B/32"][1]
    print(f"4. ASSUMED accelerator at {target:.0f} ViT-B/32 images/s (not measured): "
          f"{math.ceil(target / per_worker)} loader workers of this CPU's speed "
          f"({per_worker:.1f} images/s each at 224 px) to keep it busy")  # fmt: skip
    if args.training:
        print("5. training epochs on this CPU:")
        training_epochs(per_class=40)


if __name__ == "__main__":
    main()
