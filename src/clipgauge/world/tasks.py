"""World classification tasks as data: `tasks.yaml` gives each attribute, classes and prompt."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from clipgauge.errors import DataError
from clipgauge.world.captions import caption_words, vocabulary
from clipgauge.world.scene import ATTRIBUTES, allowed_values
from clipgauge.world.styles import load_domains

_KEYS = {"attribute", "classes", "values", "templates", "template", "domains", "fixed"}
_REQUIRED = ("attribute", "classes", "domains")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Task:
    """Classify `attribute` into `classes` (scene values `values`); prompts fill `templates`,
    an ensemble when there are several (their class embeddings are averaged)."""

    name: str
    attribute: str
    classes: tuple[str, ...]
    templates: tuple[str, ...]
    domains: tuple[str, ...]
    values: tuple = ()  # attribute value per class; the class names themselves when empty
    fixed: dict = field(default_factory=dict)  # other attributes pinned to a value or a list

    def __post_init__(self) -> None:
        if not self.values:
            object.__setattr__(self, "values", tuple(self.classes))

    def prompts(self) -> list[str]:
        """Every zero-shot prompt: each template's prompts in class order, template by template."""
        return [t.format(name) for t in self.templates for name in self.classes]

    def folder_names(self) -> list[str]:
        """Class folder names for a DomainBed export: spaces become `_`."""
        return [name.replace(" ", "_") for name in self.classes]

    def scene_constraints(self, class_index: int) -> dict[str, object]:
        """`sample_scene` keyword arguments for an image of class `class_index`."""
        return {**self.fixed, self.attribute: self.values[class_index]}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "attribute": self.attribute,
            "classes": list(self.classes),
            "values": list(self.values),
            "templates": list(self.templates),
            "domains": list(self.domains),
            "fixed": dict(self.fixed),
        }


def _string_list(entry: dict, key: str, where: str) -> list[str]:
    value = entry[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: `{key}` must be a non-empty list of names, not {value!r}")
    if len(set(value)) != len(value):
        raise DataError(f"{where}: `{key}` lists a name twice: {value}")
    return value


def parse_task(name: str, entry: object, origin: str = "tasks.yaml") -> Task:
    """Check one task entry; every problem is a DataError naming the file, task and field."""
    where = f"{origin}, task {name!r}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataError(f"{where}: task names use lower-case letters, digits, '-' and '_'")
    if not isinstance(entry, dict):
        raise DataError(
            f"{where}: expected a mapping with keys {', '.join(_REQUIRED)} and templates"
        )
    unknown = sorted(set(entry) - _KEYS)
    missing = [k for k in _REQUIRED if k not in entry]
    if unknown or missing:
        raise DataError(
            f"{where}: unknown key(s) {unknown} / missing key(s) {missing}; "
            f"allowed: {', '.join(sorted(_KEYS))}"
        )
    attribute = entry["attribute"]
    if attribute not in ATTRIBUTES:
        raise DataError(f"{where}: attribute {attribute!r} is not one of {', '.join(ATTRIBUTES)}")
    classes = _string_list(entry, "classes", where)
    if len(classes) < 2:
        raise DataError(f"{where}: a task needs at least two classes")
    values = entry.get("values", classes)
    if not isinstance(values, list) or len(values) != len(classes):
        raise DataError(f"{where}: `values` must list one {attribute} per class")
    try:
        allowed_values(attribute, values)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    if len(set(values)) != len(values):
        raise DataError(f"{where}: two classes have the same {attribute}: {values}")

    templates = _templates(entry, where)
    known = set(vocabulary())
    for prompt in (t.format(name) for t in templates for name in classes):  # as Task.prompts
        outside = sorted(set(caption_words(prompt)) - known)
        if outside:
            raise DataError(
                f"{where}: prompt {prompt!r} uses {outside}, which no caption contains; "
                "use words from clipgauge.world.vocabulary()"
            )

    domains = _string_list(entry, "domains", where)
    known_domains = list(load_domains())
    bad = [d for d in domains if d not in known_domains]
    if bad:
        raise DataError(f"{where}: unknown domain(s) {bad}; known: {', '.join(known_domains)}")

    fixed = entry.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise DataError(f"{where}: `fixed` must map attributes to a value or a list of values")
    if attribute in fixed:
        raise DataError(f"{where}: `fixed` cannot pin the task's own attribute {attribute!r}")
    for key, value in fixed.items():
        try:
            allowed_values(key, value)
        except DataError as error:
            raise DataError(f"{where}: fixed: {error}") from None
    return Task(
        name=name,
        attribute=attribute,
        classes=tuple(classes),
        templates=tuple(templates),
        domains=tuple(domains),
        values=tuple(values),
        fixed={k: list(v) if isinstance(v, (list, tuple)) else v for k, v in fixed.items()},
    )


def _templates(entry: dict, where: str) -> list[str]:
    """`templates` (a list: an ensemble) or `template` (one string), each with one {}."""
    if ("templates" in entry) == ("template" in entry):
        raise DataError(
            f"{where}: give `templates` (a list of prompts with {{}} for the class) or "
            "`template` (one such prompt), not both or neither"
        )
    templates = entry.get("templates", [entry.get("template")])
    if not isinstance(templates, list) or not templates:
        raise DataError(f"{where}: `templates` must be a non-empty list, not {templates!r}")
    for template in templates:
        if (
            not isinstance(template, str)
            or template.count("{}") != 1
            or "{" in template.replace("{}", "")
        ):
            raise DataError(f"{where}: a template must contain exactly one {{}}, got {template!r}")
    if len(set(templates)) != len(templates):
        raise DataError(f"{where}: `templates` lists a template twice: {templates}")
    return templates


def parse_tasks(document: object, origin: str = "tasks.yaml") -> dict[str, Task]:
    if not isinstance(document, dict) or not document:
        raise DataError(f"{origin} must map task names to task entries")
    return {name: parse_task(name, entry, origin) for name, entry in document.items()}


@lru_cache(maxsize=1)
def _packaged_tasks() -> dict[str, Task]:
    text = resources.files("clipgauge.world").joinpath("tasks.yaml").read_text("utf-8")
    return parse_tasks(yaml.safe_load(text))


def load_tasks(path: str | os.PathLike | None = None) -> dict[str, Task]:
    """The world's tasks by name: the packaged `tasks.yaml`, or a YAML file of the same form."""
    if path is None:
        return dict(_packaged_tasks())
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"cannot read task file {path} ({error})") from None
    except yaml.YAMLError as error:
        raise DataError(f"task file {path} is not valid YAML ({error})") from None
    return parse_tasks(document, origin=str(path))


def list_tasks() -> list[Task]:
    """The packaged tasks in file order."""
    return list(_packaged_tasks().values())


def get_task(name: str) -> Task:
    """A packaged task by name; an unknown name is a DataError listing the known ones."""
    tasks = _packaged_tasks()
    if name not in tasks:
        raise DataError(f"unknown world task {name!r}; known tasks: {', '.join(tasks)}")
    return tasks[name]
