"""Datasets read from image folders: `<root>/<domain>/<class>/<image>` or `<root>/<class>/<image>`.

Class folder names are class *keys* (used to match domains and mapping files); display names
replace `_` and `-` with spaces unless a class map says otherwise. Images nested deeper inside a
class folder belong to that class. Names starting with '.' (and macOS `__MACOSX` folders) are
ignored at every level, as are files without an image extension (counted in `source`).

Symbolic links to image files and to folders are followed. A link that would read a folder or
file twice (a loop, a link back to the root or into another class folder) is a DataError naming
it. A broken link with an image extension stays an item that fails to load with its reason, as
unreadable files and file names that are not UTF-8 do, so skip_bad_images can skip and list it.
"""

from __future__ import annotations

import csv
import functools
import gc
import json
import os
from collections.abc import Sequence
from pathlib import Path

from clipgauge.data.dataset import ImageDataset, Item
from clipgauge.data.images import (
    IMAGE_EXTENSIONS,
    is_image_file,
    link_problem,
    load_item_rgb,
    printable_path,
)
from clipgauge.errors import DataError

DOMAINBED_LAYOUT = "<root>/<domain>/<class>/<image> (DomainBed layout)"
FOLDER_LAYOUT = "<root>/<class>/<image> (single-domain layout)"
_IGNORED_NAMES = {"__MACOSX"}
# file_stats of an image file that cannot be stat'ed (a broken link): a file that appears there
# later has a real size and time, so the dataset's fingerprint changes and nothing stale is reused.
_NO_STAT = (-1, -1)


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


