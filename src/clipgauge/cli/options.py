"""Argument helpers every subcommand shares: model, data, template and cache options."""

from __future__ import annotations

import argparse
import sys

from clipgauge import DEFAULT_MODEL

DTYPE_CHOICES = ["fp32", "bf16", "fp16"]
DATA_HELP = "folder (<domain>/<class>/<img> or <class>/<img>), CSV manifest, or world:<task>"
TEMPLATE_HELP = (
    "prompt template with {} for the class (repeat for an ensemble) or a .txt/.json/.yaml "
    "file of templates (default: a world:<task>'s own prompts, else 'a photo of a {}.')"
)


def csv_list(value: str | None) -> list[str] | None:
    """argparse type for comma-separated names."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


MODEL_HELP = (
    "a Hugging Face CLIP or SigLIP checkpoint (hub id or local folder), "
    "open_clip:<arch>:<weights.safetensors or pretrained tag>, open_clip:<folder>, or a "
    f"packaged name (default: {DEFAULT_MODEL})"
)


def key_value(text: str) -> tuple[str, str]:
    """argparse type for KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value (e.g. rank=8)")
    return key.strip(), value.strip()


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=MODEL_HELP,
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES)


def add_cache_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, help="embedding cache (default ~/.cache/clipgauge)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--domains", type=csv_list, default=None, help="comma-separated domain names")
    p.add_argument(
        "--class-map",
        default=None,
        help="class names to display and prompt with: a .json/.yaml mapping or .txt/.csv lines "
        "`folder or label,display name` (with a CSV manifest: its keys are the classes)",
    )
    p.add_argument("--template", action="append", default=None, help=TEMPLATE_HELP)
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
    add_cache_options(p)
    p.add_argument("--no-progress", action="store_true")


def template_arg(values: list[str] | None) -> str | list[str] | None:
    """Repeated --template values: one string (a template or a file of them) or an ensemble."""
    return values[0] if values and len(values) == 1 else values


def cache_arg(args):
    """The embedding cache that --cache-dir / --no-cache ask for."""
    from clipgauge.cache import TensorCache

    return None if args.no_cache else TensorCache(args.cache_dir)


def report_skipped(skipped: list) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
