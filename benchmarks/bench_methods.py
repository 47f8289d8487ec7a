"""Cost of one training step per fine-tuning method: time, trainable parameters, optimiser
state and peak memory, side by side with the ratio to `full`.

Run: .venv/bin/python benchmarks/bench_methods.py [--quick] [--model PATH] [--threads N]
Models: a ViT-B/32-shaped CLIP with random weights (transformers' CLIPConfig defaults, patch
32), and optionally `--model PATH` (any HF CLIP folder, e.g. world-clip). Each step is the
training engine's step: class-prompt logits, cross-entropy, backward, AdamW. Text features are
recomputed per step only when the method trains the text side, as in the engine.

Each (model, method) runs in its own subprocess so peak memory (ru_maxrss) is per method:
`peak` is the process's peak RSS, `train+` the growth of that peak once training starts
(gradients, optimiser state, activations) over the peak after building the model.
`--quick` uses a smaller model and fewer steps, to check that the script works.
Times depend on the machine and its load: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

BATCH = 32
NUM_CLASSES = 10
PROMPT_LENGTH = 16


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build_model(spec: str):
    from transformers import CLIPConfig, CLIPModel

    if spec == "vitb32":
        return CLIPModel(CLIPConfig(vision_config={"patch_size": 32})), 224
    if spec == "quick":
        width = {"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4}
        config = CLIPConfig(
            vision_config={**width, "num_hidden_layers": 4, "patch_size": 32},
            text_config={
                **width,
                "num_hidden_layers": 4,
                "vocab_size": 1000,
                "bos_token_id": 998,
                "eos_token_id": 999,
            },
            projection_dim=256,
        )
        return CLIPModel(config), 224
    from clipgauge.models.loading import named_models

    model = CLIPModel.from_pretrained(named_models().get(spec, spec))
    return model, int(model.config.vision_config.image_size)


def worker(spec: str, method_name: str, warmup: int, steps: int, batch: int) -> dict:
    """One method on one model: the numbers for one table row."""
    from clipgauge.encoding import ClassPrompts
    from clipgauge.methods import count_parameters, get_method

    torch.manual_seed(0)
    model, image_size = build_model(spec)
    base_peak = peak_rss_mb()
    method = get_method(method_name)
    tuned = method.prepare(model, method.make_config()).train()
    trainable, total = count_parameters(tuned)
    text = model.config.text_config
    input_ids = torch.randint(0, text.vocab_size, (NUM_CLASSES, PROMPT_LENGTH))
    input_ids[:, -1] = text.eos_token_id
    prompts = ClassPrompts(input_ids, torch.ones_like(input_ids), 1, NUM_CLASSES)
    pixels = torch.randn(batch, 3, image_size, image_size)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    row = {"trainable": trainable, "total": total, "base_peak_mb": base_peak}
    params = [p for p in tuned.parameters() if p.requires_grad]
    # Heads and learned prompts need a real task (tokenizer, class names): see
    # bench_linear_probe.py, which times them through the engine.
    if not params or tuned.class_encoder is not None:
        return {**row, "step_s": None, "optim_bytes": 0, "peak_mb": peak_rss_mb()}
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    trains_text = method.trains_text_tower(tuned)
    with torch.no_grad():
        fixed = None if trains_text else tuned.encode_classes(prompts)

    def step() -> None:
        if trains_text:
            logits = tuned(pixels, prompts=prompts)
        else:
            logits = tuned(pixels, class_embeds=fixed)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    optim_bytes = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor)
    )
    return {
        **row,
        "step_s": statistics.median(times),
        "optim_bytes": optim_bytes,
        "peak_mb": peak_rss_mb(),
    }


def ratio(value, reference) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.3f}"


def print_table(title: str, rows: dict[str, dict]) -> None:
    full = rows.get("full", {})
    print(f"\n{title}")
    header = (
        f"{'method':<13}{'s/step':>8}{'xfull':>7}{'trainable':>13}{'xfull':>7}"
        f"{'AdamW MB':>10}{'xfull':>7}{'peak MB':>9}{'train+ MB':>10}{'xfull':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        grow = r["peak_mb"] - r["base_peak_mb"]
        full_grow = full.get("peak_mb", 0) - full.get("base_peak_mb", 0)
        step = "-" if r["step_s"] is None else f"{r['step_s']:.3f}"
        optim = ratio(r["optim_bytes"], full.get("optim_bytes"))
        print(
            f"{name:<13}{step:>8}{ratio(r['step_s'], full.get('step_s')):>7}"
            f"{r['trainable']:>13,}{ratio(r['trainable'], full.get('trainable')):>7}"
            f"{r['optim_bytes'] / 2**20:>10.1f}{optim:>7}"
            f"{r['peak_mb']:>9.0f}{grow:>10.0f}{ratio(grow, full_grow):>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer steps")
    parser.add_argument("--model", default=None, help="also benchmark this HF CLIP folder")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2/1)")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        row = worker(*args.worker, warmup=warmup, steps=steps, batch=args.batch_size)
        print(json.dumps(row))
        return

    from clipgauge.methods import method_names

    names = args.methods.split(",") if args.methods else method_names()
    specs = ["quick" if args.quick else "vitb32"] + ([args.model] if args.model else [])
    print(
        f"batch {args.batch_size}, {warmup} warm-up + {steps} timed steps (median), "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, CPU"
    )
    for spec in specs:
        rows = {}
        for name in names:
            command = [sys.executable, __file__, "--worker", spec, name]
            command += ["--steps", str(steps), "--warmup", str(warmup)]
            command += ["--batch-size", str(args.batch_size)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{spec} / {name} failed:\n{done.stderr[-2000:]}")
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        title = {"vitb32": "ViT-B/32-shaped, random weights", "quick": "quick: small CLIP"}
        print_table(title.get(spec, spec), rows)


if __name__ == "__main__":
    main()
