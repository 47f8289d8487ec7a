"""Datasets read from image folders: `<root>/<domain>/<class>/<image>` or `<root>/<class>/<image>`.

Class folder names are class *keys* (used to match domains and mapping files); display names
replace `_` and `-` with spaces unless a class map says otherwise. Images nested deeper inside a
class folder belong to that class. Names starting with '.' (and macOS `__MACOSX` folders) are
ignored at every level, as are files without an image extension (counted in `source`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from clipgauge.data.dataset import ImageDataset, Item
from clipgauge.data.images import IMAGE_EXTENSIONS, is_image_file, load_item_rgb
from clipgauge.errors import DataError

DOMAINBED_LAYOUT = "<root>/<domain>/<class>/<image> (DomainBed layout)"
FOLDER_LAYOUT = "<root>/<class>/<image> (single-domain layout)"
_IGNORED_NAMES = {"__MACOSX"}


def class_display_name(folder_name: str) -> str:
    """`ice_cream` and `ice-cream` become `ice cream`; whitespace runs collapse to one space."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split())


def load_class_map(path: str | os.PathLike) -> dict[str, str]:
    """Read a class map: a JSON object, a YAML mapping, or .txt/.csv lines `key,display name`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"class map file {path} does not exist; check the --class-map path"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read class map file {path} ({error})") from None
    suffix = path.suffix.lower()
    if suffix in (".txt", ".csv"):
        mapping = _parse_class_map_lines(path, text)
    else:
        mapping = _parse_class_map_document(path, text, suffix)
    return _checked_mapping(mapping, str(path))


def _checked_mapping(mapping: dict, label: str) -> dict[str, str]:
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            raise DataError(
                f"class map {label}: entry {key!r}: {value!r} must map a class name to a "
                "non-empty display name (both strings)"
            )
    if not mapping:
        raise DataError(f"class map {label} is empty; list `class name: display name` entries")
    return {key: value.strip() for key, value in mapping.items()}


def _parse_class_map_lines(path: Path, text: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    reader = csv.reader(text.splitlines())
    for row in reader:
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise DataError(
                f"class map {path}, line {reader.line_num}: expected `folder,display name`, "
                f"got {','.join(row)!r}"
            )
        key, value = row[0].strip(), ",".join(row[1:]).strip()
        if key in mapping:
            raise DataError(f"class map {path}, line {reader.line_num}: {key!r} is listed twice")
        mapping[key] = value
    return mapping


def _parse_class_map_document(path: Path, text: str, suffix: str) -> dict:
    try:
        if suffix == ".json":
            document = json.loads(text)
        else:
            import yaml

            document = yaml.safe_load(text)
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        kind = "JSON" if suffix == ".json" else "YAML"
        raise DataError(f"class map {path} is not valid {kind} ({error})") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise DataError(
            f"class map {path} must be a mapping of folder name to display name, "
            f"not a {type(document).__name__}; use .json, .yaml, or .txt/.csv `folder,name` lines"
        )
    # YAML reads a folder named `2012` as an int key; bools/None stay and fail the check.
    return {
        str(key) if type(key) in (int, float) else key: value for key, value in document.items()
    }


def resolve_class_map(
    class_map: str | os.PathLike | dict[str, str] | None,
) -> tuple[dict[str, str], str | None]:
    """Accept a mapping file path or an in-memory dict; return the mapping and its source label."""
    if class_map is None:
        return {}, None
    if isinstance(class_map, dict):
        return _checked_mapping(dict(class_map), "<dict>"), "<dict>"
    return load_class_map(class_map), str(Path(class_map).absolute())


def display_names(keys: Sequence[str], mapping: dict[str, str], map_label: str | None) -> list[str]:
    """Display names for class keys; a mapping key naming no class, or a name clash, is an error."""
    unknown = sorted(set(mapping) - set(keys))
    if unknown:
        raise DataError(
            f"class map {map_label} names {_listing(unknown)}, which match no class; "
            f"known classes: {_listing(keys)}. Fix the keys to match the class folder names"
        )
    names = [mapping.get(key, class_display_name(key)) for key in keys]
    seen: dict[str, str] = {}
    for key, name in zip(keys, names, strict=True):
        if name in seen:
            raise DataError(
                f"classes {seen[name]!r} and {key!r} both get the display name {name!r}; "
                "give one of them a different name with --class-map"
            )
        seen[name] = key
    return names


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and entry.name not in _IGNORED_NAMES


def _subfolders(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if _visible(e) and e.is_dir()), key=lambda e: e.name)


def _files(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if _visible(e) and e.is_file()), key=lambda e: e.name)


def _walk_images(folder: Path) -> tuple[list[str], int]:
    """Image files under `folder` (any depth, following symlinks) and the count of other files."""
    images: list[str] = []
    ignored = 0
    seen_real: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_real:  # a symlink loop
            dirs[:] = []
            continue
        seen_real.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _IGNORED_NAMES)
        for name in files:
            if name.startswith("."):
                continue
            if is_image_file(name):
                images.append(os.path.join(current, name))
            else:
                ignored += 1
    return images, ignored


def _check_root(root: str | os.PathLike, layout: str) -> Path:
    path = Path(os.path.normpath(Path(root).expanduser().absolute()))
    if not path.exists():
        raise DataError(f"dataset folder {path} does not exist; expected {layout}")
    if not path.is_dir():
        raise DataError(f"dataset path {path} is not a folder; expected {layout}")
    return path


def _read_class_folders(folder: Path, layout: str, where: str) -> tuple[dict[str, list[str]], int]:
    """Map class key -> sorted image paths for each class subfolder of `folder`."""
    stray_images = [e.name for e in _files(folder) if is_image_file(e.name)]
    if stray_images:
        raise DataError(
            f"{where} {folder} holds image files directly ({_listing(stray_images)}); "
            f"expected {layout}. Move them into a folder named after their class"
        )
    ignored = len(_files(folder))  # every file left here is a non-image
    classes: dict[str, list[str]] = {}
    for entry in _subfolders(folder):
        images, skipped = _walk_images(Path(entry.path))
        ignored += skipped
        if not images:
            raise DataError(
                f"class folder {entry.path} contains no image files "
                f"(read: {' '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
            )
        base = entry.path
        classes[entry.name] = sorted(
            images, key=lambda p: Path(os.path.relpath(p, base)).as_posix()
        )
    if not classes:
        raise DataError(f"{where} {folder} contains no class folders; expected {layout}")
    return classes, ignored


def _build(
    kind: str,
    root: Path,
    domain_names: list[str],
    per_domain: dict[str, dict[str, list[str]]],
    class_map,
    ignored: int,
    extra_source: dict,
) -> ImageDataset:
    mapping, map_label = resolve_class_map(class_map)
    keys = sorted(next(iter(per_domain.values())))
    names = display_names(keys, mapping, map_label)
    items: list[Item] = []
    stats: list[tuple[int, int]] = []
    for domain_name, classes in per_domain.items():
        domain = domain_names.index(domain_name)
        for label, key in enumerate(keys):
            for path in classes[key]:
                stat = os.stat(path)
                items.append(Item(path=path, label=label, domain=domain))
                stats.append((stat.st_size, stat.st_mtime_ns))
    source = {
        "kind": kind,
        "root": str(root),
        "class_map": map_label,
        "class_keys": keys,
        **extra_source,
        "ignored_files": ignored,
    }
    return ImageDataset(
        items=items,
        class_names=names,
        domain_names=domain_names,
        loader=load_item_rgb,
        source=source,
        file_stats=stats,
    )


def from_domainbed(
    root: str | os.PathLike,
    domains: Sequence[str] | None = None,
    class_map: str | os.PathLike | dict[str, str] | None = None,
) -> ImageDataset:
    """Read `<root>/<domain>/<class>/<image>`; every read domain must have the same classes.

    `domains` reads only those domain folders; `domain_names` still lists every domain folder
    (sorted), so a domain's index never depends on the selection (as `select_domains`).
    """
    root_path = _check_root(root, DOMAINBED_LAYOUT)
    all_domains = [e.name for e in _subfolders(root_path)]
    if not all_domains:
        raise DataError(
            f"dataset folder {root_path} has no domain folders; expected {DOMAINBED_LAYOUT}"
        )
    if domains is not None:
        unknown = [d for d in domains if d not in all_domains]
        if unknown:
            raise DataError(
                f"unknown domain(s) {unknown} for {root_path}; available: {all_domains}"
            )
        if not domains:
            raise DataError(f"no domains selected for {root_path}; available: {all_domains}")
    selected = [d for d in all_domains if domains is None or d in domains]
    ignored = len(_files(root_path))
    per_domain: dict[str, dict[str, list[str]]] = {}
    for domain in selected:
        classes, skipped = _read_class_folders(
            root_path / domain, DOMAINBED_LAYOUT, "domain folder"
        )
        per_domain[domain] = classes
        ignored += skipped
    _check_classes_agree(root_path, per_domain)
    extra = {"domains": list(domains) if domains is not None else None}
    return _build("domainbed", root_path, all_domains, per_domain, class_map, ignored, extra)


def from_folder(
    root: str | os.PathLike, class_map: str | os.PathLike | dict[str, str] | None = None
) -> ImageDataset:
    """Read `<root>/<class>/<image>` as one domain named after the root folder."""
    root_path = _check_root(root, FOLDER_LAYOUT)
    classes, ignored = _read_class_folders(root_path, FOLDER_LAYOUT, "dataset folder")
    domain = root_path.name or str(root_path)
    return _build("folder", root_path, [domain], {domain: classes}, class_map, ignored, {})


def _check_classes_agree(root: Path, per_domain: dict[str, dict[str, list[str]]]) -> None:
    class_sets = {domain: set(classes) for domain, classes in per_domain.items()}
    union = set().union(*class_sets.values())
    common = set.intersection(*class_sets.values())
    if union == common:
        return
    lines = []
    for domain, own in class_sets.items():
        missing, extra = sorted(union - own), sorted(own - common)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {_listing(missing)}")
            if extra:
                parts.append(f"extra {_listing(extra)}")
            lines.append(f"  {domain}: {'; '.join(parts)}")
    raise DataError(
        f"class folders differ between the domains of {root}:\n"
        + "\n".join(lines)
        + "\nevery domain folder must hold the same class folders; add or remove class "
        "folders, or read only agreeing domains with --domains"
    )


def detect_layout(root: str | os.PathLike) -> str:
    """'folder' when the root's subfolders hold images directly, 'domainbed' when they hold
    subfolders with images; anything else is a DataError describing both layouts.

    A single-domain class folder holding only nested subfolders looks like a domain; read such
    a dataset with `from_folder` directly.
    """
    root_path = _check_root(root, f"{DOMAINBED_LAYOUT} or {FOLDER_LAYOUT}")
    class_like, domain_like = [], []
    for entry in _subfolders(root_path):
        files = _files(Path(entry.path))
        if any(is_image_file(f.name) for f in files):
            class_like.append(entry.name)
        elif any(
            any(is_image_file(f.name) for f in _files(Path(sub.path)))
            for sub in _subfolders(Path(entry.path))
        ):
            domain_like.append(entry.name)
    if class_like and not domain_like:
        return "folder"
    if domain_like and not class_like:
        return "domainbed"
    both = f"expected either {DOMAINBED_LAYOUT} or {FOLDER_LAYOUT}"
    if class_like and domain_like:
        raise DataError(
            f"cannot tell the layout of {root_path}: {_listing(class_like)} hold images directly "
            f"(like class folders) but {_listing(domain_like)} hold class subfolders (like "
            f"domain folders); {both}. Reorganise the folders so all follow one layout"
        )
    raise DataError(f"found no images in the subfolders of {root_path}; {both}")


def from_image_folder(
    root: str | os.PathLike,
    domains: Sequence[str] | None = None,
    class_map: str | os.PathLike | dict[str, str] | None = None,
) -> ImageDataset:
    """Read a folder in either layout, detected by `detect_layout`."""
    if detect_layout(root) == "domainbed":
        return from_domainbed(root, domains=domains, class_map=class_map)
    dataset = from_folder(root, class_map=class_map)
    return dataset if domains is None else dataset.select_domains(domains)


def _listing(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    more = len(names) - limit
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"
