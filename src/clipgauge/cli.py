"""The `clipgauge` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clipgauge import __version__
from clipgauge.errors import ClipgaugeError
from clipgauge.world import commands as world_commands

DEFAULT_MODEL = "world-clip"


def csv_list(value: str | None) -> list[str] | None:
    """argparse type for comma-separated names."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="HF CLIP checkpoint: hub id, local folder, or a packaged name (default: world-clip)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="folder (<domain>/<class>/<img> or <class>/<img>), CSV manifest, or world:<task>",
    )
    p.add_argument("--domains", type=csv_list, default=None, help="comma-separated domain names")
    p.add_argument(
        "--class-map",
        default=None,
        help="class names to display and prompt with: a .json/.yaml mapping or .txt/.csv lines "
        "`folder or label,display name` (with a CSV manifest: its keys are the classes)",
    )
    p.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template with {} for the class (repeat for an ensemble) or a .txt/.json/.yaml "
        "file of templates (default: a world:<task>'s own prompts, else 'a photo of a {}.')",
    )
    p.add_argument("--split", default="all", choices=["all", "train", "test"])
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: auto)")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images (reported) instead of stopping",
    )
    p.add_argument("--cache-dir", default=None, help="embedding cache (default ~/.cache/clipgauge)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--no-progress", action="store_true")


def template_arg(values: list[str] | None) -> str | list[str] | None:
    """Repeated --template values: one string (a template or a file of them) or an ensemble."""
    return values[0] if values and len(values) == 1 else values


def cache_arg(args):
    """The embedding cache that --cache-dir / --no-cache ask for."""
    from clipgauge.cache import TensorCache

    return None if args.no_cache else TensorCache(args.cache_dir)


def _report_skipped(skipped: list) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)


def cmd_measure(args) -> int:
    from clipgauge.task_measures import measure

    report = measure(
        args.model,
        args.data,
        domains=args.domains,
        class_map=args.class_map,
        templates=template_arg(args.template),
        split=args.split,
        seed=args.seed,
        test_fraction=args.test_fraction,
        cache=cache_arg(args),
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    print(report.table())
    _report_skipped([(s["path"], s["reason"]) for s in report.provenance["skipped_images"]])
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    return 0


def cmd_embed(args) -> int:
    from clipgauge.data.open import open_dataset
    from clipgauge.data.splits import select_split
    from clipgauge.embeddings import check_embeddings_path, embed_dataset, save_embeddings
    from clipgauge.models.loading import load_clip
    from clipgauge.prompts import templates_for

    check_embeddings_path(args.out)  # before the work, not after it
    dataset = open_dataset(args.data, domains=args.domains, class_map=args.class_map)
    templates = templates_for(template_arg(args.template), dataset)
    dataset = select_split(dataset, args.split, seed=args.seed, test_fraction=args.test_fraction)
    bundle = load_clip(args.model, device=args.device, dtype=args.dtype)
    embeddings = embed_dataset(
        bundle,
        dataset,
        templates,
        cache=cache_arg(args),
        batch_size=args.batch_size,
        num_workers=args.workers,
        skip_bad_images=args.skip_bad_images,
        progress=not args.no_progress,
    )
    _report_skipped(embeddings.skipped)
    out, sidecar = save_embeddings(embeddings, args.out)
    n, d = embeddings.image_embeds.shape
    print(f"wrote {out} ({n} images x {d}, {len(embeddings.class_names)} classes) and {sidecar}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipgauge",
        description="Measure CLIP task misalignment; fine-tune with PEFT; study trade-offs.",
    )
    parser.add_argument("--version", action="version", version=f"clipgauge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("measure", help="zero-shot misalignment measures per domain")
    _add_model_options(p)
    _add_data_options(p)
    p.add_argument("--json", default=None, help="also write the numbers with provenance here")
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("embed", help="export image and class-text embeddings as safetensors")
    _add_model_options(p)
    _add_data_options(p)
    p.add_argument("--out", required=True, help="output FILE.safetensors (+ FILE.json sidecar)")
    p.set_defaults(func=cmd_embed)

    world_commands.add_commands(sub)
    from clipgauge.training.commands import add_commands

    add_commands(sub)
    from clipgauge.study.commands import add_commands as add_study_commands

    add_study_commands(sub)
    from clipgauge.report.commands import add_commands as add_report_commands

    add_report_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClipgaugeError as err:
        print(f"clipgauge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. an output path in a missing or read-only place
        print(
            f"clipgauge {args.command}: error: {err}; check that the path exists and is "
            "writable (or readable)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"clipgauge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
