"""Study specs: a YAML file naming the model, tasks, forgetting suite, methods, training and seeds.

Every problem is a SpecError naming the file, the line and what is allowed, e.g.
`study.yaml:12: unknown key 'metods' (allowed: ...; did you mean 'methods'?)`. Paths in a spec
(data folders, CSV manifests, template files, a model folder) are relative to the spec file.
The shipped specs live in `clipgauge/study/specs/` (`world`, `paper`); copy one to start.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clipgauge.errors import ClipgaugeError

DEFAULT_MODEL = "world-clip"
DEFAULT_SPEC = "world"
WORLD_PREFIX = "world:"
BASELINE_METHOD = "zeroshot"
TOP_KEYS = (
    "name",
    "description",
    "model",
    "world",
    "tasks",
    "forgetting",
    "methods",
    "training",
    "seeds",
    "split",
    "eval",
    "keep_weights",
)
TASK_KEYS = ("data", "domains", "template", "train_domains")
WORLD_KEYS = ("per_class", "size", "seed")
SPLIT_KEYS = ("test_fraction", "seed")
EVAL_KEYS = ("max_images_per_domain",)
TRAINING_EXTRA_KEYS = ("preset", "per_method")
TEMPLATE_FILE_SUFFIXES = (".txt", ".json", ".yaml", ".yml")


class SpecError(ClipgaugeError):
    """A study spec is unreadable or has a wrong key, type or value (message names file:line)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(where + message)
        self.file, self.line = file, line


# YAML with line numbers -----------------------------------------------------------------------


class LineMap(dict):
    """A YAML mapping that remembers the line of itself, of each key and of each value."""

    line: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class LineList(list):
    """A YAML sequence that remembers its line and the line of each item."""

    line: int | None = None

    def __init__(self, *args):
        super().__init__(*args)
        self.item_lines: list[int] = []


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first: int):
        self.key, self.line, self.first = key, line, first


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineMap:
    loader.flatten_mapping(node)
    out = LineMap()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, list | dict):
            raise _DuplicateKey(key, line, 0)
        if key in out:
            raise _DuplicateKey(key, line, out.key_lines[key])
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
        out.value_lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_yaml_with_lines(text: str, origin: str) -> Any:
    """yaml.safe_load that keeps line numbers (LineMap/LineList) and rejects duplicate keys."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        if not dup.first:
            raise SpecError(f"a key must be a name, not {dup.key!r}", origin, dup.line) from None
        raise SpecError(
            f"key {dup.key!r} is given twice (first on line {dup.first}); give it once",
            origin,
            dup.line,
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"invalid YAML: {problem}", origin, line) from None


# The spec ------------------------------------------------------------------------------------


@dataclass
class TaskSpec:
    """One task: where its images are, which domains, prompt templates, what to train on."""

    name: str
    data: str  # as written in the spec (world options filled in)
    source: str  # what open_dataset gets: an absolute path, or world:<task>?...
    domains: list[str] | None
    templates: list[str]
    train_domains: list[list[str]]  # [] = evaluated only (forgetting suite)

    @property
    def is_world(self) -> bool:
        return self.source.startswith(WORLD_PREFIX)


@dataclass
class StudySpec:
    """A validated study spec. `lines` maps dotted keys (`tasks.pacs.data`) to spec lines."""

    name: str
    model: str  # as written
    model_source: str  # what load_clip gets
    tasks: dict[str, TaskSpec]
    forgetting: list[str]
    methods: dict[str, dict]
    preset: str
    training: dict[str, Any]
    per_method: dict[str, dict[str, Any]]
    seeds: list[int]
    test_fraction: float = 0.2
    split_seed: int = 0
    max_images_per_domain: int | None = None
    world: dict[str, int] = field(default_factory=dict)
    keep_weights: bool = False
    description: str = ""
    path: str | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def error(self, key: str, message: str) -> SpecError:
        """A SpecError at the line of `key` (or of its nearest parent that has one)."""
        parts = key.split(".")
        while parts and ".".join(parts) not in self.lines:
            parts.pop()
        line = self.lines.get(".".join(parts)) if parts else None
        return SpecError(f"{key}: {message}", self.path, line)

    def train_overrides(self, method: str) -> dict[str, Any]:
        """Training options for `method`: the spec's `training` values, then its per_method."""
        return {**self.training, **self.per_method.get(method, {})}

    def to_dict(self) -> dict:
        """The resolved spec as JSON-ready data (stored in the study database)."""
        out = dataclasses.asdict(self)
        out.pop("lines")
        out["tasks"] = {name: dataclasses.asdict(t) for name, t in self.tasks.items()}
        return out


