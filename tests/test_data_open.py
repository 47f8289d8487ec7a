import pytest
from imagegen import write_image

import clipgauge.data.open as data_open
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


def test_registered_source_gets_name_and_options(monkeypatch):
    calls = []
    monkeypatch.setattr(data_open, "_SOURCES", {})
    data_open.register_source("fake", lambda name, **opts: calls.append((name, opts)) or "dataset")
    assert open_dataset("fake:shapes?x=1", domains=["a"]) == "dataset"
    assert calls == [("shapes?x=1", {"domains": ["a"], "class_map": None})]
    with pytest.raises(ValueError, match="prefix must be a name"):
        data_open.register_source("no good", lambda name, **opts: None)


def test_world_source_comes_from_the_entry_point(monkeypatch):
    monkeypatch.setattr(data_open, "_SOURCES", {})
    dataset = open_dataset("world:shapes?per_class=1&domains=photo")
    assert dataset.source["kind"] == "world" and len(dataset) == len(dataset.class_names)
    assert dataset.templates and all("{}" in t for t in dataset.templates)
    assert "world" in data_open._SOURCES


def test_unknown_prefix_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"no such dataset path nosuch:thing"):
        open_dataset("nosuch:thing")


def test_source_import_failure(monkeypatch):
    class Broken:
        value = "clipgauge.world.dataset:open_world"

        def load(self):
            raise ImportError("planted")

    monkeypatch.setattr(data_open, "_SOURCES", {})
    monkeypatch.setattr(data_open, "entry_points", lambda group, name: [Broken()])
    with pytest.raises(DataError, match="world: data.*clipgauge.world.dataset.*planted"):
        open_dataset("world:shapes")
