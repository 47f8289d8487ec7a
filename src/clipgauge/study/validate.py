"""Check a study spec document key by key and build the StudySpec.

Every problem is a SpecError naming the file, the line and what is allowed, e.g.
`study.yaml:12: unknown key 'metods' (allowed: ...; did you mean 'methods'?)`. The allowed
keys come from the table in `clipgauge.study.schema`.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from clipgauge import DEFAULT_MODEL
from clipgauge.errors import ClipgaugeError
from clipgauge.methods import baseline_method, get_method, method_names
from clipgauge.prompts import load_templates
from clipgauge.study.schema import (
    EVAL_KEYS,
    RESOURCE_KEYS,
    SPLIT_KEYS,
    TASK_KEYS,
    TOP_KEYS,
    TRAIN_OPTION_KEYS,
    TRAINING_KEYS,
    WORLD_KEYS,
    RunResources,
    StudySpec,
    TaskSpec,
    study_default,
)
from clipgauge.study.spec_yaml import LineList, LineMap, SpecError
from clipgauge.training.config import (
    AUTO_PRESET,
    TrainConfig,
    load_presets,
    resolve_train_config,
)
from clipgauge.world.dataset import WORLD_PREFIX, parse_world_spec
from clipgauge.world.tasks import Task, get_task, load_tasks

TEMPLATE_FILE_SUFFIXES = (".txt", ".json", ".yaml", ".yml")


def validate_spec(document: Any, origin: str | None, base_dir: Path, stem: str) -> StudySpec:
    """The StudySpec of a spec document (a SpecError at the first problem).

    `origin` names the file in messages, `base_dir` is what relative paths are relative to and
    `stem` is the study's name when the spec gives none."""
    return _Validator(origin, base_dir, stem).spec(document)


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


def _plain(value: Any) -> Any:
    """LineMap/LineList -> dict/list (JSON round trip keeps only plain data)."""
    return json.loads(json.dumps(value))


def _unknown_name_hint(name: str, known) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


class _Checks:
    """Type checks of single values; each names the key and line of what is wrong."""

    def __init__(self, origin: str | None, base_dir: Path):
        self.origin, self.base_dir = origin, base_dir
        self.lines: dict[str, int] = {}

    def fail(self, line: int | None, message: str) -> SpecError:
        return SpecError(message, self.origin, line)

    def value_line(self, parent: Any, key: Any) -> int | None:
        if isinstance(parent, LineMap):  # the key's line: where a reader looks for it
            return parent.key_lines.get(key, parent.line)
        if isinstance(parent, LineList) and isinstance(key, int) and key < len(parent.item_lines):
            return parent.item_lines[key]
        return getattr(parent, "line", None)

    def note(self, dotted: str, parent: Any, key: Any) -> int | None:
        """Remember the line of `parent[key]` under its dotted name; return it."""
        line = self.value_line(parent, key)
        if line is not None:
            self.lines[dotted] = line
        return line

    def mapping(self, value: Any, where: str, line: int | None, allowed=None):
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
                raise self.fail(
                    key_line,
                    f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)})"
                    + _unknown_name_hint(key, allowed),
                )
        return value

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


