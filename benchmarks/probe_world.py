"""What a model's towers encode about one world task: linear probes and prompt similarity.

Usage: python benchmarks/probe_world.py [--model world-clip] [--task positions] [--per-class 150]

Prints the test accuracy of a logistic-regression probe trained on the task's train split
(photo and cartoon) for: downsampled raw pixels, the projected image embedding, the pooled
class token, the mean patch token of the last layer, and a subsample of all last-layer patch
tokens; then the mean pairwise cosine of the task's class prompts in the text tower. A probe at
chance on the image embedding while the patch tokens score high means the pooled embedding
drops the attribute; prompts with cosine near 1 mean the text tower ignores the class words.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from clipgauge.embeddings import features
from clipgauge.models.loading import load_clip
from clipgauge.world.dataset import render_task_image
from clipgauge.world.pretrain import _pixels
from clipgauge.world.tasks import get_task

DOMAINS = ("photo", "cartoon")


def images(task, split: str, per_class: int, domains=DOMAINS) -> tuple[np.ndarray, np.ndarray]:
    pairs = [
        (render_task_image(task, split, d, c, i), c)
        for d in domains
        for c in range(len(task.classes))
        for i in range(per_class)
    ]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@torch.no_grad()
def vision_features(model, batch: np.ndarray) -> dict[str, np.ndarray]:
    out = model.vision_model(pixel_values=_pixels(batch), output_hidden_states=True)
    last = out.hidden_states[-1][:, 1:]
    return {
        "image embedding": model.visual_projection(out.pooler_output).numpy(),
        "pooled class token": out.pooler_output.numpy(),
        "mean patch token": last.mean(1).numpy(),
        "patch tokens (1 in 8)": last.reshape(len(batch), -1)[:, ::8].numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="world-clip")
    parser.add_argument("--task", default="positions")
    parser.add_argument("--per-class", type=int, default=150, help="train images per class/domain")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_clip(args.model, device="cpu")
    model = bundle.model.eval()
    task = get_task(args.task)
    if model.config.vision_config.image_size != 64:
        raise SystemExit("this probe renders 64x64 world images; the model takes another size")
    x_train, y_train = images(task, "train", args.per_class)
    x_test, y_test = images(task, "test", max(args.per_class // 4, 10))

    def probe(a: np.ndarray, b: np.ndarray) -> float:
        clf = LogisticRegression(max_iter=2000).fit(a, y_train)
        return clf.score(b, y_test)

    print(
        f"{args.task} on {args.model}: {len(x_train)} train / {len(x_test)} test images, "
        f"chance {1 / len(task.classes):.3f}"
    )
    pixels = [x[:, ::4, ::4].reshape(len(x), -1) / 255.0 for x in (x_train, x_test)]
    print(f"  probe on raw pixels (16x16):        {probe(*pixels):.3f}")
    train_f, test_f = vision_features(model, x_train), vision_features(model, x_test)
    for name in train_f:
        print(f"  probe on {name + ':':<27} {probe(train_f[name], test_f[name]):.3f}")
    prompts = [task.templates[0].format(c) for c in task.classes]  # the first (one-object) prompt
    tokens = bundle.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = features(model.get_text_features(**tokens))
    text = torch.nn.functional.normalize(text, dim=-1)
    sims = (text @ text.T).numpy()
    n = len(prompts)
    print(f"  mean pairwise cosine of the {n} class prompts: {(sims.sum() - n) / (n * n - n):.4f}")


if __name__ == "__main__":
    main()
