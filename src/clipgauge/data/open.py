"""One entry point from a dataset spec (folder, CSV manifest or `world:<task>`) to a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from clipgauge.data.dataset import ImageDataset
from clipgauge.data.folders import from_image_folder
from clipgauge.data.manifest import from_csv
from clipgauge.errors import DataError

WORLD_PREFIX = "world:"
SPEC_HELP = (
    "give a folder in <domain>/<class>/<image> or <class>/<image> layout, "
    "a .csv manifest, or world:<task>"
)


def open_dataset(
    spec: str | os.PathLike,
    *,
    domains: Sequence[str] | None = None,
    class_map: str | os.PathLike | dict[str, str] | None = None,
) -> ImageDataset:
    """Open a dataset folder (layout auto-detected), a .csv manifest, or `world:<task>`.

    `domains` keeps only the named domains (indices of all domains stay as they are).
    """
    text = os.fspath(spec)
    if text.startswith(WORLD_PREFIX):
        return _open_world(text[len(WORLD_PREFIX) :], domains=domains, class_map=class_map)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"no such dataset path {text}; {SPEC_HELP}")
    if path.is_dir():
        return from_image_folder(path, domains=domains, class_map=class_map)
    if path.suffix.lower() == ".csv":
        dataset = from_csv(path, class_map=class_map)
        return dataset if domains is None else dataset.select_domains(domains)
    raise DataError(f"dataset path {text} is neither a folder nor a .csv file; {SPEC_HELP}")


def _open_world(task: str, **options) -> ImageDataset:
    if not task:
        raise DataError(f"'{WORLD_PREFIX}' needs a task name, as in {WORLD_PREFIX}<task>")
    try:
        from clipgauge.world import open_world
    except ImportError as error:
        raise DataError(
            f"cannot open {WORLD_PREFIX}{task}: the clipgauge.world module failed to import "
            f"({error}); reinstall clipgauge or use a folder or .csv dataset"
        ) from error
    return open_world(task, **options)
