"""The report as one structured document: a title and sections of blocks.

`clipgauge.report.render` turns the same document into report.md and report.html, so the two
never drift apart. Text in blocks is inline Markdown (`code`, **bold**); captions are plain.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Paragraph:
    text: str
    strong: bool = False
    kind: str = field(default="paragraph", init=False)


@dataclass
class Bullets:
    items: list[str]
    kind: str = field(default="bullets", init=False)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    kind: str = field(default="table", init=False)


@dataclass
class Figure:
    """A PNG shown inline in the HTML and linked as `figures/<file_name>` from the Markdown."""

    file_name: str
    png: bytes
    caption: str
    kind: str = field(default="figure", init=False)


@dataclass
class Collapsed:
    """Blocks a reader opens on demand (<details>), behind a one-line summary."""

    summary: str
    blocks: list
    kind: str = field(default="collapsed", init=False)


Block = Paragraph | Bullets | Table | Figure | Collapsed


@dataclass
class Section:
    heading: str
    level: int = 2
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, heading: str, level: int = 2) -> Section:
        """A new section at the end of the document."""
        section = Section(heading, level)
        self.sections.append(section)
        return section

    def figures(self) -> list[tuple[Section, Figure]]:
        """Every figure with the section it sits under."""
        return [
            (section, block)
            for section in self.sections
            for block in section.blocks
            if isinstance(block, Figure)
        ]


LONG_TABLE_ROWS = 12


def long_table(
    headers: list[str], rows: list[list[str]], what: str, notes: list[Block] | None = None
) -> list[Block]:
    """A table after its `notes`, folded away behind "All N <what>" when it has more than
    LONG_TABLE_ROWS rows: the section must then say in a sentence which rows matter."""
    blocks = [*(notes or []), Table(headers, rows)]
    if len(rows) <= LONG_TABLE_ROWS:
        return blocks
    return [Collapsed(f"All {len(rows)} {what}", blocks)]
