"""One entry point from a dataset spec (folder, CSV manifest or `<source>:<name>`) to a dataset.

Named sources such as `world:<task>` are opened by the opener registered for their prefix.
A package registers one with `register_source`, or with an entry point in the
`clipgauge.data_sources` group (name = the prefix, value = the opener), loaded on first use;
clipgauge's own procedural world registers `world` that way. `data` never imports a source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from clipgauge.data.dataset import ImageDataset
from clipgauge.data.folders import from_image_folder
from clipgauge.data.manifest import from_csv
from clipgauge.errors import DataError

ENTRY_POINT_GROUP = "clipgauge.data_sources"
SPEC_HELP = (
    "give a folder in <domain>/<class>/<image> or <class>/<image> layout, "
    "a .csv manifest, or world:<task>"
)

# An opener takes (name after the prefix, domains=..., class_map=...) and returns a dataset.
Opener = Callable[..., ImageDataset]
_SOURCES: dict[str, Opener] = {}


def register_source(prefix: str, opener: Opener) -> None:
    """Open `<prefix>:<name>` data specs with `opener(name, domains=..., class_map=...)`."""
    if not prefix.isidentifier():
        raise ValueError(f"a data source prefix must be a name, not {prefix!r}")
    _SOURCES[prefix] = opener


def _source_opener(prefix: str) -> Opener | None:
    if prefix not in _SOURCES:
        for entry in entry_points(group=ENTRY_POINT_GROUP, name=prefix):
            try:
                register_source(prefix, entry.load())
            except ImportError as error:
                raise DataError(
                    f"cannot open {prefix}: data: its source {entry.value} failed to import "
                    f"({error}); reinstall the package that provides it, or use a folder or "
                    ".csv dataset"
                ) from error
    return _SOURCES.get(prefix)


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
    prefix, colon, name = text.partition(":")
    opener = _source_opener(prefix) if colon and prefix.isidentifier() else None
    if opener is not None:
        return opener(name, domains=domains, class_map=class_map)
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"no such dataset path {text}; {SPEC_HELP}")
    if path.is_dir():
        return from_image_folder(path, domains=domains, class_map=class_map)
    if path.suffix.lower() == ".csv":
        dataset = from_csv(path, class_map=class_map)
        return dataset if domains is None else dataset.select_domains(domains)
    raise DataError(f"dataset path {text} is neither a folder nor a .csv file; {SPEC_HELP}")
