"""docs/study-spec.md and the validator against the schema's table of spec keys.

The doc lists exactly the table's keys with the table's defaults, the validator allows exactly
the table's keys, every documented default means the same as leaving the key out, and the
doc's example spec loads.
"""

import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from clipgauge.methods import get_method
from clipgauge.study.schema import (
    SPEC_KEYS,
    TRAIN_OPTION_KEYS,
    child_keys,
    render_table,
    yaml_text,
)
from clipgauge.study.spec import SpecError, load_spec, parse_spec
from clipgauge.training.config import TrainConfig, resolve_train_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "study-spec.md"
REGENERATE = "regenerate it: python -m clipgauge.study.schema --update docs/study-spec.md"
MINIMAL = {"tasks": {"sizes": {"train_domains": [["photo"]]}}}


def documented_rows() -> list[tuple[str, str]]:
    """(key, default) of each row of the doc's key table; a `code` default loses its quotes."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 4, f"a key row has 4 cells: {line}"
        default = cells[2]
        if len(default) > 1 and default[0] == default[-1] == "`":
            default = default[1:-1]
        rows.append((cells[0].strip("`"), default))
    return rows


def test_documented_keys_are_the_schema_keys():
    documented = [key for key, _ in documented_rows()]
    schema = [key.path for key in SPEC_KEYS]
    assert sorted(set(documented) - set(schema)) == [], f"not in the schema; {REGENERATE}"
    assert sorted(set(schema) - set(documented)) == [], f"not documented; {REGENERATE}"
    assert documented == schema, f"the doc's order or a duplicate; {REGENERATE}"


def test_documented_defaults_are_the_schema_defaults():
    documented = dict(documented_rows())
    for key in SPEC_KEYS:
        assert documented[key.path] == key.default, f"{key.path}; {REGENERATE}"


def test_the_doc_table_is_the_rendered_table():
    assert render_table() in DOC.read_text(encoding="utf-8"), REGENERATE


def test_training_rows_are_the_train_config_fields_but_seed():
    fields = [f for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
    assert TRAIN_OPTION_KEYS == tuple(f.name for f in fields)
    rows = {key.path: key for key in SPEC_KEYS}
    for f in fields:
        row = rows[f"training.{f.name}"]
        assert (row.default, row.meaning) == (yaml_text(f.default), f.metadata["help"])
    assert "training.seed" not in rows


@pytest.mark.parametrize(
    "where, table_parent",
    [
        ((), ""),
        (("world",), "world"),
        (("tasks", "sizes"), "tasks.<task>"),
        (("training",), "training"),
        (("training", "per_method", "full"), None),
        (("split",), "split"),
        (("eval",), "eval"),
    ],
)
def test_the_validator_allows_exactly_the_table_keys(where, table_parent):
    document = copy.deepcopy(MINIMAL)
    parent = document
    for key in where:
        parent = parent.setdefault(key, {})
    parent["no_such_key"] = 1
    with pytest.raises(SpecError) as info:
        parse_spec(document)
    if table_parent is None:  # per_method entries take the training options
        allowed = [k for k in child_keys("training") if k not in ("preset", "per_method")]
    else:
        allowed = list(child_keys(table_parent))
    assert f"(allowed: {', '.join(allowed)})" in str(info.value)


def with_value(document: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        document = document.setdefault(key, {})
    if isinstance(value, dict):
        document.setdefault(last, {}).update(value)
    else:
        document[last] = value


def test_writing_every_documented_default_changes_nothing(tmp_path):
    written = copy.deepcopy(MINIMAL)
    for key in SPEC_KEYS:
        if not key.default.startswith("(") and "<" not in key.path:
            with_value(written, key.path, yaml.safe_load(key.default))
    assert "lora" in written["methods"] and written["training"]["lr"] == 1e-4
    leave_out = parse_spec(MINIMAL, base_dir=tmp_path)
    write_out = parse_spec(written, base_dir=tmp_path)
    for name in (
        "model",
        "model_source",
        "preset",
        "seeds",
        "test_fraction",
        "split_seed",
        "max_images_per_domain",
        "keep_weights",
        "description",
    ):
        assert getattr(write_out, name) == getattr(leave_out, name), name
    assert list(write_out.methods) == list(leave_out.methods)
    for method, options in write_out.methods.items():
        make_config = get_method(method).make_config
        assert make_config(options) == make_config(leave_out.methods[method]), method
        assert resolve_train_config(method, write_out.train_overrides(method), "none") == (
            resolve_train_config(method, leave_out.train_overrides(method), "none")
        )


def test_the_doc_example_spec_loads(tmp_path):
    example = re.search(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    path = tmp_path / "my-study.yaml"
    path.write_text(example.group(1), encoding="utf-8")
    spec = load_spec(path)
    assert spec.name == "my-study" and list(spec.methods) == ["zeroshot", "full", "lora"]
    assert spec.tasks["textures"].data == "world:textures?per_class=24&size=48"
    assert spec.tasks["pets"].source == str((tmp_path / "data" / "pets").resolve())
    assert spec.train_overrides("full") == {"epochs": 3, "lr": 5e-5}
