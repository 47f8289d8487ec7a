"""Study specs: a YAML file naming the model, tasks, forgetting suite, methods, training and seeds.

Every problem is a SpecError naming the file, the line and what is allowed, e.g.
`study.yaml:12: unknown key 'metods' (allowed: ...; did you mean 'methods'?)`. Paths in a spec
(data folders, CSV manifests, template files, a model folder) are relative to the spec file.
The shipped specs live in `clipgauge/study/specs/` (`world`, `paper`); copy one to start.
Every key is listed in `clipgauge.study.schema` and docs/study-spec.md.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from clipgauge.study.schema import StudySpec, TaskSpec
from clipgauge.study.spec_yaml import SpecError, load_yaml_with_lines
from clipgauge.study.validate import validate_spec

__all__ = [
    "DEFAULT_SPEC",
    "SpecError",
    "StudySpec",
    "TaskSpec",
    "load_spec",
    "load_yaml_with_lines",
    "parse_spec",
    "resolve_spec_path",
    "shipped_specs",
]

DEFAULT_SPEC = "world"


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
    return validate_spec(document, origin, Path(base_dir or Path.cwd()), stem)