def shipped_specs() -> dict[str, Path]:
    """The specs packaged with clipgauge, by name."""
    folder = resources.files("clipgauge.study").joinpath("specs")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def resolve_spec_path(spec: str | os.PathLike | None) -> Path:
    """A spec file from a path or a shipped name (`world`, `paper`); None is `world`."""
    if spec is None:
        spec = DEFAULT_SPEC
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    shipped = shipped_specs()
    if text in shipped:
        return shipped[text]
    if path.exists():
        raise SpecError(f"study spec {text} is a folder; give a .yaml file")
    raise SpecError(
        f"no study spec {text!r}: not a file and not a shipped spec "
        f"(shipped: {', '.join(sorted(shipped))})"
    )


def load_spec(spec: str | os.PathLike | None = None) -> StudySpec:
    """Read and validate a spec file, or a shipped spec by name (default `world`)."""
    path = resolve_spec_path(spec)
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read the study spec ({err})", origin) from None
    document = load_yaml_with_lines(text, origin)
    return parse_spec(document, origin=origin, base_dir=path.parent.resolve(), stem=path.stem)


def parse_spec(
    document: Any,
    *,
    origin: str | None = None,
    base_dir: str | os.PathLike | None = None,
    stem: str = "study",
) -> StudySpec:
    """Validate a spec document (from `load_yaml_with_lines`, or a plain dict without lines)."""
    return _Parser(origin, Path(base_dir or Path.cwd()), stem).parse(document)


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{value!r} (true/false)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Parser:
    def __init__(self, origin: str | None, base_dir: Path, stem: str):
        self.origin, self.base_dir, self.stem = origin, base_dir, stem
        self.lines: dict[str, int] = {}

    # helpers
    def fail(self, line: int | None, message: str) -> SpecError:
        return SpecError(message, self.origin, line)

    def value_line(self, parent: Any, key: Any) -> int | None:
        if isinstance(parent, LineMap):  # the key's line: where a reader looks for it
            return parent.key_lines.get(key, parent.line)
        if isinstance(parent, LineList) and isinstance(key, int) and key < len(parent.item_lines):
            return parent.item_lines[key]
        return getattr(parent, "line", None)

    def mapping(self, value: Any, where: str, line: int | None, allowed=None, required=()):
        if value is None:
            value = LineMap()
            value.line = line
        if not isinstance(value, dict):
            raise self.fail(line, f"{where} must be a mapping, not {_type_name(value)}")
        for key in value:
            key_line = value.key_lines.get(key) if isinstance(value, LineMap) else line
            if not isinstance(key, str):
                raise self.fail(key_line, f"{where}: key {key!r} must be a name (a string)")
            if allowed is not None and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                guess = f"; did you mean {hint[0]!r}?" if hint else ""
                raise self.fail(
                    key_line,
                    f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)}){guess}",
                )
        for key in required:
            if key not in value:
                raise self.fail(getattr(value, "line", line), f"{where} needs the key {key!r}")
        return value

    def note(self, dotted: str, parent: Any, key: Any) -> int | None:
        line = self.value_line(parent, key)
        if line is not None:
            self.lines[dotted] = line
        return line

    def string(self, value: Any, where: str, line: int | None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(line, f"{where} must be a non-empty string, not {_type_name(value)}")
        return value.strip()

    def integer(self, value: Any, where: str, line: int | None, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(line, f"{where} must be an integer >= {minimum}, not {value!r}")
        if value < minimum:
            raise self.fail(line, f"{where} must be an integer >= {minimum}, not {value}")
        return value

    def string_list(self, value: Any, where: str, line: int | None) -> list[str]:
        if not isinstance(value, list) or not value:
            raise self.fail(
                line, f"{where} must be a non-empty list of names, not {_type_name(value)}"
            )
        out = []
        for i, item in enumerate(value):
            item_line = self.value_line(value, i)
            out.append(self.string(item, f"{where}[{i}]", item_line))
        duplicates = sorted({v for v in out if out.count(v) > 1})
        if duplicates:
            raise self.fail(line, f"{where} lists {duplicates} more than once")
        return out

    def relative_path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    # the spec
    def parse(self, document: Any) -> StudySpec:
        if document is None:
            raise self.fail(1, "the study spec is empty; it needs at least `tasks`")
        top = self.mapping(document, "the study spec", getattr(document, "line", 1), TOP_KEYS)
        for key in top:
            self.note(key, top, key)
        line = self.lines.get
        name = self.string(top["name"], "name", line("name")) if "name" in top else self.stem
        description = ""
        if top.get("description") is not None:
            description = self.string(top["description"], "description", line("description"))
        model = DEFAULT_MODEL
        if "model" in top:
            model = self.string(top["model"], "model", line("model"))
        model_source = model
        if model.startswith((".", "/", "~")) or self.relative_path(model).exists():
            model_source = str(self.relative_path(model).resolve())
        world = self.world_options(top.get("world"), line("world"))
        if "tasks" not in top:
            raise self.fail(getattr(top, "line", 1), "the study spec needs `tasks`")
        tasks = self.tasks(top["tasks"], line("tasks"), world)
        forgetting = list(tasks)
        if "forgetting" in top:
            forgetting = self.forgetting(top, tasks)
        if not any(t.train_domains for t in tasks.values()):
            raise self.fail(
                line("tasks"), "no task has train_domains: there is nothing to fine-tune"
            )
        methods = self.methods(top.get("methods"), line("methods"))
        preset, training, per_method = self.training(
            top.get("training"), line("training"), methods, model
        )
        seeds = [0]
        if "seeds" in top:
            seeds = self.seeds(top["seeds"], line("seeds"))
        split = self.mapping(top.get("split"), "split", line("split"), SPLIT_KEYS)
        test_fraction = split.get("test_fraction", 0.2)
        tf_line = self.note("split.test_fraction", split, "test_fraction")
        if (
            isinstance(test_fraction, bool)
            or not isinstance(test_fraction, int | float)
            or not 0 < test_fraction < 1
        ):
            raise self.fail(
                tf_line, f"split.test_fraction must be a number in (0, 1), not {test_fraction!r}"
            )
        split_seed = self.integer(
            split.get("seed", 0), "split.seed", self.note("split.seed", split, "seed"), 0
        )
        evaluation = self.mapping(top.get("eval"), "eval", line("eval"), EVAL_KEYS)
        cap = evaluation.get("max_images_per_domain")
        if cap is not None:
            cap_line = self.note("eval.max_images_per_domain", evaluation, "max_images_per_domain")
            cap = self.integer(cap, "eval.max_images_per_domain", cap_line, 1)
        keep_weights = top.get("keep_weights", False)
        if not isinstance(keep_weights, bool):
            raise self.fail(
                line("keep_weights"), f"keep_weights must be true or false, not {keep_weights!r}"
            )
        return StudySpec(
            name=name,
            model=model,
            model_source=model_source,
            tasks=tasks,
            forgetting=forgetting,
            methods=methods,
            preset=preset,
            training=training,
            per_method=per_method,
            seeds=seeds,
            test_fraction=float(test_fraction),
            split_seed=split_seed,
            max_images_per_domain=cap,
            world=world,
            keep_weights=keep_weights,
            description=description,
            path=self.origin,
            lines=self.lines,
        )

    def world_options(self, value: Any, line: int | None) -> dict[str, int]:
        options = self.mapping(value, "world", line, WORLD_KEYS)
        out = {}
        for key, raw in options.items():
            key_line = self.note(f"world.{key}", options, key)
            out[key] = self.integer(raw, f"world.{key}", key_line, 0 if key == "seed" else 1)
        return out

    def tasks(self, value: Any, line: int | None, world: dict) -> dict[str, TaskSpec]:
        tasks_map = self.mapping(value, "tasks", line)
        if not tasks_map:
            raise self.fail(line, "tasks is empty; name at least one task")
        return {
            name: self.task(name, entry, self.note(f"tasks.{name}", tasks_map, name), world)
            for name, entry in tasks_map.items()
        }

    def task(self, name: str, value: Any, line: int | None, world: dict) -> TaskSpec:
        from clipgauge.prompts import load_templates
        from clipgauge.world.tasks import load_tasks

        where = f"tasks.{name}"
        entry = self.mapping(value, where, line, TASK_KEYS)
        for key in entry:
            self.note(f"{where}.{key}", entry, key)
        lines = {k: self.lines.get(f"{where}.{k}", line) for k in TASK_KEYS}
        world_tasks = load_tasks()
        if "data" in entry:
            data = self.string(entry["data"], f"{where}.data", lines["data"])
        elif name in world_tasks:
            data = f"{WORLD_PREFIX}{name}"
        else:
            raise self.fail(
                line,
                f"{where} needs `data`: a folder (<domain>/<class>/<image>), a .csv manifest or "
                f"world:<task> (a task named like a world task, one of {', '.join(world_tasks)}, "
                "may leave it out)",
            )
        world_task = None
        if data.startswith(WORLD_PREFIX):
            data, world_task = self.world_data(data, world, f"{where}.data", lines["data"])
            source = data
        else:
            source = str(self.relative_path(data).resolve())
        domains = None
        if entry.get("domains") is not None:
            domains = self.string_list(entry["domains"], f"{where}.domains", lines["domains"])
            if world_task is not None:
                self.known_domains(domains, world_task.domains, f"{where}.domains", entry)
        template = entry.get("template")
        if template is None and world_task is not None:
            template = list(world_task.templates)
        if template is not None and not isinstance(template, str | list):
            raise self.fail(
                lines["template"],
                f"{where}.template must be a template string with {{}} or a list of them, "
                f"not {_type_name(template)}",
            )
        if isinstance(template, str) and Path(template).suffix in TEMPLATE_FILE_SUFFIXES:
            template = str(self.relative_path(template))  # a file of templates
        try:
            templates = load_templates(template)
        except ClipgaugeError as err:
            raise self.fail(lines["template"], f"{where}.template: {err}") from None
        if "train_domains" not in entry:
            raise self.fail(
                line,
                f"{where} needs `train_domains`: a list of domain sets to fine-tune on, e.g. "
                "[[photo]] or [[photo], [cartoon]]; [] evaluates the task for forgetting only",
            )
        train_domains = self.train_domains(entry, where, lines["train_domains"], domains)
        if world_task is not None:
            known = domains or list(world_task.domains)
            for i, chosen in enumerate(train_domains):
                self.known_domains(chosen, known, f"{where}.train_domains[{i}]", entry)
        return TaskSpec(
            name=name,
            data=data,
            source=source,
            domains=domains,
            templates=templates,
            train_domains=train_domains,
        )

    def known_domains(self, chosen, known, where: str, entry) -> None:
        unknown = [d for d in chosen if d not in known]
        if unknown:
            line = self.lines.get(where.split("[")[0], getattr(entry, "line", None))
            raise self.fail(
                line, f"{where}: unknown domain(s) {unknown}; the task has {', '.join(known)}"
            )

    def world_data(self, data: str, world: dict, where: str, line: int | None):
        from clipgauge.world.dataset import parse_world_spec
        from clipgauge.world.tasks import get_task

        try:
            task_name, options = parse_world_spec(data[len(WORLD_PREFIX) :])
            task = get_task(task_name)
        except ClipgaugeError as err:
            raise self.fail(line, f"{where}: {err}") from None
        options = {**world, **options}
        query = "&".join(
            f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in sorted(options.items())
        )
        return f"{WORLD_PREFIX}{task_name}" + (f"?{query}" if query else ""), task

    def train_domains(self, entry, where: str, line, domains) -> list[list[str]]:
        value = entry["train_domains"]
        usage = "a list of domain sets, e.g. [[photo]] or [[photo], [cartoon]]"
        if not isinstance(value, list):
            raise self.fail(line, f"{where}.train_domains must be {usage}, not {value!r}")
        out = []
        for i, item in enumerate(value):
            item_line = self.value_line(value, i)
            if not isinstance(item, list):
                raise self.fail(
                    item_line,
                    f"{where}.train_domains[{i}] must be a list of domains (write [{item}] "
                    f"for one domain); train_domains is {usage}",
                )
            chosen = self.string_list(item, f"{where}.train_domains[{i}]", item_line)
            if domains is not None:
                self.known_domains(chosen, domains, f"{where}.train_domains[{i}]", entry)
            if sorted(chosen) in [sorted(c) for c in out]:
                raise self.fail(item_line, f"{where}.train_domains lists {chosen} twice")
            out.append(chosen)
        return out

    def forgetting(self, top, tasks: dict[str, TaskSpec]) -> list[str]:
        value, line = top["forgetting"], self.lines.get("forgetting")
        if value is None or value == []:
            return []
        names = self.string_list(value, "forgetting", line)
        for i, name in enumerate(names):
            if name not in tasks:
                raise self.fail(
                    self.value_line(value, i),
                    f"forgetting: unknown task {name!r}; tasks of this spec: {', '.join(tasks)}",
                )
        return names

    def methods(self, value: Any, line: int | None) -> dict[str, dict]:
        from clipgauge.methods import get_method, method_names

        known = method_names()
        if value is None:
            return {name: {} for name in known}
        methods = self.mapping(value, "methods", line)
        out: dict[str, dict] = {}
        if BASELINE_METHOD not in methods:
            out[BASELINE_METHOD] = {}
        for name, options in methods.items():
            method_line = self.note(f"methods.{name}", methods, name)
            key_line = methods.key_lines.get(name) if isinstance(methods, LineMap) else line
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                guess = f"; did you mean {hint[0]!r}?" if hint else ""
                raise self.fail(
                    key_line, f"methods: unknown method {name!r} (known: {', '.join(known)}){guess}"
                )
            options = self.mapping(options, f"methods.{name}", method_line)
            try:
                get_method(name).make_config(dict(options))
            except (ClipgaugeError, TypeError, ValueError) as err:
                raise self.fail(method_line, f"methods.{name}: {err}") from None
            out[name] = _plain(options)
        return out

    def training(self, value: Any, line: int | None, methods: dict, model: str):
        from clipgauge.training.config import (
            AUTO_PRESET,
            TrainConfig,
            load_presets,
            resolve_train_config,
        )

        fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
        allowed = (*TRAINING_EXTRA_KEYS, *fields)
        if isinstance(value, dict) and "seed" in value:
            raise self.fail(
                self.value_line(value, "seed"),
                "training.seed: the study's `seeds` (a list, at the top) set the training seeds",
            )
        training = self.mapping(value, "training", line, allowed)
        presets = load_presets()
        preset = training.get("preset", AUTO_PRESET)
        preset_line = self.note("training.preset", training, "preset")
        if preset not in (*presets, AUTO_PRESET, "none"):
            raise self.fail(
                preset_line,
                f"training.preset {preset!r} is not one of {', '.join([*presets, 'auto', 'none'])}",
            )
        overrides = {}
        for key in fields:
            if key in training:
                overrides[key] = self.train_value(
                    key, training[key], "training", self.note(f"training.{key}", training, key)
                )
        per_method = {}
        pm_line = self.note("training.per_method", training, "per_method")
        per_method_map = self.mapping(training.get("per_method"), "training.per_method", pm_line)
        for name, options in per_method_map.items():
            where = f"training.per_method.{name}"
            entry_line = self.note(where, per_method_map, name)
            if name not in methods:
                raise self.fail(
                    entry_line,
                    f"{where}: {name!r} is not a method of this study ({', '.join(methods)})",
                )
            options = self.mapping(options, where, entry_line, fields)
            per_method[name] = {
                key: self.train_value(key, raw, where, self.note(f"{where}.{key}", options, key))
                for key, raw in options.items()
            }
        for name in methods:
            if name == BASELINE_METHOD:
                continue
            try:
                resolve_train_config(name, {**overrides, **per_method.get(name, {})}, preset, model)
            except ClipgaugeError as err:
                where_line = self.lines.get(f"training.per_method.{name}", line)
                raise self.fail(where_line, f"training (method {name}): {err}") from None
        return preset, overrides, per_method

    def train_value(self, key: str, value: Any, where: str, line: int | None):
        from clipgauge.training.config import TrainConfig

        try:
            return TrainConfig.from_dict({key: value}, where).to_dict()[key]
        except ClipgaugeError as err:
            raise self.fail(line, str(err)) from None

    def seeds(self, value: Any, line: int | None) -> list[int]:
        if not isinstance(value, list) or not value:
            raise self.fail(
                line, f"seeds must be a non-empty list of integers, e.g. [0, 1], not {value!r}"
            )
        seeds = [
            self.integer(seed, f"seeds[{i}]", self.value_line(value, i), 0)
            for i, seed in enumerate(value)
        ]
        if len(set(seeds)) != len(seeds):
            raise self.fail(line, f"seeds lists a seed twice: {seeds}")
        return seeds


def _plain(value: Any) -> Any:
    """LineMap/LineList -> dict/list (JSON round trip keeps only plain data)."""
    return json.loads(json.dumps(value))
