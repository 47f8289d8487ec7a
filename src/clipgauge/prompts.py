"""Class prompts from one template or an ensemble of templates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from clipgauge.errors import ClipgaugeError

DEFAULT_TEMPLATE = "a photo of a {}."


def _validate(templates: Sequence[str], origin: str) -> list[str]:
    out = [t for t in (s.strip() for s in templates) if t]
    if not out:
        raise ClipgaugeError(
            f"{origin}: no prompt templates found; give at least one, e.g. {DEFAULT_TEMPLATE!r}"
        )
    for t in out:
        if t.count("{}") != 1:
            raise ClipgaugeError(
                f"{origin}: template {t!r} needs exactly one '{{}}' where the class name goes"
            )
    return out


def templates_for(spec: str | Sequence[str] | None, dataset) -> list[str]:
    """`load_templates(spec)`; with no templates given, the dataset's own (a world task's
    prompts from tasks.yaml), else the default."""
    if spec is None and dataset.templates:
        return list(dataset.templates)
    return load_templates(spec)


def load_templates(spec: str | Sequence[str] | None) -> list[str]:
    """Templates from a template string, a list of them, or a .txt/.json/.yaml file of them.

    A .txt file holds one template per line; .json/.yaml hold a list. Several templates form a
    prompt ensemble: their normalised text embeddings are averaged per class.
    """
    if spec is None:
        return [DEFAULT_TEMPLATE]
    if not isinstance(spec, str):
        return _validate(list(spec), "--template")
    path = Path(spec)
    if "{}" not in spec and path.suffix.lower() in (".txt", ".json", ".yaml", ".yml"):
        if not path.is_file():
            raise ClipgaugeError(f"--template file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ClipgaugeError(
                f"cannot read --template file {path} ({err}); save it as UTF-8 text"
            ) from None
        if path.suffix.lower() == ".txt":
            return _validate(text.splitlines(), str(path))
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
            raise ClipgaugeError(
                f"--template file {path} is not valid {kind} ({err}); it must hold a list of "
                "template strings"
            ) from None
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise ClipgaugeError(f"{path}: expected a list of template strings")
        return _validate(data, str(path))
    return _validate([spec], "--template")


def class_prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """prompts[t][c]: template t filled with class c."""
    return [[t.replace("{}", name) for name in class_names] for t in templates]
