"""Why world-clip's pretraining starts with a primer: does position emerge with the text locked?

Usage: python benchmarks/probe_primer.py [--steps 450] [--primer 250] [--batch 64] [--run joint]

Trains a small CLIP from scratch (world-clip's architecture) on the primer's data only: one or
two objects per image, captions that always name the position (colour at its usual odds,
nothing else). Two runs, from the same initial weights and batches:

- `joint`: both towers train from step 0, as plain CLIP pretraining does;
- `primer`: the text tower stays at its random start for the first `--primer` steps (the
  primer of `clipgauge world pretrain`), then both towers train.

Every 50 steps it prints the zero-shot accuracy on the `positions` task (300 test images over all
four domains, the task's own prompts) and the mean pairwise cosine of the five position prompts
in the text tower. A cosine near 1 means the text tower ignores the position words.

Measured (docs/world-clip.md): `joint` shows the collapse (cosine 0.95 -> 1.0000 by step
100, positions at chance). At this small scale `primer` does not recover position either; in
full pretraining (batch 128, then the main mix) the same primer does.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from probe_world import images

from clipgauge.embeddings import features
from clipgauge.world.pretrain import (
    PretrainConfig,
    _pixels,
    initial_model,
    make_optimizer,
    primer_stream,
    train_step,
)
from clipgauge.world.tasks import get_task


def test_set(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    task = get_task("positions")
    pixels, labels = images(task, "test", per_class, task.domains)
    return _pixels(pixels), torch.from_numpy(labels)


def unit(output) -> torch.Tensor:
    return torch.nn.functional.normalize(features(output), dim=-1)


@torch.no_grad()
def evaluate(model, tokenizer, pixels, labels) -> tuple[float, float]:
    model.eval()
    prompts = get_task("positions").prompts()
    text = unit(model.get_text_features(**tokenizer(prompts, padding=True, return_tensors="pt")))
    image = unit(model.get_image_features(pixel_values=pixels))
    accuracy = ((image @ text.T).argmax(1) == labels).float().mean().item()
    cosine = (text @ text.T)[~torch.eye(len(prompts), dtype=torch.bool)].mean().item()
    model.train()
    return accuracy, cosine


def run(name: str, locked_steps: int, cfg: PretrainConfig, steps: int, test) -> None:
    model, tokenizer, _ = initial_model(cfg)
    text_params = [p for n, p in model.named_parameters() if n.startswith("text_")]
    optimizer = make_optimizer(model, cfg)
    stream = primer_stream(cfg)
    start = time.perf_counter()
    for step in range(steps + 1):
        if step % 50 == 0:
            accuracy, cosine = evaluate(model, tokenizer, *test)
            print(
                f"{name:12s} step {step:4d}  positions zero-shot {accuracy:.3f}  "
                f"prompt cosine {cosine:.4f}  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        if step == steps:
            break
        for p in text_params:
            p.requires_grad_(step >= locked_steps)
        images, captions = next(stream)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        train_step(model, tokenizer, optimizer, images, captions, lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--primer", type=int, default=250, help="steps with the text locked")
    parser.add_argument("--run", choices=["joint", "primer", "both"], default="both")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=15, help="test images per class/domain")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(PretrainConfig(), batch_size=args.batch, warmup_steps=50)
    test = test_set(args.per_class)
    if args.run in ("joint", "both"):
        run("joint", 0, cfg, args.steps, test)
    if args.run in ("primer", "both"):
        run("primer", args.primer, cfg, args.steps, test)


if __name__ == "__main__":
    main()
