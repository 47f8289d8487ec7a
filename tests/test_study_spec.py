"""Study specs: shipped specs, defaults, and errors naming the file, line and what is allowed."""

import textwrap
from pathlib import Path

import pytest

from clipgauge.methods import method_names
from clipgauge.study.spec import SpecError, load_spec, resolve_spec_path, shipped_specs
from clipgauge.world import load_tasks

GOOD = """\
name: small
world: {per_class: 3}
tasks:
  sizes:
    train_domains: [[photo]]
  textures:
    train_domains: [[cartoon], [photo, sketch]]
methods:
  bitfit: {}
  lora: {rank: 2}
training:
  epochs: 1
  per_method:
    lora: {lr: 1.0e-3}
seeds: [0, 1]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def spec_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    return str(info.value)


@pytest.mark.parametrize(("name", "trained", "seeds"), [("world", 4, 2), ("world-full", 6, 3)])
def test_shipped_world_specs_measure_every_world_task(name, trained, seeds):
    spec = load_spec(None if name == "world" else name)  # no argument: the world spec
    assert spec.name == name and spec.model == "world-clip"
    assert set(spec.tasks) == set(load_tasks())  # every task measured
    # zeroshot first, then the study's five methods; world-full adds the three later ones
    extra = ["linear-probe", "lp-ft", "coop"] if name == "world-full" else []
    assert list(spec.methods) == method_names()[:6] + extra
    assert set(spec.methods) <= set(method_names())
    assert len(spec.seeds) == seeds
    assert set(spec.forgetting) == set(spec.tasks)
    assert sum(1 for t in spec.tasks.values() if t.train_domains) == trained
    for task in spec.tasks.values():
        assert task.is_world
        assert task.templates == list(load_tasks()[task.name].templates)
    full = load_spec("world-full")
    demo = load_spec("world")
    # the demo is the full design with fewer tasks and seeds
    assert {t for t, e in demo.tasks.items() if e.train_domains} < {
        t for t, e in full.tasks.items() if e.train_domains
    }
    assert demo.training == full.training
    assert demo.methods == {m: o for m, o in full.methods.items() if m in method_names()[:6]}


def test_shipped_paper_spec():
    assert set(shipped_specs()) >= {"world", "paper"}
    spec = load_spec("paper")
    assert spec.model == "openai/clip-vit-base-patch32"
    assert spec.preset == "paper-vitb32" and spec.seeds == [0, 1, 2]
    assert list(spec.tasks) == ["PACS", "VLCS", "OfficeHome", "TerraIncognita", "DomainNet"]
    assert spec.tasks["PACS"].train_domains == [["photo"]]
    # folder paths are relative to the spec file
    specs_dir = resolve_spec_path("paper").parent.resolve()
    assert spec.tasks["PACS"].source == str(specs_dir / "data" / "PACS")
    assert set(spec.forgetting) == set(spec.tasks)


def test_a_valid_spec_and_its_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert list(spec.methods) == ["zeroshot", "bitfit", "lora"]  # zeroshot added first
    assert spec.tasks["sizes"].data == "world:sizes?per_class=3"
    assert spec.tasks["textures"].train_domains == [["cartoon"], ["photo", "sketch"]]
    assert spec.forgetting == ["sizes", "textures"]
    assert spec.train_overrides("lora") == {"epochs": 1, "lr": 1e-3}
    assert spec.train_overrides("bitfit") == {"epochs": 1}
    assert (spec.test_fraction, spec.split_seed, spec.max_images_per_domain) == (0.2, 0, None)
    sizes = spec.to_dict()["tasks"]["sizes"]["templates"]  # the world task's own ensemble
    assert sizes[:2] == ["a photo of a {} object.", "a photo of two {} objects."]


def test_paths_are_relative_to_the_spec_file(tmp_path):
    (tmp_path / "prompts.txt").write_text("a photo of a {}.\na drawing of a {}.\n")
    spec = load_spec(
        write(
            tmp_path,
            """\
            tasks:
              mine:
                data: data/mine
                template: prompts.txt
                train_domains: [[a]]
            """,
        )
    )
    assert spec.tasks["mine"].source == str((tmp_path / "data" / "mine").resolve())
    assert spec.tasks["mine"].data == "data/mine"
    assert spec.tasks["mine"].templates == ["a photo of a {}.", "a drawing of a {}."]


def test_unknown_key_names_line_and_allowed_keys(tmp_path):
    message = spec_error(tmp_path, GOOD.replace("methods:", "metods:"))
    assert "study.yaml:8: unknown key 'metods'" in message
    assert "allowed: name," in message and "did you mean 'methods'?" in message


def test_unknown_nested_key(tmp_path):
    message = spec_error(tmp_path, GOOD.replace("    train_domains: [[photo]]", "    train: 1"))
    assert "study.yaml:5: unknown key 'train' in tasks.sizes" in message
    assert "train_domains" in message


@pytest.mark.parametrize(
    "old, new, line, expected",
    [
        ("seeds: [0, 1]", "seeds: zero", 15, "seeds must be a non-empty list of integers"),
        ("seeds: [0, 1]", "seeds: [0, one]", 15, "seeds[1] must be an integer >= 0"),
        ("  epochs: 1", "  epochs: many", 12, "epochs='many' is not a valid int"),
        ("world: {per_class: 3}", "world: {per_class: 0}", 2, "world.per_class must be"),
        ("name: small", "name: [a]", 1, "name must be a non-empty string"),
        ("    lora: {lr: 1.0e-3}", "    lora: 3", 14, "training.per_method.lora must be a mapping"),
        ("  lora: {rank: 2}", "  lora: {rank: two}", 10, "rank='two' is not a valid int"),
        ("  lora: {rank: 2}", "  lora: {rnk: 2}", 10, "method lora has no option(s) rnk"),
        ("  lora: {rank: 2}", "  lorra: {}", 10, "unknown method 'lorra'"),
    ],
)
def test_wrong_types_and_values_name_the_line(tmp_path, old, new, line, expected):
    assert old in GOOD
    message = spec_error(tmp_path, GOOD.replace(old, new))
    assert f"study.yaml:{line}: " in message, message
    assert expected in message, message


def test_unknown_method_lists_the_known_ones(tmp_path):
    message = spec_error(tmp_path, GOOD.replace("  lora: {rank: 2}", "  lorra: {}"))
    assert "did you mean 'lora'?" in message
    assert all(name in message for name in method_names())


def test_unknown_task_in_forgetting_names_its_line(tmp_path):
    text = GOOD + "forgetting:\n  - sizes\n  - shapes\n"
    message = spec_error(tmp_path, text)
    assert "study.yaml:18: forgetting: unknown task 'shapes'" in message
    assert "sizes, textures" in message


def test_invalid_yaml_reports_the_parser_line(tmp_path):
    message = spec_error(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: [0, 1"))
    assert message.startswith(str(tmp_path / "study.yaml")) and "invalid YAML" in message
    assert "study.yaml:15:" in message or "study.yaml:16:" in message


def test_duplicate_key_is_an_error(tmp_path):
    message = spec_error(tmp_path, GOOD + "seeds: [3]\n")
    assert "study.yaml:16: key 'seeds' is given twice (first on line 15)" in message


def test_train_domains_shape_and_domains(tmp_path):
    flat = spec_error(tmp_path, GOOD.replace("train_domains: [[photo]]", "train_domains: [photo]"))
    assert "study.yaml:5: tasks.sizes.train_domains[0] must be a list of domains" in flat
    assert "[[photo]]" in flat
    unknown = spec_error(
        tmp_path, GOOD.replace("train_domains: [[photo]]", "train_domains: [[fresco]]")
    )
    assert "study.yaml:5:" in unknown and "unknown domain(s) ['fresco']" in unknown
    assert "cartoon, painting, photo, sketch" in unknown
    missing = spec_error(tmp_path, GOOD.replace("    train_domains: [[photo]]\n", ""))
    assert "study.yaml:4: tasks.sizes needs `train_domains`" in missing


def test_task_without_data_must_be_a_world_task(tmp_path):
    message = spec_error(tmp_path, "tasks:\n  pets:\n    train_domains: [[a]]\n")
    assert "study.yaml:2: tasks.pets needs `data`" in message


def test_training_errors(tmp_path):
    seed = spec_error(tmp_path, GOOD.replace("  epochs: 1", "  seed: 3"))
    assert "study.yaml:12: training.seed" in seed and "`seeds`" in seed
    preset = spec_error(tmp_path, GOOD.replace("  epochs: 1", "  preset: fast"))
    assert "study.yaml:12: training.preset 'fast' is not one of" in preset
    assert "paper-vitb32" in preset
    other = spec_error(tmp_path, GOOD.replace("    lora: {lr", "    full: {lr"))
    assert "study.yaml:14: training.per_method.full: 'full' is not a method of this study" in other


def test_split_and_eval_values(tmp_path):
    text = GOOD + "split: {test_fraction: 1.5}\n"
    assert "study.yaml:16: split.test_fraction must be a number in (0, 1)" in spec_error(
        tmp_path, text
    )
    text = GOOD + "eval:\n  max_images_per_domain: 0\n"
    assert "study.yaml:17: eval.max_images_per_domain must be an integer >= 1" in spec_error(
        tmp_path, text
    )


def test_spec_path_errors(tmp_path):
    with pytest.raises(SpecError, match="not a file and not a shipped spec .*paper, world"):
        resolve_spec_path("nonexistent")
    with pytest.raises(SpecError, match="empty"):
        load_spec(write(tmp_path, "# nothing\n"))