class _Validator(_Checks):
    """The spec's sections, in the order their problems are reported."""

    def __init__(self, origin: str | None, base_dir: Path, stem: str):
        super().__init__(origin, base_dir)
        self.stem = stem

    def spec(self, document: Any) -> StudySpec:
        if document is None:
            raise self.fail(1, "the study spec is empty; it needs at least `tasks`")
        top = self.mapping(document, "the study spec", getattr(document, "line", 1), TOP_KEYS)
        for key in top:
            self.note(key, top, key)
        line = self.lines.get
        name, description = self.name_and_description(top)
        model, model_source = self.model(top)
        world = self.world_options(top.get("world"), line("world"))
        if "tasks" not in top:
            raise self.fail(getattr(top, "line", 1), "the study spec needs `tasks`")
        tasks = self.tasks(top["tasks"], line("tasks"), world)
        forgetting = self.forgetting(top, tasks) if "forgetting" in top else list(tasks)
        if not any(t.train_domains for t in tasks.values()):
            raise self.fail(
                line("tasks"), "no task has train_domains: there is nothing to fine-tune"
            )
        methods = self.methods(top.get("methods"), line("methods"))
        preset, training, per_method = self.training(
            top.get("training"), line("training"), methods, model
        )
        seeds = study_default("seeds")
        if "seeds" in top:
            seeds = self.seeds(top["seeds"], line("seeds"))
        test_fraction, split_seed = self.split(top.get("split"), line("split"))
        eval_caps = self.eval_options(top.get("eval"), line("eval"))
        keep_weights = self.keep_weights(top)
        resources = self.resources(top.get("resources"), line("resources"))
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
            test_fraction=test_fraction,
            split_seed=split_seed,
            **eval_caps,
            world=world,
            keep_weights=keep_weights,
            resources=resources,
            description=description,
            path=self.origin,
            lines=self.lines,
        )

    # the top-level values
    def name_and_description(self, top) -> tuple[str, str]:
        line = self.lines.get
        name = self.string(top["name"], "name", line("name")) if "name" in top else self.stem
        description = study_default("description")
        if top.get("description") is not None:
            description = self.string(top["description"], "description", line("description"))
        return name, description

    def model(self, top) -> tuple[str, str]:
        """The model as written, and what load_clip gets (a folder resolved against the spec)."""
        model = DEFAULT_MODEL
        if "model" in top:
            model = self.string(top["model"], "model", self.lines.get("model"))
        if model.startswith((".", "/", "~")) or self.relative_path(model).exists():
            return model, str(self.relative_path(model).resolve())
        return model, model

    def world_options(self, value: Any, line: int | None) -> dict[str, int]:
        options = self.mapping(value, "world", line, WORLD_KEYS)
        out = {}
        for key, raw in options.items():
            key_line = self.note(f"world.{key}", options, key)
            out[key] = self.integer(raw, f"world.{key}", key_line, 0 if key == "seed" else 1)
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

    def split(self, value: Any, line: int | None) -> tuple[float, int]:
        split = self.mapping(value, "split", line, SPLIT_KEYS)
        test_fraction = split.get("test_fraction", study_default("test_fraction"))
        fraction_line = self.note("split.test_fraction", split, "test_fraction")
        if (
            isinstance(test_fraction, bool)
            or not isinstance(test_fraction, int | float)
            or not 0 < test_fraction < 1
        ):
            raise self.fail(
                fraction_line,
                f"split.test_fraction must be a number in (0, 1), not {test_fraction!r}",
            )
        seed_line = self.note("split.seed", split, "seed")
        split_seed = self.integer(
            split.get("seed", study_default("split_seed")), "split.seed", seed_line, 0
        )
        return float(test_fraction), split_seed

    def eval_options(self, value: Any, line: int | None) -> dict[str, Any]:
        """The eval options by StudySpec field name: the caps (each an integer >= 1 or null)
        and the WiSE-FT alphas."""
        evaluation = self.mapping(value, "eval", line, EVAL_KEYS)
        caps: dict[str, Any] = {}
        for key in ("max_images_per_domain", "forgetting_images_per_task"):
            cap = evaluation.get(key, study_default(key))
            if cap is not None:
                cap = self.integer(cap, f"eval.{key}", self.note(f"eval.{key}", evaluation, key), 1)
            caps[key] = cap
        alphas_line = self.note("eval.wise_alphas", evaluation, "wise_alphas")
        caps["wise_alphas"] = self.alphas(evaluation.get("wise_alphas", []), alphas_line)
        return caps

    def alphas(self, value: Any, line: int | None) -> list[float]:
        where = "eval.wise_alphas"
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(line, f"{where} must be a list of numbers in (0, 1), not {value!r}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item < 1:
                raise self.fail(
                    self.value_line(value, i),
                    f"{where}[{i}] must be a number strictly between 0 (zero-shot) and 1 "
                    f"(fine-tuned), not {item!r}",
                )
            out.append(float(item))
        if len(set(out)) != len(out):
            raise self.fail(line, f"{where} lists an alpha twice: {value}")
        return sorted(out)

    def keep_weights(self, top) -> bool:
        keep_weights = top.get("keep_weights", study_default("keep_weights"))
        if not isinstance(keep_weights, bool):
            raise self.fail(
                self.lines.get("keep_weights"),
                f"keep_weights must be true or false, not {keep_weights!r}",
            )
        return keep_weights

    def resources(self, value: Any, line: int | None) -> RunResources:
        options = self.mapping(value, "resources", line, RESOURCE_KEYS)
        defaults = RunResources()
        gpus_line = self.note("resources.gpus_per_run", options, "gpus_per_run")
        gpus = options.get("gpus_per_run", defaults.gpus_per_run)
        if (
            isinstance(gpus, bool)
            or not isinstance(gpus, int | float)
            or not math.isfinite(gpus)
            or gpus < 0
            or (gpus > 1 and gpus != int(gpus))
        ):
            raise self.fail(
                gpus_line,
                "resources.gpus_per_run must be a whole number >= 0 or a fraction below 1 "
                f"(to share a GPU), not {gpus!r}",
            )
        cpus_line = self.note("resources.cpus_per_run", options, "cpus_per_run")
        cpus = options.get("cpus_per_run", defaults.cpus_per_run)
        cpus = self.integer(cpus, "resources.cpus_per_run", cpus_line, 1)
        return RunResources(gpus_per_run=gpus, cpus_per_run=cpus)

    # tasks
    def tasks(self, value: Any, line: int | None, world: dict) -> dict[str, TaskSpec]:
        tasks_map = self.mapping(value, "tasks", line)
        if not tasks_map:
            raise self.fail(line, "tasks is empty; name at least one task")
        return {
            name: self.task(name, entry, self.note(f"tasks.{name}", tasks_map, name), world)
            for name, entry in tasks_map.items()
        }

    def task(self, name: str, value: Any, line: int | None, world: dict) -> TaskSpec:
        where = f"tasks.{name}"
        entry = self.mapping(value, where, line, TASK_KEYS)
        for key in entry:
            self.note(f"{where}.{key}", entry, key)
        lines = {k: self.lines.get(f"{where}.{k}", line) for k in TASK_KEYS}
        data, source, world_task = self.task_data(name, entry, line, lines["data"], world)
        domains = None
        if entry.get("domains") is not None:
            domains = self.string_list(entry["domains"], f"{where}.domains", lines["domains"])
            if world_task is not None:
                self.known_domains(domains, world_task.domains, f"{where}.domains", entry)
        templates = self.templates(entry, where, lines["template"], world_task)
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

    def task_data(self, name: str, entry, line, data_line, world: dict):
        """The data as written (world options filled in), its source, and its world Task."""
        where = f"tasks.{name}"
        world_tasks = load_tasks()
        if "data" in entry:
            data = self.string(entry["data"], f"{where}.data", data_line)
        elif name in world_tasks:
            data = f"{WORLD_PREFIX}{name}"
        else:
            raise self.fail(
                line,
                f"{where} needs `data`: a folder (<domain>/<class>/<image>), a .csv manifest or "
                f"world:<task> (a task named like a world task, one of {', '.join(world_tasks)}, "
                "may leave it out)",
            )
        if data.startswith(WORLD_PREFIX):
            data, world_task = self.world_data(data, world, f"{where}.data", data_line)
            return data, data, world_task
        return data, str(self.relative_path(data).resolve()), None

    def world_data(self, data: str, world: dict, where: str, line: int | None) -> tuple[str, Task]:
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

    def templates(self, entry, where: str, line: int | None, world_task: Task | None) -> list[str]:
        template = entry.get("template")
        if template is None and world_task is not None:
            template = list(world_task.templates)
        if template is not None and not isinstance(template, str | list):
            raise self.fail(
                line,
                f"{where}.template must be a template string with {{}} or a list of them, "
                f"not {_type_name(template)}",
            )
        if isinstance(template, str) and Path(template).suffix in TEMPLATE_FILE_SUFFIXES:
            template = str(self.relative_path(template))  # a file of templates
        try:
            return load_templates(template)
        except ClipgaugeError as err:
            raise self.fail(line, f"{where}.template: {err}") from None

    def known_domains(self, chosen, known, where: str, entry) -> None:
        unknown = [d for d in chosen if d not in known]
        if unknown:
            line = self.lines.get(where.split("[")[0], getattr(entry, "line", None))
            raise self.fail(
                line, f"{where}: unknown domain(s) {unknown}; the task has {', '.join(known)}"
            )

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

    # methods and training
    def methods(self, value: Any, line: int | None) -> dict[str, dict]:
        known = method_names()
        if value is None:
            return {name: {} for name in known}
        methods = self.mapping(value, "methods", line)
        out: dict[str, dict] = {}
        baseline = baseline_method()
        if baseline not in methods:
            out[baseline] = {}
        for name, options in methods.items():
            method_line = self.note(f"methods.{name}", methods, name)
            key_line = methods.key_lines.get(name) if isinstance(methods, LineMap) else line
            if name not in known:
                raise self.fail(
                    key_line,
                    f"methods: unknown method {name!r} (known: {', '.join(known)})"
                    + _unknown_name_hint(name, known),
                )
            options = self.mapping(options, f"methods.{name}", method_line)
            try:
                get_method(name).make_config(dict(options))
            except (ClipgaugeError, TypeError, ValueError) as err:
                raise self.fail(method_line, f"methods.{name}: {err}") from None
            out[name] = _plain(options)
        return out

    def training(self, value: Any, line: int | None, methods: dict, model: str):
        """The preset, the spec's training options and its per-method ones, each checked."""
        if isinstance(value, dict) and "seed" in value:
            raise self.fail(
                self.value_line(value, "seed"),
                "training.seed: the study's `seeds` (a list, at the top) set the training seeds",
            )
        training = self.mapping(value, "training", line, TRAINING_KEYS)
        preset = self.preset(training)
        overrides = {}
        for key in TRAIN_OPTION_KEYS:
            if key in training:
                overrides[key] = self.train_value(
                    key, training[key], "training", self.note(f"training.{key}", training, key)
                )
        per_method = self.per_method(training, methods)
        baseline = baseline_method()  # trains nothing: no training options to check
        for name in methods:
            if name == baseline:
                continue
            try:
                resolve_train_config(name, {**overrides, **per_method.get(name, {})}, preset, model)
            except ClipgaugeError as err:
                where_line = self.lines.get(f"training.per_method.{name}", line)
                raise self.fail(where_line, f"training (method {name}): {err}") from None
        return preset, overrides, per_method

    def preset(self, training) -> str:
        presets = load_presets()
        preset = training.get("preset", AUTO_PRESET)
        preset_line = self.note("training.preset", training, "preset")
        if preset not in (*presets, AUTO_PRESET, "none"):
            raise self.fail(
                preset_line,
                f"training.preset {preset!r} is not one of {', '.join([*presets, 'auto', 'none'])}",
            )
        return preset

    def per_method(self, training, methods: dict) -> dict[str, dict[str, Any]]:
        pm_line = self.note("training.per_method", training, "per_method")
        per_method_map = self.mapping(training.get("per_method"), "training.per_method", pm_line)
        per_method = {}
        for name, options in per_method_map.items():
            where = f"training.per_method.{name}"
            entry_line = self.note(where, per_method_map, name)
            if name not in methods:
                raise self.fail(
                    entry_line,
                    f"{where}: {name!r} is not a method of this study ({', '.join(methods)})",
                )
            options = self.mapping(options, where, entry_line, TRAIN_OPTION_KEYS)
            per_method[name] = {
                key: self.train_value(key, raw, where, self.note(f"{where}.{key}", options, key))
                for key, raw in options.items()
            }
        return per_method

    def train_value(self, key: str, value: Any, where: str, line: int | None):
        try:
            return TrainConfig.from_dict({key: value}, where).to_dict()[key]
        except ClipgaugeError as err:
            raise self.fail(line, str(err)) from None
