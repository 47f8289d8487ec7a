"""Nothing clipgauge loads can run code, and nothing it writes or reads leaves its folder.

The source is checked statically (no pickle, torch.load only with weights_only=True, no
trust_remote_code, YAML only through a SafeLoader); then a pickle whose unpickling would create
a marker file is planted wherever weights or cached tensors are expected, and must be refused
(or ignored and recomputed) without the marker appearing.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from imagegen import make_domainbed
from safetensors.torch import save_file

import clipgauge
from clipgauge.cache import TensorCache, cache_key
from clipgauge.cli import main
from clipgauge.errors import CacheError
from clipgauge.training.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCE = Path(clipgauge.__file__).parent
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
UNSAFE_YAML = {"unsafe_load", "full_load", "unsafe_load_all", "full_load_all", "load_all"}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader"}


@functools.cache
def source_files() -> list[tuple[Path, ast.Module]]:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 40  # the whole package, not an empty glob
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in files]


def calls(tree: ast.Module, owner: str, name: str) -> list[ast.Call]:
    """Calls of `<owner>.<name>(...)` in a module."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == owner
    ]


def keyword(call: ast.Call, name: str):
    """The constant value of a keyword argument, the AST node if not constant, or None."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SOURCE.parent)}:{node.lineno}"


def test_no_pickle_anywhere_in_the_package():
    found = []
    for path, tree in source_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = {node.value.id} if node.attr in ("load", "loads", "Unpickler") else set()
            else:
                continue
            if names & PICKLE_MODULES:
                found.append(where(path, node))
    assert found == []


def test_torch_and_numpy_loads_cannot_unpickle():
    found = []
    for path, tree in source_files():
        for call in calls(tree, "torch", "load"):
            if keyword(call, "weights_only") is not True:
                found.append(f"{where(path, call)} torch.load without weights_only=True")
        for owner in ("np", "numpy"):
            for call in calls(tree, owner, "load"):
                if keyword(call, "allow_pickle") not in (None, False):
                    found.append(f"{where(path, call)} {owner}.load with allow_pickle")
    assert found == []


def test_no_remote_code_and_models_load_safetensors_only():
    found = []
    for path, tree in source_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    found.append(f"{where(path, node.value)} trust_remote_code")
            # A model class's from_pretrained must refuse .bin (pickle) weights.
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id.endswith("Model")
                and keyword(node, "use_safetensors") is not True
            ):
                found.append(f"{where(path, node)} from_pretrained without use_safetensors=True")
    assert found == []
    assert "trust_remote_code" not in "".join(p.read_text() for p in SOURCE.rglob("*.py"))


def test_yaml_is_read_only_with_a_safe_loader():
    found = []
    for path, tree in source_files():
        module = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts)
        for name in UNSAFE_YAML:
            found += [f"{where(path, c)} yaml.{name}" for c in calls(tree, "yaml", name)]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr in UNSAFE_YAML_LOADERS
            ):
                found.append(f"{where(path, node)} yaml.{node.attr}")
        for call in calls(tree, "yaml", "load"):
            loader = keyword(call, "Loader")
            if not isinstance(loader, ast.Name):
                found.append(f"{where(path, call)} yaml.load without a named Loader")
                continue
            loader_class = getattr(importlib.import_module(module), loader.id)
            if not issubclass(loader_class, yaml.SafeLoader):
                found.append(f"{where(path, call)} yaml.load with {loader.id}")
    assert found == []


# Planted pickles -----------------------------------------------------------------------------


class Payload:
    """Unpickling this opens (so creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PAYLOAD-RAN"


@pytest.fixture
def payload(marker) -> bytes:
    data = pickle.dumps({"weight": Payload(marker)})
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(Payload(probe))).close()  # the payload is live
    assert probe.exists()
    probe.unlink()
    return data


@pytest.fixture
def task(tmp_path) -> Path:
    return make_domainbed(tmp_path / "task", ["photo", "art"], ["cat", "dog"], per_class=5)


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def measure_argv(model, data, *extra) -> list:
    return ["measure", "--model", model, "--data", data, "--no-progress", *extra]


def model_copy(tiny_clip_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, folder)
    return folder


def test_a_model_folder_with_only_pickle_weights_is_refused(
    capsys, tiny_clip_dir, tmp_path, task, payload, marker
):
    model = model_copy(tiny_clip_dir, tmp_path)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(payload)
    code, err = run_cli(capsys, *measure_argv(model, task, "--no-cache"))
    assert code == 2 and "has no .safetensors weights" in err and "safe_serialization" in err
    assert not marker.exists()


def test_a_pickle_named_safetensors_is_refused(
    capsys, tiny_clip_dir, tmp_path, task, payload, marker
):
    model = model_copy(tiny_clip_dir, tmp_path)
    (model / "model.safetensors").write_bytes(payload)
    code, err = run_cli(capsys, *measure_argv(model, task, "--no-cache"))
    assert code == 2 and "cannot be loaded" in err and "damaged" in err
    assert not marker.exists()


def test_a_pickle_beside_safetensors_weights_is_never_read(
    capsys, tiny_clip_dir, tmp_path, task, payload, marker
):
    model = model_copy(tiny_clip_dir, tmp_path)
    (model / "pytorch_model.bin").write_bytes(payload)
    (model / "training_args.bin").write_bytes(payload)
    code, err = run_cli(capsys, *measure_argv(model, task, "--no-cache"))
    assert code == 0, err
    assert not marker.exists()


