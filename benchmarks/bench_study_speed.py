"""What each speed lever of a study buys on world-clip, as ratios measured in this one run.

Run: .venv/bin/python benchmarks/bench_study_speed.py [--per-class 40] [--steps 30]
Levers (each also helps users on their own models):
  1. pixel cache: a task's images rendered (or decoded) and preprocessed once per process
     and shared by every run, instead of once per run and epoch;
  2. frozen image tower: CLIP-Adapter trains on the tower's features, computed once, instead
     of a tower forward pass per image and epoch;
  3. bf16 autocast on the CPU: forward and training-step speed against fp32, with the top-1
     agreement of the bf16 forward with fp32 on the same weights (used only where >= 99%);
  4. worker processes: two runs at once on one thread each against one run on two threads.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time

import torch
import torch.nn.functional as F

from clipgauge.data.open import open_dataset
from clipgauge.embeddings import embed_dataset
from clipgauge.methods import get_method
from clipgauge.methods.clip_adapter import ClipAdapter
from clipgauge.models.loading import load_clip
from clipgauge.pixels import PixelCache
from clipgauge.prompts import templates_for
from clipgauge.training import TrainConfig, finetune


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def pixel_cache(bundle, per_class: int) -> None:
    dataset = open_dataset(f"world:shapes?per_class={per_class}")
    templates = templates_for(None, dataset)
    cache = PixelCache(bundle.image_processor)

    def embed(pixels):
        embed_dataset(bundle, dataset, templates, progress=False, pixel_cache=pixels)

    uncached = seconds(lambda: embed(None))
    seconds(lambda: embed(cache))  # fills the cache
    cached = seconds(lambda: embed(cache))
    n = len(dataset)
    print(f"1. pixel cache, embedding {n} images: {uncached:.2f} s fresh, {cached:.2f} s from the")
    print(f"   cache ({cache.bytes / n / 1024:.0f} KiB per image): ratio {uncached / cached:.2f}x")


def epoch_seconds(result) -> float:
    times = [m["epoch_seconds"] for m in result.metrics if "epoch_seconds" in m]
    return sum(times[1:]) / max(1, len(times) - 1)  # the first epoch pays for set-up


def frozen_tower(per_class: int) -> None:
    config = TrainConfig(epochs=4, batch_size=64, lr=1e-3, val_fraction=0.1)
    data = f"world:shapes?per_class={per_class}&domains=cartoon"
    with tempfile.TemporaryDirectory() as tmp:
        cache_args = {"progress": False, "device": "cpu"}
        frozen = finetune("world-clip", data, None, "clip-adapter", None, config, f"{tmp}/a",
                          **cache_args)  # fmt: skip
        original = ClipAdapter.trains_image_tower
        ClipAdapter.trains_image_tower = lambda self, tuned: True
        try:
            pixels = finetune("world-clip", data, None, "clip-adapter", None, config, f"{tmp}/b",
                              **cache_args)  # fmt: skip
        finally:
            ClipAdapter.trains_image_tower = original
    a, b = epoch_seconds(frozen), epoch_seconds(pixels)
    print(f"2. frozen tower, CLIP-Adapter epoch: {b:.2f} s on pixels, {a:.3f} s on features")
    print(f"   computed once: ratio {b / a:.1f}x per epoch")


@torch.no_grad()
def agreement(model, pixels: torch.Tensor, text: torch.Tensor) -> float:
    def top1(autocast: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model.get_image_features(pixel_values=pixels)
        return (F.normalize(out.pooler_output.float(), dim=-1) @ text.T).argmax(dim=1)

    return float((top1(False) == top1(True)).float().mean())


def bf16(bundle, per_class: int, steps: int) -> None:
    dataset = open_dataset(f"world:shapes?per_class={per_class}")
    templates = templates_for(None, dataset)
    text = embed_dataset(bundle, dataset.subset([0]), templates, progress=False).text_embeds
    processor = bundle.image_processor
    images = [dataset.load_image(i) for i in range(len(dataset))]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    model = bundle.model
    agree = agreement(model, pixels, text)

    def forward(autocast: bool):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for start in range(0, len(pixels), 256):
                model.get_image_features(pixel_values=pixels[start : start + 256])

    fp32, b16 = seconds(lambda: forward(False)), seconds(lambda: forward(True))
    train_fp32, train_b16 = (
        train_steps(bundle, pixels, steps, False),
        train_steps(bundle, pixels, steps, True),
    )
    print(f"3. bf16 autocast, {len(pixels)} images: forward {fp32:.2f} s fp32, {b16:.2f} s bf16"
          f" (ratio {fp32 / b16:.2f}x); top-1 agreement with fp32 {100 * agree:.2f}%")  # fmt: skip
    print(f"   full fine-tuning, {steps} steps of 64: {train_fp32:.2f} s fp32, {train_b16:.2f} s"
          f" bf16 (ratio {train_fp32 / train_b16:.2f}x)")  # fmt: skip


def train_steps(bundle, pixels: torch.Tensor, steps: int, autocast: bool) -> float:
    import copy

    method = get_method("full")
    tuned = method.prepare(copy.deepcopy(bundle.model), method.make_config())
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=1e-5)
    class_embeds = F.normalize(torch.randn(10, bundle.model.config.projection_dim), dim=-1)
    labels = torch.randint(0, 10, (len(pixels),))

    def step(i: int) -> None:
        batch = slice((64 * i) % (len(pixels) - 64), (64 * i) % (len(pixels) - 64) + 64)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = tuned(pixels[batch], class_embeds=class_embeds)
        F.cross_entropy(logits.float(), labels[batch]).backward()
        optimizer.step()
        optimizer.zero_grad()

    step(0)
    return seconds(lambda: [step(i) for i in range(1, steps + 1)])


def _worker(steps: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    bundle = load_clip("world-clip", device="cpu")
    pixels = torch.randn(256, 3, 64, 64)
    queue.put(train_steps(bundle, pixels, steps, False))


def workers(steps: int) -> None:
    context = mp.get_context("spawn")
    queue = context.Queue()

    def run(n: int, threads: int) -> float:
        procs = [context.Process(target=_worker, args=(steps, threads, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        times = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        return max(times)

    one = run(1, 2)  # one run, both cores
    two = run(2, 1)  # two runs at once, a core each
    print(f"4. workers, {steps} full fine-tuning steps per run: one run on 2 threads {one:.2f} s,")
    print(f"   two runs on 1 thread each {two:.2f} s: throughput ratio {2 * one / two:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    bundle = load_clip("world-clip", device="cpu")
    pixel_cache(bundle, args.per_class)
    frozen_tower(args.per_class * 4)
    bf16(bundle, args.per_class, args.steps)
    workers(args.steps)


if __name__ == "__main__":
    main()
