"""Can world-clip's image tower learn a task at all? A supervised check, domain by domain.

Usage: python benchmarks/probe_supervised.py [--task shapes] [--domains cartoon photo] [--steps 300]
       [--test-domains photo]

Trains the vision tower of an untrained world-clip (the `PretrainConfig` defaults: same size,
same sine-cosine position start) plus a linear head with cross-entropy on the task's train split
in the given domains, and prints test accuracy (held-out test split; the same domains unless
--test-domains names others) every 100 steps. One core, batch 64: about 45 s per 100 steps.
It tells what the image tower can learn from labels alone apart from what captions and the text
tower teach it in contrastive pretraining.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from probe_world import images

from clipgauge.world.dataset import render_task_image
from clipgauge.world.pretrain import PretrainConfig, _pixels, initial_model
from clipgauge.world.tasks import get_task


def batch(task, split: str, domains, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n training images cycling through classes and domains, from index `start` of the split."""
    labels = [(start + i) % len(task.classes) for i in range(n)]
    images = [
        render_task_image(
            task,
            split,
            domains[(start + i) // len(task.classes) % len(domains)],
            c,
            (start + i) // (len(task.classes) * len(domains)),
        )
        for i, c in enumerate(labels)
    ]
    return _pixels(np.stack(images)), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="shapes")
    parser.add_argument("--domains", nargs="+", default=["cartoon"])
    parser.add_argument("--test-domains", nargs="+", help="default: the training domains")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    test_domains = args.test_domains or args.domains
    unknown = sorted(set(args.domains + test_domains) - set(task.domains))
    if unknown:
        raise SystemExit(f"domains {unknown} are not rendered for {args.task} ({task.domains})")
    cfg = PretrainConfig()
    tower = initial_model(cfg)[0].vision_model
    head = torch.nn.Linear(cfg.vision_width, len(task.classes))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=args.lr)
    x_test, y_test = images(
        task, "test", 400 // (len(task.classes) * len(test_domains)), test_domains
    )
    x_test, y_test = _pixels(x_test), torch.from_numpy(y_test)
    print(
        f"{args.task}: trained on {args.domains}, tested on {test_domains}, "
        f"chance {1 / len(task.classes):.3f}"
    )
    seconds = 0.0
    for step in range(args.steps + 1):
        x, y = batch(task, "train", args.domains, step * args.batch, args.batch)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(tower(pixel_values=x).pooler_output), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % 100 == 0:
            with torch.no_grad():
                hits = head(tower(pixel_values=x_test).pooler_output).argmax(1) == y_test
            print(
                f"  step {step:4d}  loss {loss.item():.3f}  test accuracy "
                f"{hits.float().mean().item():.3f}  ({seconds:.0f} s training)",
                flush=True,
            )


if __name__ == "__main__":
    main()
