import sys
import types

import pytest
from imagegen import write_image

from clipgauge.data.open import open_dataset
from clipgauge.errors import DataError


def test_open_folders_by_layout(domainbed_root, folder_root):
    assert open_dataset(str(domainbed_root)).source["kind"] == "domainbed"
    assert open_dataset(folder_root).source["kind"] == "folder"
    selected = open_dataset(str(domainbed_root), domains=["photo"])
    assert set(selected.domains) == {selected.domain_names.index("photo")}


def test_open_csv_with_domains(tmp_path):
    for name in ["a.png", "b.png"]:
        write_image(tmp_path / name)
    manifest = tmp_path / "list.CSV"
    manifest.write_text("path,label,domain\na.png,cat,art\nb.png,dog,photo\n")
    dataset = open_dataset(str(manifest), domains=["art"])
    assert len(dataset) == 1 and dataset.source["domains"] == ["art"]
    with pytest.raises(DataError, match="unknown domain"):
        open_dataset(str(manifest), domains=["sketch"])


def test_open_bad_specs(tmp_path):
    with pytest.raises(DataError, match=r"no such dataset path .*nope.*world:<task>"):
        open_dataset(str(tmp_path / "nope"))
    other = tmp_path / "labels.txt"
    other.write_text("x")
    with pytest.raises(DataError, match=r"labels\.txt is neither a folder nor a \.csv"):
        open_dataset(str(other))
    with pytest.raises(DataError, match="needs a task name"):
        open_dataset("world:")


def test_world_dispatch(monkeypatch):
    calls = []
    fake = types.ModuleType("clipgauge.world")
    fake.open_world = lambda task, **options: calls.append((task, options)) or "dataset"
    monkeypatch.setitem(sys.modules, "clipgauge.world", fake)
    assert open_dataset("world:shapes", domains=["a"]) == "dataset"
    assert calls == [("shapes", {"domains": ["a"], "class_map": None})]


def test_world_import_failure(monkeypatch):
    monkeypatch.setitem(sys.modules, "clipgauge.world", None)  # makes the import fail
    with pytest.raises(DataError, match="world:shapes.*clipgauge.world"):
        open_dataset("world:shapes")
