"""World tasks as ImageDatasets: fixed, seeded image sets whose items render on demand."""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import numpy as np
from PIL import Image

from clipgauge.data.dataset import ImageDataset, Item
from clipgauge.data.folders import display_names, resolve_class_map
from clipgauge.errors import DataError
from clipgauge.world.render import check_size, render
from clipgauge.world.scene import WORLD_VERSION, sample_scene
from clipgauge.world.tasks import Task, get_task

SPLITS = ("train", "val", "test")
WORLD_PREFIX = "world:"  # data named world:<task>[?options] opens a world task
PATH_PREFIX = "world://"


def _tag(text: str) -> int:
    """A stable 32-bit number for a name (Python's hash() changes between runs)."""
    return zlib.crc32(text.encode("utf-8"))


def image_rng(
    task: str, split: str, domain: str, class_index: int, index: int, seed: int
) -> np.random.Generator:
    """The generator behind one image: a function of its identity only, never of render order.

    The split's name is part of the seed, so train and test images never coincide.
    """
    entropy = [seed, _tag(task), _tag(split), _tag(domain), class_index, index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def render_task_image(
    task: Task | str,
    split: str,
    domain: str,
    class_index: int,
    index: int,
    seed: int = 0,
    size: int = 64,
) -> np.ndarray:
    """Image `index` of class `class_index` of a task, split and domain: (size, size, 3) uint8."""
    task = get_task(task) if isinstance(task, str) else task
    rng = image_rng(task.name, split, domain, class_index, index, seed)
    scene = sample_scene(rng, **task.scene_constraints(class_index))
    return render(scene, domain, size, rng)


def item_path(task: str, split: str, domain: str, class_index: int, index: int) -> str:
    return f"{PATH_PREFIX}{task}/{split}/{domain}/{class_index}/{index}"


@dataclass(frozen=True)
class WorldLoader:
    """Renders an item of a world dataset from its virtual path (picklable for worker processes)."""

    task: Task
    seed: int
    size: int

    def __call__(self, item: Item) -> Image.Image:
        parts = (
            item.path[len(PATH_PREFIX) :].split("/") if item.path.startswith(PATH_PREFIX) else []
        )
        if len(parts) != 5 or parts[0] != self.task.name:
            raise DataError(f"{item.path!r} is not an image of world task {self.task.name!r}")
        _, split, domain, class_index, index = parts
        pixels = render_task_image(
            self.task, split, domain, int(class_index), int(index), self.seed, self.size
        )
        return Image.fromarray(pixels, "RGB")


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"world option {name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def world_dataset(
    task: Task | str,
    split: str = "test",
    per_class: int = 50,
    seed: int = 0,
    size: int = 64,
    domains: Sequence[str] | None = None,
) -> ImageDataset:
    """`per_class` images of every class in every domain of `task` (or of `domains` only).

    Labels index `task.classes`, domain indices index `task.domains` (also when `domains`
    selects some). Images render when loaded; `source` pins every pixel.
    """
    task = get_task(task) if isinstance(task, str) else task
    if split not in SPLITS:
        raise DataError(f"world split must be one of {', '.join(SPLITS)}, not {split!r}")
    per_class = _check_count("per_class", per_class, 1)
    seed = _check_count("seed", seed, 0)
    size = check_size(size)
    chosen = list(task.domains) if domains is None else list(domains)
    unknown = [d for d in chosen if d not in task.domains]
    if unknown or not chosen:
        raise DataError(
            f"world task {task.name!r} has no domain(s) {unknown or '(none chosen)'}; "
            f"its domains: {', '.join(task.domains)}"
        )
    items = [
        Item(item_path(task.name, split, d, c, i), label=c, domain=task.domains.index(d))
        for d in task.domains
        if d in chosen
        for c in range(len(task.classes))
        for i in range(per_class)
    ]
    source = {
        "kind": "world",
        "task": task.name,
        "split": split,
        "per_class": per_class,
        "seed": seed,
        "size": size,
        "world_version": WORLD_VERSION,
        "fixed": dict(task.fixed),  # tasks.yaml can change what a task's scenes hold
    }
    if domains is not None:
        source["domains"] = chosen
    return ImageDataset(
        items=items,
        class_names=list(task.classes),
        domain_names=list(task.domains),
        loader=WorldLoader(task, seed, size),
        source=source,
        templates=list(task.templates),
    )


_OPTIONS = {"split": str, "per_class": int, "seed": int, "size": int, "domains": str}


def parse_world_spec(spec: str) -> tuple[str, dict[str, object]]:
    """Split `task?option=value&...` into the task name and typed options (DataError if bad)."""
    task, _, query = spec.partition("?")
    if not task:
        raise DataError(f"world dataset {spec!r} names no task; use world:<task>")
    options: dict[str, object] = {}
    try:
        pairs = parse_qs(query, keep_blank_values=True, strict_parsing=True) if query else {}
    except ValueError:
        raise DataError(
            f"cannot read the options in world:{spec}; write them as ?name=value&name=value"
        ) from None
    for name, texts in pairs.items():
        if name not in _OPTIONS:
            raise DataError(
                f"unknown world option {name!r} in world:{spec}; known: {', '.join(_OPTIONS)}"
            )
        if len(texts) != 1:
            raise DataError(f"world option {name!r} is given {len(texts)} times in world:{spec}")
        text = texts[0]
        if _OPTIONS[name] is int:
            try:
                options[name] = int(text)
            except ValueError:
                raise DataError(
                    f"world option {name} must be an integer, not {text!r} (in world:{spec})"
                ) from None
        elif name == "domains":
            options[name] = [d for d in text.split(",") if d]
        else:
            options[name] = text
    return task, options


def open_world(
    spec: str,
    domains: Sequence[str] | None = None,
    class_map: str | os.PathLike | dict[str, str] | None = None,
) -> ImageDataset:
    """The dataset for `--data world:<spec>`, e.g. `shapes` or `shapes?split=train&per_class=100`.

    Options: split (train, val, test; default test), per_class (50), seed (0), size (64) and
    domains (comma-separated). `domains` given here as well must agree with the option.
    `class_map` renames classes for display and prompts (keys: class names or folder names).
    """
    spec = spec.removeprefix(WORLD_PREFIX)
    if not spec:
        raise DataError(f"'{WORLD_PREFIX}' needs a task name, as in {WORLD_PREFIX}<task>")
    name, options = parse_world_spec(spec)
    task = get_task(name)
    if domains is not None:
        if "domains" in options and list(options["domains"]) != list(domains):
            raise DataError(
                f"world:{spec} selects domains {options['domains']} but {list(domains)} were "
                "also asked for; give the domains once"
            )
        options["domains"] = list(domains)
    dataset = world_dataset(task, **options)
    if class_map is not None:
        mapping, label = resolve_class_map(class_map)
        # Keys may be class names or their export folder names (`on_the_left`).
        folders = dict(zip(task.folder_names(), task.classes, strict=True))
        mapping = {folders.get(key, key): name for key, name in mapping.items()}
        dataset.class_names = display_names(list(task.classes), mapping, label)
        dataset.source["class_map"] = label
    return dataset