@pytest.fixture
def finished_run(capsys, tiny_clip_dir, task, tmp_path) -> Path:
    run = tmp_path / "run"
    argv = ["finetune", "--model", tiny_clip_dir, "--data", task, "--train-domains", "photo"]
    argv += ["--method", "bitfit", "--epochs", "1", "--batch-size", "4", "--keep-checkpoint"]
    code, err = run_cli(capsys, *argv, "--out", run, "--no-progress")
    assert code == 0, err
    return run


def test_a_pickle_as_run_weights_is_refused(capsys, finished_run, task, payload, marker):
    (finished_run / "trained.safetensors").write_bytes(payload)
    code, err = run_cli(
        capsys, "evaluate", "--run", finished_run, "--data", task, "--no-cache", "--no-progress"
    )
    assert code == 2 and "trained.safetensors is not a readable safetensors file" in err
    code, err = run_cli(capsys, "export", "--run", finished_run, "--out", finished_run / "x")
    assert code == 2 and "train the run again" in err
    assert not marker.exists()


def test_a_pickle_as_checkpoint_is_refused(
    capsys, tiny_clip_dir, finished_run, task, payload, marker
):
    for name in ("result.json", "trained.safetensors"):
        (finished_run / name).unlink()  # as if stopped after its checkpoint
    (state,) = (finished_run / "checkpoint").glob("state-epoch*.safetensors")
    state.write_bytes(payload)
    argv = ["finetune", "--model", tiny_clip_dir, "--data", task, "--train-domains", "photo"]
    argv += ["--method", "bitfit", "--epochs", "1", "--batch-size", "4", "--resume"]
    code, err = run_cli(capsys, *argv, "--out", finished_run, "--no-progress")
    assert code == 2 and "checkpoint is unreadable" in err and "without --resume" in err
    assert not marker.exists()


def test_a_pickle_in_the_cache_is_ignored_and_recomputed(
    capsys, tiny_clip_dir, task, tmp_path, payload, marker
):
    cache = tmp_path / "cache"
    argv = measure_argv(tiny_clip_dir, task, "--cache-dir", cache)
    assert run_cli(capsys, *argv, "--json", tmp_path / "first.json")[0] == 0
    entries = sorted(cache.rglob("*.safetensors"))
    assert [p.parent.name for p in entries] == ["images", "texts"]
    for entry in entries:
        entry.write_bytes(payload)
    assert run_cli(capsys, *argv, "--json", tmp_path / "second.json")[0] == 0
    first, second = (json.loads((tmp_path / f).read_text()) for f in ("first.json", "second.json"))
    assert second["provenance"]["from_cache"] is False  # recomputed, not read
    assert second["overall"] == first["overall"]
    assert not marker.exists()
    assert all(entry.read_bytes() != payload for entry in entries)  # rewritten


# Paths cannot escape their folders -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key"),
    [("images", "../../escape"), ("images", "a/b"), ("images", "/etc/passwd"), ("..", "k"),
     ("images", ""), ("a/../..", "k"), ("images", "key.safetensors")],
)  # fmt: skip
def test_cache_entries_stay_in_the_cache_folder(tmp_path, kind, key):
    cache = TensorCache(tmp_path / "cache")
    with pytest.raises(CacheError, match="letters, digits"):
        cache.path(kind, key)
    with pytest.raises(CacheError):
        cache.put(kind, key, {"x": torch.zeros(1)}, {})
    assert not any(tmp_path.rglob("*.safetensors"))


def test_cache_keys_are_plain_names(tmp_path):
    cache = TensorCache(tmp_path / "cache")
    key = cache_key(kind="images", data="../../../etc", model={"name": "a/b"})
    path = cache.put("images", key, {"x": torch.ones(2)}, {})
    assert path.parent == tmp_path / "cache" / "images"
    assert cache.get("images", key)[0]["x"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("pointer", ["../outside.safetensors", "ABSOLUTE", "sub/../../x"])
def test_a_checkpoint_cannot_point_outside_its_folder(tmp_path, pointer):
    outside = tmp_path / "outside.safetensors"
    save_file({"trained.w": torch.ones(1)}, str(outside))
    folder = tmp_path / "run" / "checkpoint"
    folder.mkdir(parents=True)
    state = {
        "epoch": 1,
        "tensors": str(outside) if pointer == "ABSOLUTE" else pointer,
        "scalars": {},
        "structure": {"trained": {"w": {"__tensor__": "trained.w"}}},
        "rng": {},
    }
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="not a file name inside the checkpoint folder"):
        load_checkpoint(folder)


def test_study_paths_stay_in_the_study_folder(tiny_clip_dir, tmp_path):
    """Task names and run ids never become paths: only hex run ids name run folders."""
    from clipgauge.study.runner import run_study

    make_domainbed(tmp_path / "data", ["photo", "art"], ["cat", "dog"], per_class=5)
    spec = tmp_path / "spec" / "study.yaml"
    spec.parent.mkdir()
    spec.write_text(
        f"model: {tiny_clip_dir}\ntasks:\n  '../../escape':\n    data: ../data\n"
        "    train_domains: [[photo]]\n  /tmp/absolute:\n    data: ../data\n"
        "    train_domains: [[art]]\nmethods:\n  bitfit: {}\n"
        "training:\n  epochs: 1\n  batch_size: 4\n"
    )
    before = {p for p in tmp_path.rglob("*")}
    result = run_study(spec, tmp_path / "spec" / "out", progress=False)
    assert result.ok and result.finished == 4
    created = {p for p in tmp_path.rglob("*")} - before
    out = tmp_path / "spec" / "out"
    assert created and all(p == out or out in p.parents for p in created)
    runs = [p.name for p in (out / "runs").iterdir()]
    assert runs and all(len(name) == 16 and set(name) <= set("0123456789abcdef") for name in runs)