def _entries(folder: str | os.PathLike) -> list[os.DirEntry]:
    """The entries of `folder`; a folder that cannot be listed is a DataError naming it."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except PermissionError:
        raise DataError(
            f"cannot list folder {printable_path(folder)}: permission denied; make it readable "
            "(e.g. chmod a+rx) or move it out of the dataset"
        ) from None
    except OSError as error:
        raise DataError(
            f"cannot list folder {printable_path(folder)} ({error.strerror or error}); check "
            "that it exists and is readable"
        ) from None


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder or a link to one; a link loop is not a folder."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _subfolders(folder: str | os.PathLike, expected: str | None = None) -> list[os.DirEntry]:
    """Visible subfolders (or links to folders) by name. Where `expected` (e.g. "class
    folders") are, a broken link is an error: its images would otherwise go missing silently."""
    folders = []
    for entry in _entries(folder):
        if not _visible(entry):
            continue
        if _is_dir(entry):
            folders.append(entry)
        elif expected and entry.is_symlink() and not entry.is_file():
            raise DataError(
                f"{printable_path(entry.path)}, where {expected} are expected, is "
                f"{link_problem(entry.path)}; point it at an existing folder or remove it"
            )
    return sorted(folders, key=lambda e: e.name)


def _files(folder: str | os.PathLike) -> list[os.DirEntry]:
    entries = _entries(folder)
    return sorted((e for e in entries if _visible(e) and e.is_file()), key=lambda e: e.name)


def _holds_image(folder: str | os.PathLike) -> bool:
    """Whether `folder` directly holds a visible image file; stops at the first one."""
    return any(_visible(e) and is_image_file(e.name) and e.is_file() for e in _entries(folder))


def _check_name(path: str, what: str) -> None:
    try:
        os.path.basename(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{what} {printable_path(path)} has a name that is not valid UTF-8; rename it "
            "(e.g. with convmv -f latin1 -t utf-8)"
        ) from None


class _Reached:
    """The folders (and linked files) met while reading one dataset, by (device, inode).

    Links are followed, so a link to a folder or file outside the dataset just works. A link
    that reaches the same folder or file twice (a link back to the root, to another class
    folder, or a loop) would count its images twice or under the wrong class: a DataError
    naming the link.
    """

    def __init__(self) -> None:
        self.folders: dict[tuple[int, int], tuple[str, str | None]] = {}
        self.linked_files: dict[tuple[int, int], str] = {}

    def enter(self, folder: str, link: str | None) -> None:
        """Record `folder`, reached through the symbolic link `link` (None: no link on the way)."""
        try:
            st = os.stat(folder)
        except OSError as error:
            raise DataError(
                f"cannot read folder {printable_path(folder)} ({error.strerror or error})"
            ) from None
        identity = (st.st_dev, st.st_ino)
        first = self.folders.setdefault(identity, (folder, link))
        if first != (folder, link):
            raise DataError(_reached_twice(folder, link, *first))

    def link_to_file(self, path: str, st: os.stat_result) -> None:
        identity = (st.st_dev, st.st_ino)
        first = self.linked_files.setdefault(identity, path)
        if first != path:
            raise DataError(
                f"symbolic links {printable_path(first)} and {printable_path(path)} point to "
                f"the same file {printable_path(os.path.realpath(path))}, so its image would "
                f"count twice; {_ONE_PLACE}"
            )


_ONE_PLACE = (
    "remove one of the links, or replace a link with a copy of the file if the image really "
    "belongs in both places"
)


def _reached_twice(folder: str, link: str | None, first: str, first_link: str | None) -> str:
    if link is None and first_link is not None:  # name the path that went through a link
        folder, link, first, first_link = first, first_link, folder, link
    if link is None:
        return (
            f"folders {printable_path(first)} and {printable_path(folder)} are the same folder "
            f"(a bind mount?), so its images would count twice; read each folder once"
        )
    if folder.startswith(first + os.sep):
        return (
            f"symbolic link {printable_path(link)} leads back to {printable_path(first)}, a "
            "folder that contains it (a link loop), so images would count again and under "
            "the wrong class; remove the link"
        )
    return (
        f"symbolic link {printable_path(link)} leads to {printable_path(folder)}, which is the "
        f"folder {printable_path(first)} already read, so its images would count twice; "
        + _ONE_PLACE
    )


def _scan_class(folder: str, link: str | None, reached: _Reached) -> tuple[list[tuple], int]:
    """The image files under a class folder, at any depth with links followed, and the count
    of other files. Each file is (path relative to `folder` with `/`, path, (size, mtime_ns),
    inode, is a link), sorted by the relative path.

    An image file that cannot be stat'ed (a broken link, a link loop) is kept with `_NO_STAT`:
    reading it fails with a reason, and skip_bad_images decides whether that stops the run.
    """
    found: list[tuple] = []
    add = found.append
    ignored = 0
    pending = [(folder, "", link)]
    while pending:
        current, prefix, via = pending.pop()
        reached.enter(current, via)
        for entry in _entries(current):
            name = entry.name
            if name[0] == ".":  # hidden
                continue
            dot = name.rfind(".")
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link loop
                is_dir = False
            if is_dir:
                if name not in _IGNORED_NAMES:
                    nested_via = entry.path if entry.is_symlink() else via
                    pending.append((entry.path, f"{prefix}{name}/", nested_via))
            elif dot < 0 or name[dot:].lower() not in IMAGE_EXTENSIONS:  # as is_image_file
                ignored += 1
            else:
                try:
                    st = entry.stat()
                except OSError:
                    add((prefix + name, entry.path, _NO_STAT, 0, True))
                    continue
                is_link = entry.is_symlink()
                if is_link:
                    reached.link_to_file(entry.path, st)
                add((prefix + name, entry.path, (st.st_size, st.st_mtime_ns), st.st_ino, is_link))
    found.sort()  # relative paths are unique, so only they are compared
    return found, ignored


def _check_root(root: str | os.PathLike, layout: str) -> Path:
    path = Path(os.path.normpath(Path(root).expanduser().absolute()))
    if not path.exists():
        raise DataError(f"dataset folder {path} does not exist; expected {layout}")
    if not path.is_dir():
        raise DataError(f"dataset path {path} is not a folder; expected {layout}")
    return path


def _read_class_folders(
    folder: Path, layout: str, where: str, reached: _Reached, link: str | None = None
) -> tuple[dict[str, list[tuple]], int]:
    """Map class key -> its image files (see `_scan_class`) for each class subfolder of
    `folder`, which was reached through the symbolic link `link` (None: not through a link)."""
    files = _files(folder)
    stray_images = [e.name for e in files if is_image_file(e.name)]
    if stray_images:
        raise DataError(
            f"{where} {folder} holds image files directly ({_listing(stray_images)}); "
            f"expected {layout}. Move them into a folder named after their class"
        )
    ignored = len(files)  # every file left here is a non-image
    classes: dict[str, list[tuple]] = {}
    for entry in _subfolders(folder, "class folders"):
        _check_name(entry.path, "class folder")
        class_link = entry.path if entry.is_symlink() else link
        images, skipped = _scan_class(entry.path, class_link, reached)
        ignored += skipped
        if not images:
            raise DataError(
                f"class folder {entry.path} contains no image files "
                f"(read: {' '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
            )
        classes[entry.name] = images
    if not classes:
        raise DataError(f"{where} {folder} contains no class folders; expected {layout}")
    return classes, ignored


def _check_linked_files(per_domain: dict[str, dict[str, list[tuple]]], reached: _Reached) -> None:
    """A link to a file that the dataset also reads directly would count that image twice."""
    if not reached.linked_files:
        return
    linked_inodes = {inode for _, inode in reached.linked_files}
    for classes in per_domain.values():
        for images in classes.values():
            for _, path, _, inode, is_link in images:
                if is_link or inode not in linked_inodes:
                    continue
                st = os.stat(path)
                link = reached.linked_files.get((st.st_dev, st.st_ino))
                if link is not None:
                    raise DataError(
                        f"symbolic link {printable_path(link)} points to "
                        f"{printable_path(path)}, which the dataset also reads, so that image "
                        f"would count twice; {_ONE_PLACE}"
                    )


def _build(
    kind: str,
    root: Path,
    domain_names: list[str],
    per_domain: dict[str, dict[str, list[tuple]]],
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
            images = classes[key]
            items.extend([Item(path, label, domain) for _, path, _, _, _ in images])
            stats.extend([stat for _, _, stat, _, _ in images])
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


def _without_cycle_collection(read):
    """Reading a folder makes several objects per file and no reference cycles; with the cyclic
    collector paused it does not traverse them over and over (a third of the time at 100,000
    files, benchmarks/bench_folders.py)."""

    @functools.wraps(read)
    def paused(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return read(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


@_without_cycle_collection
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
    domain_entries = _subfolders(root_path, "domain folders")
    all_domains = [e.name for e in domain_entries]
    if not all_domains:
        raise DataError(
            f"dataset folder {root_path} has no domain folders; expected {DOMAINBED_LAYOUT}"
        )
    for entry in domain_entries:
        _check_name(entry.path, "domain folder")
    if domains is not None:
        unknown = [d for d in domains if d not in all_domains]
        if unknown:
            raise DataError(
                f"unknown domain(s) {unknown} for {root_path}; available: {all_domains}"
            )
        if not domains:
            raise DataError(f"no domains selected for {root_path}; available: {all_domains}")
    ignored = len(_files(root_path))
    reached = _Reached()
    reached.enter(str(root_path), None)
    selected = []
    for entry in domain_entries:
        link = entry.path if entry.is_symlink() else None
        reached.enter(entry.path, link)
        if domains is None or entry.name in domains:
            selected.append((entry, link))
        else:  # a link from a read domain into this one is caught as well
            for class_entry in _subfolders(entry.path):
                reached.enter(
                    class_entry.path, class_entry.path if class_entry.is_symlink() else link
                )
    per_domain: dict[str, dict[str, list[tuple]]] = {}
    for entry, link in selected:
        classes, skipped = _read_class_folders(
            Path(entry.path), DOMAINBED_LAYOUT, "domain folder", reached, link
        )
        per_domain[entry.name] = classes
        ignored += skipped
    _check_classes_agree(root_path, per_domain)
    _check_linked_files(per_domain, reached)
    extra = {"domains": list(domains) if domains is not None else None}
    return _build("domainbed", root_path, all_domains, per_domain, class_map, ignored, extra)


@_without_cycle_collection
def from_folder(
    root: str | os.PathLike, class_map: str | os.PathLike | dict[str, str] | None = None
) -> ImageDataset:
    """Read `<root>/<class>/<image>` as one domain named after the root folder."""
    root_path = _check_root(root, FOLDER_LAYOUT)
    reached = _Reached()
    reached.enter(str(root_path), None)
    classes, ignored = _read_class_folders(root_path, FOLDER_LAYOUT, "dataset folder", reached)
    domain = root_path.name or str(root_path)
    _check_linked_files({domain: classes}, reached)
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
    for entry in _subfolders(root_path, "class or domain folders"):
        if _holds_image(entry.path):
            class_like.append(entry.name)
        elif any(_holds_image(sub.path) for sub in _subfolders(entry.path)):
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
