"""Render a report `Document` as Markdown (report.md) and as self-contained HTML (report.html).

The HTML comes from a Jinja2 template (templates/report.html.j2) with inline Markdown rendered
by markdown-it-py; figures are embedded as base64 PNG, so the page loads nothing else.
"""

from __future__ import annotations

import base64
import html
import re
import struct

from jinja2 import Environment, PackageLoader
from markdown_it import MarkdownIt
from markupsafe import Markup

from clipgauge.report.document import Block, Collapsed, Document, Figure, Paragraph, Table

# Width of the HTML text column in CSS px: a figure wider than this is scaled down to it.
COLUMN_PX = 960
SHORT_CELL_CHARS = 32  # table cells up to this long never wrap (see the template)
# A number as the report writes it: signed, a p-value "< 0.001", an interval, maybe in bold.
_NUMBER = re.compile(r"\**(?:[+-]?\d|< ?\d|n/a$|-$)")

_MARKDOWN = MarkdownIt("commonmark", {"html": False})


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in table.headers) + " |"]
    lines.append(
        "|" + "|".join("---" if i == 0 else "--:" for i in range(len(table.headers))) + "|"
    )
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def _md_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"**{block.text}**\n" if block.strong else f"{block.text}\n"
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        return f"![{block.caption}](figures/{block.file_name})\n\n*{block.caption}*\n"
    if isinstance(block, Collapsed):
        inner = "\n".join(_md_block(b) for b in block.blocks)
        return (
            f"<details>\n<summary>{html.escape(block.summary)}</summary>\n\n{inner}\n</details>\n"
        )
    return "\n".join(f"- {item}" for item in block.items) + "\n"


def to_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown; figures link to figures/*.png."""
    parts = [f"# {doc.title}\n"]
    for section in doc.sections:
        parts.append(f"{'#' * section.level} {section.heading}\n")
        parts += [_md_block(block) for block in section.blocks]
    return "\n".join(parts)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels, from the PNG header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def column_kinds(table: Table) -> list[str]:
    """Per column, "num" when every filled cell is a number (right-aligned), else "text"."""
    kinds = []
    for j in range(len(table.headers)):
        cells = [str(row[j]) for row in table.rows if str(row[j]).strip()]
        numeric = j > 0 and cells and all(_NUMBER.match(c) for c in cells)
        kinds.append("num" if numeric else "text")
    return kinds


def _cell_class(cell, kind: str) -> str:
    return kind + (" short" if len(str(cell)) <= SHORT_CELL_CHARS else " prose")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("clipgauge.report", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    env.filters["inline"] = lambda text: Markup(_MARKDOWN.renderInline(str(text)))
    env.filters["data_uri"] = _data_uri
    env.filters["png_size"] = png_size
    env.filters["column_kinds"] = column_kinds
    env.filters["cell_class"] = _cell_class
    return env


def to_html(doc: Document) -> str:
    """The document as one HTML page with its CSS and figures inside (no external resource)."""
    template = _environment().get_template("report.html.j2")
    return template.render(doc=doc, column_px=COLUMN_PX)
