"""What a study spec holds: the TaskSpec and StudySpec it becomes, and a table of every key.

`SPEC_KEYS` names each key (`tasks.<task>.train_domains`) with its type, default and meaning.
The validator's allowed keys are derived from it, the `training.<option>` rows from TrainConfig
and the `methods.<method>.<option>` rows from each method's config, so the table is what the
validator accepts. docs/study-spec.md shows it; regenerate that table with
`python -m clipgauge.study.schema --update docs/study-spec.md` (without it, prints the table).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipgauge import DEFAULT_MODEL
from clipgauge.methods import baseline_method, get_method, method_names
from clipgauge.prompts import DEFAULT_TEMPLATE
from clipgauge.study.spec_yaml import SpecError
from clipgauge.training.config import AUTO_PRESET, TrainConfig, load_presets
from clipgauge.world.dataset import WORLD_PREFIX, world_dataset
from clipgauge.world.render import MAX_SIZE, MIN_SIZE

# The validated spec ----------------------------------------------------------------------------


@dataclass
class TaskSpec:
    """One task: where its images are, which domains, prompt templates, what to train on."""

    name: str
    data: str  # as written in the spec (world options filled in)
    source: str  # what open_dataset gets: an absolute path, or world:<task>?...
    domains: list[str] | None
    templates: list[str]
    train_domains: list[list[str]]  # [] = measured zero-shot and used for forgetting only

    @property
    def is_world(self) -> bool:
        return self.source.startswith(WORLD_PREFIX)


@dataclass
class RunResources:
    """What each run asks a Ray cluster for (`clipgauge study --executor ray`)."""

    gpus_per_run: float = 1
    cpus_per_run: int = 4


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
    seeds: list[int] = field(default_factory=lambda: [0])
    test_fraction: float = 0.2
    split_seed: int = 0
    max_images_per_domain: int | None = None
    forgetting_images_per_task: int | None = None
    wise_alphas: list[float] = field(default_factory=list)
    world: dict[str, int] = field(default_factory=dict)
    keep_weights: bool = False
    resources: RunResources = field(default_factory=RunResources)
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


def study_default(name: str) -> Any:
    """The value of StudySpec field `name` when the spec leaves its key out."""
    spec_field = next(f for f in dataclasses.fields(StudySpec) if f.name == name)
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return spec_field.default


# The table of keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecKey:
    """One key of a study spec. `default` is YAML text, or a description in parentheses."""

    path: str  # dotted; <task>, <method> stand for a name the spec chooses
    type: str
    default: str
    meaning: str


def yaml_text(value: Any) -> str:
    """A value as a spec writes it: null, true, 0.0001, [q_proj, v_proj], "no" (quoted where
    YAML would read the bare word as something else: a bare no is false)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_text(item) for item in value) + "]"
    if isinstance(value, str) and yaml.safe_load(value) != value:
        return json.dumps(value)
    return str(value)


def _type_text(kind: Any, choices: tuple | None) -> str:
    """A field's type in words: `integer`, `number or null`, `one of adamw, sgd`."""
    options = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = type(None) in typing.get_args(kind)
    base = options[0] if optional and len(options) == 1 else kind
    if choices:
        text = f"one of {', '.join(yaml_text(choice) for choice in choices)}"
    elif typing.get_origin(base) is tuple:
        text = "list of names"
    else:
        names = {bool: "true or false", int: "integer", float: "number", str: "string"}
        text = names.get(base, getattr(base, "__name__", str(base)))
    return f"{text} or null" if optional else text


def _field_rows(prefix: str, config_class: type, skip: tuple[str, ...] = ()) -> list[SpecKey]:
    """One row per field of a config dataclass, from its type, default and metadata["help"]."""
    hints = typing.get_type_hints(config_class)
    rows = []
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = _type_text(hints[f.name], f.metadata.get("choices"))
        rows.append(SpecKey(f"{prefix}.{f.name}", kind, yaml_text(default), f.metadata["help"]))
    return rows


def _world_rows() -> list[SpecKey]:
    defaults = {
        name: yaml_text(p.default)
        for name, p in inspect.signature(world_dataset).parameters.items()
    }
    return [
        SpecKey(
            "world.per_class",
            "integer >= 1",
            defaults["per_class"],
            "images per class and domain of every world task; the test side "
            "(`split.test_fraction`) is evaluated, the rest trains",
        ),
        SpecKey(
            "world.size",
            f"integer, {MIN_SIZE} to {MAX_SIZE}",
            defaults["size"],
            "side of every world image, in pixels",
        ),
        SpecKey(
            "world.seed",
            "integer >= 0",
            defaults["seed"],
            "seed of the world images (not of training)",
        ),
    ]


