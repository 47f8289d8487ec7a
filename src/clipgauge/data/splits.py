"""Deterministic train/test splits, stratified per (domain, class), or read from path lists."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from clipgauge.data.dataset import ImageDataset
from clipgauge.errors import DataError


def split_train_test(
    dataset: ImageDataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Split each (domain, class) group: round(n * test_fraction) images go to test.

    A group keeps at least one image in train, and (when it has two or more and the fraction
    is positive) gives at least one to test. Both outputs keep the dataset's order.
    """
    _check_fraction(test_fraction, "test_fraction", allow_zero=True)
    test = _stratified_pick(dataset, test_fraction, seed)
    train = _complement(len(dataset), test)
    record = {"method": "stratified", "seed": seed, "test_fraction": test_fraction}
    return (
        _with_split(dataset, train, {"name": "train", **record}),
        _with_split(dataset, test, {"name": "test", **record}),
    )


def select_split(
    dataset: ImageDataset, split: str, *, seed: int = 0, test_fraction: float = 0.2
) -> ImageDataset:
    """`all` returns the dataset itself; `train`/`test` the side of `split_train_test`."""
    if split == "all":
        return dataset
    if split not in ("train", "test"):
        raise DataError(f"--split {split!r} is not one of all, train, test")
    train, test = split_train_test(dataset, test_fraction=test_fraction, seed=seed)
    return train if split == "train" else test


def holdout(
    dataset: ImageDataset, fraction: float = 0.1, max_items: int = 5000, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a stratified `fraction` (at most `max_items` images) e.g. for validation.

    Returns (rest, held_out). When the cap binds, each group's share shrinks in proportion.
    """
    _check_fraction(fraction, "fraction", allow_zero=False)
    if max_items < 1:
        raise DataError(f"holdout max_items must be at least 1, got {max_items}")
    held = _stratified_pick(dataset, fraction, seed, max_items=max_items)
    rest = _complement(len(dataset), held)
    record = {"method": "holdout", "seed": seed, "fraction": fraction, "max_items": max_items}
    return (
        _with_split(dataset, rest, {"name": "rest", **record}),
        _with_split(dataset, held, {"name": "held_out", **record}),
    )


def split_from_files(
    dataset: ImageDataset, train_file: str | os.PathLike, test_file: str | os.PathLike
) -> tuple[ImageDataset, ImageDataset]:
    """Split by two text files listing image paths relative to the dataset root, one per line.

    Blank lines and lines starting with '#' are skipped; images in neither file are dropped.
    """
    root = dataset.source.get("root")
    if not root:
        raise DataError(
            "split files need a dataset read from a folder or CSV (one with a root folder); "
            f"this dataset comes from {dataset.source.get('kind', 'an unknown source')}"
        )
    by_relative = {
        Path(os.path.relpath(item.path, root)).as_posix(): i for i, item in enumerate(dataset.items)
    }
    train_lines = _read_split_file(Path(train_file), by_relative, root)
    test_lines = _read_split_file(Path(test_file), by_relative, root)
    overlap = sorted(set(train_lines) & set(test_lines))
    if overlap:
        shown = "; ".join(
            f"{dataset.items[i].path} (train line {train_lines[i]}, test line {test_lines[i]})"
            for i in overlap[:5]
        )
        more = f" and {len(overlap) - 5} more" if len(overlap) > 5 else ""
        raise DataError(
            f"split files {train_file} and {test_file} share {len(overlap)} image(s): "
            f"{shown}{more}; list each image in one file only"
        )
    record = {
        "method": "files",
        "train_file": str(Path(train_file).absolute()),
        "test_file": str(Path(test_file).absolute()),
    }
    return (
        _with_split(dataset, sorted(train_lines), {"name": "train", **record}),
        _with_split(dataset, sorted(test_lines), {"name": "test", **record}),
    )


def _read_split_file(path: Path, by_relative: dict[str, int], root: str) -> dict[int, int]:
    """Dataset index -> line number for each path listed in a split file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"split file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read split file {path} ({error})") from None
    picked: dict[int, int] = {}
    for number, raw in enumerate(lines, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        relative = Path(os.path.normpath(entry.replace("\\", "/"))).as_posix()
        index = by_relative.get(relative)
        if index is None:
            raise DataError(
                f"split file {path}, line {number}: {entry!r} is not an image of the dataset "
                f"at {root}; paths must be relative to that folder"
            )
        if index in picked:
            raise DataError(
                f"split file {path}, line {number}: {entry!r} is already listed on line "
                f"{picked[index]}; list each image once"
            )
        picked[index] = number
    return picked


def _stratified_pick(
    dataset: ImageDataset, fraction: float, seed: int, max_items: int | None = None
) -> list[int]:
    """Indices picked per (domain, class) group, in dataset order (see `split_train_test`)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"split seed must be a non-negative integer, got {seed!r}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(dataset.items):
        groups.setdefault((item.domain, item.label), []).append(i)
    keys = sorted(groups)
    counts = [_group_count(len(groups[key]), fraction) for key in keys]
    if max_items is not None and sum(counts) > max_items:
        counts = _shrink(counts, max_items)
    picked: list[int] = []
    for key, count in zip(keys, counts, strict=True):
        members = groups[key]
        domain, label = key
        # Names, not indices, seed the group: a group's split survives adding other classes.
        group_name = f"{dataset.domain_names[domain]}\0{dataset.class_names[label]}"
        rng = np.random.default_rng([int(seed), zlib.crc32(group_name.encode("utf-8"))])
        order = rng.permutation(len(members))
        picked.extend(members[j] for j in order[:count])
    return sorted(picked)


def _group_count(n: int, fraction: float) -> int:
    count = int(round(n * fraction))
    if n >= 2 and fraction > 0:
        count = max(count, 1)
    return min(count, max(n - 1, 0))


def _shrink(counts: list[int], cap: int) -> list[int]:
    """Scale counts to sum to `cap` by largest remainder (ties to the earlier group)."""
    total = sum(counts)
    exact = [c * cap / total for c in counts]
    shrunk = [int(x) for x in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(exact[i] - shrunk[i]), i))
    for i in by_remainder[: cap - sum(shrunk)]:
        shrunk[i] += 1
    return shrunk


def _complement(n: int, picked: list[int]) -> list[int]:
    chosen = set(picked)
    return [i for i in range(n) if i not in chosen]


def _with_split(dataset: ImageDataset, indices: list[int], record: dict) -> ImageDataset:
    # A list, so a holdout taken from a train split still records both steps.
    splits = [*dataset.source.get("splits", []), record]
    return dataset.subset(indices, splits=splits)


def _check_fraction(value: float, name: str, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise DataError(f"split {name} must be in {bound}, got {value}")
