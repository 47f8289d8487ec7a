"""The `clipgauge` command: a thin layer over the Python API, one module per command group.

Each module registers its subcommands with `add_commands`; the work is imported inside each
command function, so `clipgauge --help` does not pay for torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clipgauge import __version__
from clipgauge.cli import convert, measure, report, study, training, world
from clipgauge.errors import ClipgaugeError

# The order of `clipgauge --help`.
COMMAND_MODULES = (measure, world, training, convert, study, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipgauge",
        description="Measure CLIP task misalignment; fine-tune with PEFT; study trade-offs.",
    )
    parser.add_argument("--version", action="version", version=f"clipgauge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
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