def _method_rows() -> list[SpecKey]:
    rows = []
    for name in method_names():
        method = get_method(name)
        options = _field_rows(f"methods.{name}", method.config_class)
        meaning = f"{method.description}; options below" if options else method.description
        if name == baseline_method():
            meaning = (
                f"{method.description}: the baseline every gain is measured against, "
                "evaluated without training and added when `methods` leaves it out"
            )
        rows.append(
            SpecKey(f"methods.{name}", "mapping" if options else "empty mapping", "{}", meaning)
        )
        rows.extend(options)
    return rows


# The study's `seeds` (top level) set each run's training seed.
_TRAIN_OPTION_ROWS = _field_rows("training", TrainConfig, skip=("seed",))


def _training_rows() -> list[SpecKey]:
    presets = ", ".join(f"`{name}`" for name in load_presets())
    return [
        SpecKey(
            "training.preset",
            "string",
            AUTO_PRESET,
            f"named training values from presets.yaml ({presets}), `{AUTO_PRESET}` (the preset "
            "named like the model, if there is one) or `none`; the keys below go on top of it",
        ),
        SpecKey(
            "training.per_method",
            "mapping of method names",
            "{}",
            "training options for single methods of this study, on top of the ones above",
        ),
        SpecKey(
            "training.per_method.<method>",
            "mapping of training options",
            "{}",
            "any `training.<option>` key below, for `<method>` only (it outranks the preset's "
            "values for that method)",
        ),
        *_TRAIN_OPTION_ROWS,
    ]


SPEC_KEYS: tuple[SpecKey, ...] = (
    SpecKey(
        "name",
        "string",
        "(the file's name without .yaml)",
        "the study's name, stored with its results and shown in reports",
    ),
    SpecKey("description", "string", "(none)", "a line saying what the study is for"),
    SpecKey(
        "model",
        "string",
        DEFAULT_MODEL,
        "the CLIP model every method fine-tunes: `world-clip` (embedded), a Hugging Face id "
        "(`openai/clip-vit-base-patch32`) or a model folder; a value starting with `.`, `/` or "
        "`~`, or naming an existing path, is a folder relative to the spec file",
    ),
    SpecKey(
        "world",
        "mapping",
        "{}",
        "options for every `world:<task>` data source; options in a task's own "
        "`world:<task>?name=value` outrank them",
    ),
    *_world_rows(),
    SpecKey(
        "tasks",
        "mapping of task names",
        "(required)",
        "the tasks: each is evaluated in every domain; a task with `train_domains` is also "
        "fine-tuned on",
    ),
    SpecKey(
        "tasks.<task>",
        "mapping",
        "(at least one task)",
        "one task, named by its key; a task named like a world task needs only `train_domains`",
    ),
    SpecKey(
        "tasks.<task>.data",
        "string",
        f"(`{WORLD_PREFIX}<task>` for a world task's name, else required)",
        "the images: a folder of `<domain>/<class>/<image>`, a .csv manifest (both relative to "
        f"the spec file) or `{WORLD_PREFIX}<task>[?name=value&...]`, a generated world task",
    ),
    SpecKey(
        "tasks.<task>.domains",
        "list of domain names",
        "(every domain of the data)",
        "the domains to use; the others are left out of training and evaluation",
    ),
    SpecKey(
        "tasks.<task>.template",
        "string or list of strings",
        f"(a world task's own templates, else `{DEFAULT_TEMPLATE}`)",
        "the prompt template(s), each with `{}` for the class name (several are averaged), or a "
        ".txt, .json or .yaml file of them, relative to the spec file",
    ),
    SpecKey(
        "tasks.<task>.train_domains",
        "list of lists of domain names",
        "(required)",
        "one entry per domain generalization setting, each the set of domains to fine-tune on: "
        "`[[photo]]` or `[[photo], [cartoon, sketch]]`; the other domains are DG; `[]` "
        "fine-tunes nothing on it: one zero-shot run measures it, and it serves the "
        "forgetting suite",
    ),
    SpecKey(
        "forgetting",
        "list of task names",
        "(every task)",
        "tasks evaluated zero-shot before and after every fine-tune (each run skips its own "
        "task); `[]` or null for none",
    ),
    SpecKey(
        "methods",
        "mapping of method names",
        "(every registered method)",
        "the fine-tuning methods to compare, each with its options",
    ),
    *_method_rows(),
    SpecKey(
        "training",
        "mapping",
        "{}",
        "how every method trains: TrainConfig defaults < the preset's values < the preset's "
        "per-method values < the keys below",
    ),
    *_training_rows(),
    SpecKey(
        "seeds",
        "list of integers >= 0",
        yaml_text(study_default("seeds")),
        "the training seeds: every method runs once per task, `train_domains` entry and seed",
    ),
    SpecKey("split", "mapping", "{}", "how each task's images split into training and test"),
    SpecKey(
        "split.test_fraction",
        "number between 0 and 1",
        yaml_text(study_default("test_fraction")),
        "share of each domain's images held out for evaluation",
    ),
    SpecKey(
        "split.seed",
        "integer >= 0",
        yaml_text(study_default("split_seed")),
        "seed of the split (the same split for every method and training seed)",
    ),
    SpecKey("eval", "mapping", "{}", "evaluation options"),
    SpecKey(
        "eval.max_images_per_domain",
        "integer >= 1 or null",
        yaml_text(study_default("max_images_per_domain")),
        "at most this many test images per domain (null: all), for speed",
    ),
    SpecKey(
        "eval.forgetting_images_per_task",
        "integer >= 1 or null",
        yaml_text(study_default("forgetting_images_per_task")),
        "at most this many test images of each other task when measuring forgetting, taken "
        "in turn from its domains and classes (null: all its test images)",
    ),
    SpecKey(
        "eval.wise_alphas",
        "list of numbers between 0 and 1",
        yaml_text(study_default("wise_alphas")),
        "WiSE-FT: also evaluate every fine-tuned run (ID, DG and forgetting) at these "
        "interpolations between the zero-shot (0) and fine-tuned (1) model, with no retraining",
    ),
    SpecKey(
        "keep_weights",
        "true or false",
        yaml_text(study_default("keep_weights")),
        "keep every fine-tuned run's weights in the study folder (they can be large)",
    ),
    SpecKey(
        "resources",
        "mapping",
        "{}",
        "what each run asks a Ray cluster for (`clipgauge study --executor ray`, see "
        "docs/clusters.md); the other executors ignore it",
    ),
    SpecKey(
        "resources.gpus_per_run",
        "number >= 0: a whole number, or a fraction below 1 to share a GPU",
        yaml_text(RunResources.gpus_per_run),
        "GPUs per run; on a cluster without GPUs runs take 0 (the study says so), and no run "
        "asks for more than the largest node has",
    ),
    SpecKey(
        "resources.cpus_per_run",
        "integer >= 1",
        yaml_text(RunResources.cpus_per_run),
        "CPU cores per run, also its torch threads; no run asks for more than the largest "
        "node has (the study says so)",
    ),
)


