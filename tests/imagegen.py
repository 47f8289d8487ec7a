"""Tiny generated image files and dataset folders for tests (plain functions, no fixtures)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def color_for(*key: object) -> tuple[int, int, int]:
    """A stable colour per key, so each generated image is distinguishable."""
    digest = zlib.crc32("/".join(map(str, key)).encode())
    return (digest & 0xFF, (digest >> 8) & 0xFF, (digest >> 16) & 0xFF)


def write_image(
    path: str | Path,
    color: tuple[int, ...] | int = (200, 30, 30),
    size: tuple[int, int] = (8, 8),
    mode: str = "RGB",
    format: str | None = None,
    **save_options,
) -> Path:
    """Write a solid-colour image; the format follows the extension unless given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=format, **save_options)
    return path


def make_folder(
    root: str | Path,
    classes: Sequence[str],
    per_class: int = 2,
    ext: str = ".png",
    domain: str = "",
) -> Path:
    """`<root>/<class>/<i><ext>` with `per_class` images per class."""
    root = Path(root)
    for name in classes:
        for i in range(per_class):
            write_image(root / name / f"img{i}{ext}", color_for(domain, name, i))
    return root


def make_domainbed(
    root: str | Path,
    domains: Sequence[str] | dict[str, Sequence[str]],
    classes: Sequence[str] = (),
    per_class: int = 2,
    ext: str = ".png",
) -> Path:
    """`<root>/<domain>/<class>/<i><ext>`; `domains` may map each domain to its own classes."""
    root = Path(root)
    per_domain = domains if isinstance(domains, dict) else {d: classes for d in domains}
    for domain, domain_classes in per_domain.items():
        make_folder(root / domain, domain_classes, per_class, ext, domain=domain)
    return root


def encoded(image: Image.Image, format: str, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save_options)
    return buffer.getvalue()


def write_truncated(path: str | Path, format: str, keep: float = 0.5) -> Path:
    """An image file cut off part-way through its pixel data."""
    image = Image.linear_gradient("L").convert("RGB").resize((64, 64))
    data = encoded(image, format)
    path = Path(path)
    path.write_bytes(data[: int(len(data) * keep)])
    return path
