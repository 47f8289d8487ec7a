"""The one dataset abstraction: items of (image path, class index, domain index)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from clipgauge.errors import DataError


@dataclass(frozen=True, slots=True)  # slots: 40 bytes less per item, 38 MiB per million
class Item:
    """One labelled image. `path` is a file path, or a virtual id for generated images."""

    path: str
    label: int
    domain: int


@dataclass
class ImageDataset:
    """A labelled image collection with named classes and domains.

    `loader` turns an item into an RGB PIL image; file datasets use `load_rgb` on `item.path`,
    generated datasets render from the virtual id. `source` describes where the data came from
    (recorded with every result), `file_stats` holds (size, mtime_ns) per item for cache keys
    (None for generated data, whose `source` already pins every pixel). `templates` are the
    prompt templates the source comes with (a world task's own prompts), used when none are
    given; None means the default template.
    """

    items: list[Item]
    class_names: list[str]
    domain_names: list[str]
    loader: Callable[[Item], Image.Image]
    source: dict = field(default_factory=dict)
    file_stats: list[tuple[int, int]] | None = None
    templates: list[str] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, index: int, min_side: int | None = None) -> Image.Image:
        """The item's RGB image. With `min_side`, loaders marked `decodes_at_scale` (files)
        may return a JPEG decoded at reduced scale whose shorter side is still >= `min_side`."""
        item = self.items[index]
        if min_side is not None and getattr(self.loader, "decodes_at_scale", False):
            return self.loader(item, min_side=min_side)
        return self.loader(item)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    @property
    def domains(self) -> list[int]:
        return [it.domain for it in self.items]

    def subset(self, indices: Sequence[int], **source_update) -> ImageDataset:
        """A dataset over `indices` that keeps every class and domain name (labels stay valid)."""
        idx = list(indices)
        stats = None if self.file_stats is None else [self.file_stats[i] for i in idx]
        return ImageDataset(
            items=[self.items[i] for i in idx],
            class_names=list(self.class_names),
            domain_names=list(self.domain_names),
            loader=self.loader,
            source={**self.source, **source_update},
            file_stats=stats,
            templates=self.templates,
        )

    def select_domains(self, names: Sequence[str]) -> ImageDataset:
        """Keep only the named domains; an unknown name is a DataError listing the known ones."""

        unknown = [n for n in names if n not in self.domain_names]
        if unknown:
            raise DataError(
                f"unknown domain(s) {unknown} for {self.source.get('root', 'dataset')}; "
                f"available: {self.domain_names}"
            )
        wanted = {self.domain_names.index(n) for n in names}
        keep = [i for i, it in enumerate(self.items) if it.domain in wanted]
        return self.subset(keep, domains=list(names))

    def fingerprint(self) -> str:
        """A digest of the file list, labels, domains, sizes and mtimes, and the source."""
        h = hashlib.sha256()
        h.update(json.dumps(self.source, sort_keys=True, default=str).encode())
        h.update(json.dumps([self.class_names, self.domain_names]).encode())
        for i, it in enumerate(self.items):
            stat = self.file_stats[i] if self.file_stats is not None else ()
            # surrogateescape: a file name that is not UTF-8 hashes as its bytes, not a crash
            line = f"{it.path}\0{it.label}\0{it.domain}\0{stat}\n"
            h.update(line.encode("utf-8", "surrogateescape"))
        return h.hexdigest()
