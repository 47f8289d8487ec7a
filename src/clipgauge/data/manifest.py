"""Datasets read from a CSV manifest with columns `path,label[,domain]`."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from clipgauge.data.dataset import ImageDataset, Item
from clipgauge.data.folders import class_display_name, resolve_class_map
from clipgauge.data.images import load_item_rgb
from clipgauge.errors import DataError

REQUIRED_COLUMNS = ("path", "label")
DEFAULT_DOMAIN = "all"


def from_csv(
    path: str | os.PathLike, class_map: str | os.PathLike | dict[str, str] | None = None
) -> ImageDataset:
    """Read a CSV manifest: a header naming `path` and `label` (and optionally `domain`).

    Relative paths are relative to the CSV's folder and may not leave it; absolute paths are
    taken as they are. Labels are class names; classes are the sorted unique labels, shown with
    `_`/`-` as spaces. With a class map the map's keys are the classes (all of them, in sorted
    order, even ones no row uses) and its values the display names; other labels are errors.
    Domains are the sorted unique `domain` values, or one domain "all". Rows keep file order.
    """
    csv_path = Path(os.path.normpath(Path(path).expanduser().absolute()))
    root = csv_path.parent
    rows = _read_rows(csv_path)
    mapping, map_label = resolve_class_map(class_map)

    seen_paths: dict[str, int] = {}
    entries: list[tuple[str, str, str]] = []
    for line, image_path, label, domain in rows:
        where = f"{csv_path}, line {line}"
        if not image_path:
            raise DataError(f"{where}: the path is empty; give an image path on every row")
        if not label:
            raise DataError(f"{where}: the label is empty; give a class name on every row")
        if not domain:
            raise DataError(f"{where}: the domain is empty; give a domain on every row")
        if mapping and label not in mapping:
            raise DataError(
                f"{where}: unknown label {label!r}, not in class map {map_label}; "
                "add it to the class map or fix the label"
            )
        absolute = _resolve_image_path(root, image_path, where)
        if absolute in seen_paths:
            raise DataError(
                f"{where}: duplicate path {image_path!r}, already listed on line "
                f"{seen_paths[absolute]}; list each image once"
            )
        seen_paths[absolute] = line
        entries.append((absolute, label, domain))

    keys = sorted(mapping) if mapping else sorted({label for _, label, _ in entries})
    names = [mapping.get(key) or class_display_name(key) for key in keys]
    domain_names = sorted({domain for _, _, domain in entries})
    label_index = {key: i for i, key in enumerate(keys)}
    domain_index = {name: i for i, name in enumerate(domain_names)}
    items, stats = [], []
    for absolute, label, domain in entries:
        stat = os.stat(absolute)
        items.append(Item(path=absolute, label=label_index[label], domain=domain_index[domain]))
        stats.append((stat.st_size, stat.st_mtime_ns))
    return ImageDataset(
        items=items,
        class_names=names,
        domain_names=domain_names,
        loader=load_item_rgb,
        source={
            "kind": "csv",
            "path": str(csv_path),
            "root": str(root),
            "class_map": map_label,
            "class_keys": keys,
        },
        file_stats=stats,
    )


def _read_rows(csv_path: Path) -> list[tuple[int, str, str, str]]:
    """(line number, path, label, domain) per data row, stripped; blank lines skipped."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)
            if header is None:
                raise DataError(
                    f"manifest {csv_path} is empty; it needs a header line `path,label[,domain]` "
                    "and one row per image"
                )
            columns = [cell.strip().lower() for cell in header]
            missing = [name for name in REQUIRED_COLUMNS if name not in columns]
            if missing:
                raise DataError(
                    f"manifest {csv_path}, line {reader.line_num}: missing column(s) {missing}; "
                    f"the header has {columns}. The first line must name the columns "
                    "`path,label[,domain]`"
                )
            path_col, label_col = columns.index("path"), columns.index("label")
            domain_col = columns.index("domain") if "domain" in columns else None
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                cells = [cell.strip() for cell in row]
                if len(cells) < len(columns):
                    cells += [""] * (len(columns) - len(cells))
                domain = cells[domain_col] if domain_col is not None else DEFAULT_DOMAIN
                rows.append((reader.line_num, cells[path_col], cells[label_col], domain))
    except FileNotFoundError:
        raise DataError(f"manifest {csv_path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"cannot read manifest {csv_path} ({error}); it must be UTF-8 CSV"
        ) from None
    if not rows:
        raise DataError(f"manifest {csv_path} has a header but no rows; add one row per image")
    return rows


def _resolve_image_path(root: Path, image_path: str, where: str) -> str:
    candidate = Path(image_path).expanduser()
    if candidate.is_absolute():
        absolute = os.path.normpath(candidate)
    else:
        absolute = os.path.normpath(root / candidate)
        if os.path.commonpath([absolute, str(root)]) != str(root):
            raise DataError(
                f"{where}: path {image_path!r} is outside the root {root} (the manifest's "
                "folder); give a path inside it, or an absolute path"
            )
    if not os.path.exists(absolute):
        raise DataError(f"{where}: image file {absolute} not found; fix the path or remove the row")
    if not os.path.isfile(absolute):
        raise DataError(f"{where}: {absolute} is not a file; list image files, not folders")
    return absolute
