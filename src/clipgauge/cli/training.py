"""`clipgauge finetune | evaluate | export | methods`: thin argparse layer over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

from clipgauge import DEFAULT_MODEL
from clipgauge.cli.options import (
    DATA_HELP,
    DTYPE_CHOICES,
    MODEL_HELP,
    TEMPLATE_HELP,
    add_cache_options,
    cache_arg,
    csv_list,
    key_value,
    template_arg,
)
from clipgauge.training.config import TrainConfig


def _warmup(text: str) -> dict:
    """`--warmup 100` is 100 steps; `--warmup 0.1` is 10% of all steps."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--warmup {text!r} is not a number") from None
    if 0 <= value < 1:
        return {"warmup_ratio": value}
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"--warmup {text}: give whole steps or a fraction < 1")
    return {"warmup_steps": int(value)}


def cmd_finetune(args) -> int:
    from clipgauge.training.finetuning import finetune

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    overrides.update(args.warmup or {})
    result = finetune(
        args.model,
        args.data,
        args.train_domains,
        args.method,
        dict(args.method_opt or []),
        overrides,
        args.out,
        template_arg(args.template),
        resume=args.resume,
        preset=args.preset,
        split=args.split,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        device=args.device,
        dtype=args.dtype,
        keep_checkpoint=args.keep_checkpoint,
        progress=not args.no_progress,
    )
    val = result.best_val_accuracy
    print(
        f"{result.method}: {result.trainable_parameters:,} trained parameters, "
        f"{result.steps} steps, best epoch {result.best_epoch}"
        + (f" (val acc {val:.4f})" if val is not None else "")
    )
    print(f"wrote {result.run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from clipgauge.training.evaluate import evaluate_run

    report = evaluate_run(
        args.run,
        args.data,
        domains=args.domains,
        split=args.split,
        templates=template_arg(args.template),
        cache=cache_arg(args),
        device=args.device,
        model=args.model,
        wise_alpha=args.wise_alpha,
        batch_size=args.batch_size,
        num_workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    print(report.table())
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    return 0


def cmd_export(args) -> int:
    from clipgauge.training.export import export_run

    out = export_run(
        args.run, args.out, wise_alpha=args.wise_alpha, device=args.device, fmt=args.format
    )
    loads = "open_clip:" + str(out) if (out / "open_clip_config.json").is_file() else str(out)
    print(f"wrote {out} (clipgauge loads it as --model {loads})")
    return 0


def cmd_methods(args) -> int:
    from clipgauge.methods import get_method, parameter_counts
    from clipgauge.models.loading import load_clip

    bundle = load_clip(args.model, device="cpu")
    counts = parameter_counts(bundle.model.config)
    header = f"{'method':<14}{'trainable':>14}{'total':>14}{'share':>9}  trains"
    print(header)
    print("-" * len(header))
    for name, row in counts.items():
        share = row["trainable"] / row["total"]
        print(
            f"{name:<14}{row['trainable']:>14,}{row['total']:>14,}{share:>9.2%}  "
            f"{get_method(name).description}"
        )
    if args.json:
        from clipgauge.cache import atomic_write_bytes

        atomic_write_bytes(Path(args.json), json.dumps(counts, indent=2).encode())
        print(f"wrote {args.json}")
    return 0


def _argument_type(kind):
    """The argparse type of a TrainConfig field (Optional[X] -> X)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def add_train_config_options(group) -> None:
    """One option per TrainConfig field (`--max-steps` for max_steps), from its metadata.

    Every default is None, so only what the user gives overrides the preset."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name.replace('_', '-')}", *f.metadata.get("aliases", ())]
        shown = f.default if f.default is not None else "none"
        group.add_argument(
            *flags,
            dest=f.name,
            type=_argument_type(hints[f.name]),
            choices=f.metadata.get("choices"),
            default=None,
            help=f"{f.metadata['help']} (TrainConfig default: {shown})",
        )


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune CLIP with a method; writes a run folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument(
        "--device",
        default=None,
        help="cpu forces the CPU; by default accelerate places the model (GPU if any; "
        "`accelerate launch` for several)",
    )
    p.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument(
        "--train-domains",
        type=csv_list,
        default=None,
        help="comma-separated domains to train on (default: all)",
    )
    p.add_argument("--method", required=True, help="method name (`clipgauge methods` lists them)")
    p.add_argument(
        "--method-opt",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="method option, repeatable (e.g. rank=8, towers=image, blocks=6-11)",
    )
    p.add_argument("--template", action="append", default=None, help=TEMPLATE_HELP)
    g = p.add_argument_group("training (default: the preset's, else TrainConfig's)")
    g.add_argument(
        "--preset",
        default="auto",
        help="named defaults from presets.yaml: world-clip, paper-vitb32, none (default: auto "
        "= the preset named like --model, if any)",
    )
    add_train_config_options(g)
    g.add_argument(
        "--warmup", type=_warmup, default=None, help="shorthand: N steps, or a fraction < 1"
    )
    d = p.add_argument_group("data split")
    d.add_argument(
        "--split",
        choices=["train", "all"],
        default="train",
        help="train on the train side of the per-domain train/test split (default) or all",
    )
    d.add_argument("--test-fraction", type=float, default=0.2)
    d.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep checkpoint/ at the end")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy and measures per domain of a fine-tuned run")
    p.add_argument("--run", required=True, help="run folder written by `clipgauge finetune`")
    p.add_argument("--data", required=True, help="dataset folder, CSV manifest or world:<task>")
    p.add_argument("--domains", type=csv_list, default=None, help="comma-separated domains")
    p.add_argument(
        "--split",
        choices=["auto", "all", "train", "test"],
        default="auto",
        help="auto (default): the run's training domains on their unseen test images, other "
        "domains on all images",
    )
    p.add_argument("--template", action="append", default=None, help="default: the run's")
    p.add_argument("--model", default=None, help="where the base model is now, if it moved")
    p.add_argument("--wise-alpha", type=float, default=None, help="evaluate WiSE-FT weights")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--skip-bad-images", action="store_true")
    add_cache_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", default=None, help="also write the numbers with provenance here")
    p.set_defaults(func=cmd_evaluate)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run as a full merged checkpoint (HF or open_clip)")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="new folder for the checkpoint")
    p.add_argument(
        "--wise-alpha",
        type=float,
        default=None,
        help="WiSE-FT: (1-A) * zero-shot + A * fine-tuned weights, A in [0, 1]",
    )
    p.add_argument(
        "--format",
        default=None,
        choices=["hf", "open_clip"],
        help="checkpoint format (default: the base model's: open_clip for open_clip models)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_export)


def _add_methods(sub) -> None:
    p = sub.add_parser("methods", help="fine-tuning methods with their parameter counts")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--json", default=None, help='write {"method": {"trainable", "total"}} here')
    p.set_defaults(func=cmd_methods)


def add_commands(subparsers) -> None:
    """Register finetune, evaluate, export and methods on the clipgauge parser."""
    _add_finetune(subparsers)
    _add_evaluate(subparsers)
    _add_export(subparsers)
    _add_methods(subparsers)
