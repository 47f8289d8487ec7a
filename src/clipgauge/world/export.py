"""World images on disk: a DomainBed-layout export of a task, and a sample grid for the README."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipgauge.cache import atomic_write_bytes
from clipgauge.errors import DataError
from clipgauge.world.dataset import render_task_image, world_dataset
from clipgauge.world.render import check_size, render
from clipgauge.world.scene import sample_scene
from clipgauge.world.styles import domain_names
from clipgauge.world.tasks import Task, get_task

MARKER = "world_export.json"  # written at the export root; lets a later export replace it


def _clear_previous(out: Path) -> None:
    """Make `out` ready for an export: absent, empty, or an earlier export (which is removed)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"export target {out} is a file; give a folder")
    entries = list(out.iterdir())
    if not entries:
        return
    marker = out / MARKER
    if not marker.is_file():
        raise DataError(
            f"export folder {out} is not empty and holds no earlier world export; "
            "give a new or empty folder"
        )
    try:
        previous = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {marker} ({error}); give a new or empty folder") from None
    for domain in previous.get("domains", []):
        shutil.rmtree(out / domain, ignore_errors=True)
    marker.unlink()


def export_world(
    task: Task | str,
    per_class: int,
    out_dir: str | os.PathLike,
    split: str = "test",
    seed: int = 0,
    size: int = 64,
    domains: list[str] | None = None,
) -> Path:
    """Write a task's images as `<out>/<domain>/<class folder>/<i>.png` (DomainBed layout).

    Class folders are the class names with `_` for spaces; file names are zero-padded indices,
    so a folder reader gives the same classes, labels and order as `world_dataset` (domain
    indices too when every domain is exported). A `world_export.json` at the root records what
    was written; exporting again into that folder replaces it. Returns the export folder.
    """
    task = get_task(task) if isinstance(task, str) else task
    dataset = world_dataset(task, split, per_class, seed, size, domains)
    out = Path(out_dir)
    _clear_previous(out)
    folders = task.folder_names()
    width = len(str(per_class - 1))
    written_domains = sorted({task.domains[d] for d in dataset.domains})
    for domain in written_domains:
        for folder in folders:
            (out / domain / folder).mkdir(parents=True, exist_ok=True)
    for item in dataset.items:
        domain, index = task.domains[item.domain], int(item.path.rsplit("/", 1)[1])
        pixels = render_task_image(task, split, domain, item.label, index, seed, size)
        path = out / domain / folders[item.label] / f"{index:0{width}d}.png"
        Image.fromarray(pixels, "RGB").save(path)
    record = {**dataset.source, "classes": list(task.classes), "domains": written_domains}
    (out / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def render_grid(
    out_path: str | os.PathLike,
    per_domain: int = 8,
    seed: int = 0,
    size: int = 64,
    scale: int = 2,
) -> Path:
    """A PNG of sample images, one row per domain; column j shows the same scene in every domain."""
    size = check_size(size)
    if per_domain < 1 or scale < 1:
        raise DataError("render_grid needs per_domain >= 1 and scale >= 1")
    domains = domain_names()
    scenes = [sample_scene(np.random.default_rng([seed, j])) for j in range(per_domain)]
    rows = [
        np.concatenate(
            [render(s, d, size, np.random.default_rng([seed, j, k])) for j, s in enumerate(scenes)],
            axis=1,
        )
        for k, d in enumerate(domains)
    ]
    gap = 2
    label_width = 70
    cell = size * scale
    sheet = Image.new(
        "RGB",
        (label_width + per_domain * (cell + gap), len(domains) * (cell + gap)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(sheet)
    for k, (domain, row) in enumerate(zip(domains, rows, strict=True)):
        top = k * (cell + gap)
        draw.text((6, top + cell // 2 - 6), domain, fill=(0, 0, 0))
        for j in range(per_domain):
            tile = Image.fromarray(row[:, j * size : (j + 1) * size])
            sheet.paste(
                tile.resize((cell, cell), Image.NEAREST), (label_width + j * (cell + gap), top)
            )
    out = Path(out_path)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())
    return out
