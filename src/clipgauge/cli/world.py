"""`clipgauge world ...`: list tasks, export folders, draw a sample grid, pretrain world-clip."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from clipgauge import DEFAULT_MODEL
from clipgauge.cli.options import add_cache_options, cache_arg


def _write_json(path: str, payload: dict) -> None:
    from clipgauge.cache import atomic_write_bytes

    atomic_write_bytes(Path(path), json.dumps(payload, indent=2).encode())


def cmd_tasks(args) -> int:
    from clipgauge.world.tasks import load_tasks

    tasks = load_tasks()
    for task in tasks.values():
        print(f"{task.name:10s} {task.attribute:9s} domains: {', '.join(task.domains)}")
        print(f"{'':10s} classes ({len(task.classes)}): {', '.join(task.classes)}")
        print(f"{'':10s} templates: {', '.join(repr(t) for t in task.templates)}")
    if args.json:
        payload = {name: task.to_dict() for name, task in tasks.items()}
        _write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


def cmd_export(args) -> int:
    from clipgauge.world.export import export_world

    out = export_world(
        args.task, args.per_class, args.out, split=args.split, seed=args.seed, size=args.size
    )
    print(f"wrote {args.task} ({args.split}, {args.per_class} per class and domain) to {out}")
    return 0


def cmd_show(args) -> int:
    from clipgauge.world.export import render_grid

    out = render_grid(args.out, per_domain=args.per_domain, seed=args.seed, size=args.size)
    print(f"wrote {out}")
    return 0


def cmd_pretrain(args) -> int:
    from clipgauge.world.pretrain import PretrainConfig, pretrain

    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(PretrainConfig)
        if getattr(args, f.name, None) is not None
    }
    cfg = PretrainConfig(**overrides)
    out = pretrain(cfg, args.out, progress=not args.no_progress)
    record = json.loads((out / "pretraining.json").read_text())
    print(
        f"wrote {out}: {record['parameters']:,} parameters, {cfg.steps} steps in "
        f"{record['seconds'] / 60:.1f} min, final loss {record['final_loss']:.3f}"
    )
    return 0


def cmd_zeroshot(args) -> int:
    from clipgauge.world.zeroshot import markdown_table, world_zeroshot

    reports = world_zeroshot(
        args.model,
        per_class=args.per_class,
        seed=args.seed,
        cache=cache_arg(args),
        progress=not args.no_progress,
    )
    print(markdown_table(reports))
    if args.json:
        payload = {task: report.to_dict() for task, report in reports.items()}
        _write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


def add_commands(subparsers) -> None:
    """Register `clipgauge world <tasks|export|show|pretrain|zeroshot>`."""
    world = subparsers.add_parser("world", help="the embedded procedural image world")
    sub = world.add_subparsers(dest="world_command", required=True)

    p = sub.add_parser("tasks", help="list every world task with its classes and domains")
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("export", help="write a task's images as PNGs in the DomainBed layout")
    p.add_argument("--task", required=True)
    p.add_argument("--per-class", type=int, default=50, help="images per class and domain")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("show", help="draw a grid of samples, one row per domain")
    p.add_argument("--out", required=True)
    p.add_argument("--per-domain", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("pretrain", help="pretrain world-clip from scratch on world captions")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=None, help="default 0 (the shipped model)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--vision-mlp-width",
        dest="vision_mlp_width",
        type=int,
        default=None,
        help="hidden units of the image tower's MLPs (default 256, as shipped; CLIP: 4 x width)",
    )
    p.add_argument(
        "--primer-steps",
        dest="primer_steps",
        type=int,
        default=None,
        help="steps with the text tower locked at the start (default 250; 0: no primer)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("zeroshot", help="measure a model on every world task and domain")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    add_cache_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_zeroshot)