def child_keys(parent: str) -> tuple[str, ...]:
    """The keys directly under `parent` ("" for the top level), in table order."""
    prefix = f"{parent}." if parent else ""
    return tuple(
        rest
        for key in SPEC_KEYS
        if key.path.startswith(prefix) and "." not in (rest := key.path[len(prefix) :])
    )


# What the validator allows where.
TOP_KEYS = child_keys("")
WORLD_KEYS = child_keys("world")
TASK_KEYS = child_keys("tasks.<task>")
TRAINING_KEYS = child_keys("training")  # preset, per_method and the training options
TRAIN_OPTION_KEYS = tuple(row.path.removeprefix("training.") for row in _TRAIN_OPTION_ROWS)
SPLIT_KEYS = child_keys("split")
EVAL_KEYS = child_keys("eval")
RESOURCE_KEYS = child_keys("resources")


# The Markdown table ----------------------------------------------------------------------------

TABLE_START = "<!-- spec keys: generated by python -m clipgauge.study.schema -->"
TABLE_END = "<!-- end of spec keys -->"


def render_default(default: str) -> str:
    return default if default.startswith("(") else f"`{default}`"


def render_table() -> str:
    """SPEC_KEYS as a Markdown table: key, type, default, meaning."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key in SPEC_KEYS:
        cells = [f"`{key.path}`", key.type, render_default(key.default), key.meaning]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def update_doc(path: str | Path) -> bool:
    """Replace the table between TABLE_START and TABLE_END in `path`; True if it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, start, rest = text.partition(TABLE_START + "\n")
    table, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise SystemExit(f"{path} has no {TABLE_START} ... {TABLE_END} block")
    new = head + start + render_table() + end + tail
    path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"] and len(sys.argv) == 3:
        changed = update_doc(sys.argv[2])
        print(f"{sys.argv[2]}: {'updated' if changed else 'already up to date'}")
    elif len(sys.argv) == 1:
        print(render_table(), end="")
    else:
        raise SystemExit("usage: python -m clipgauge.study.schema [--update docs/study-spec.md]")
