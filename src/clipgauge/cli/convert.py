"""`clipgauge convert`: write a model in Hugging Face or open_clip format."""

from __future__ import annotations

from clipgauge.cli.options import MODEL_HELP


def cmd_convert(args) -> int:
    from clipgauge.models.convert import convert

    out = convert(args.model, args.to, args.out)
    loads = f"open_clip:{out}" if args.to == "open_clip" else str(out)
    print(f"wrote {out} (clipgauge loads it as --model {loads})")
    return 0


def add_commands(subparsers) -> None:
    """Register convert on the clipgauge parser."""
    p = subparsers.add_parser(
        "convert",
        help="write a model as a Hugging Face or an open_clip checkpoint folder",
        description="Convert a checkpoint between formats. The weights are copied exactly: "
        "hf -> open_clip -> hf gives the same tensors bit for bit.",
    )
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--to", required=True, choices=["hf", "open_clip"])
    p.add_argument("--out", required=True, help="a new (or empty) folder")
    p.set_defaults(func=cmd_convert)
