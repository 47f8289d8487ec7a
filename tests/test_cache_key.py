"""The embedding cache: its key (stable, canonical, and different whenever an input that
changes embeddings changes), where entries live, and atomic writes. Expected keys and modes are
written out by hand; tests/test_embeddings.py covers hits and misses end to end."""

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from imagegen import write_image
from safetensors.torch import load_file, save_file

from clipgauge import cache as cache_module
from clipgauge.cache import (
    TensorCache,
    atomic_save_tensors,
    atomic_write_bytes,
    cache_key,
    default_cache_dir,
    read_metadata,
)
from clipgauge.data.folders import from_domainbed
from clipgauge.embeddings import embed_dataset
from clipgauge.errors import CacheError
from clipgauge.models.loading import load_clip

pytestmark = pytest.mark.usefixtures("one_thread")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- cache_key ----------------------------------------------------------------------------------


def test_the_key_is_the_sha256_of_the_canonical_description():
    assert cache_key() == sha256('{"cache_version": "1"}')
    assert cache_key(kind="texts", n=2) == sha256('{"cache_version": "1", "kind": "texts", "n": 2}')
    nested = {"z": [1, 2], "a": {"y": None, "b": True}}
    expected = '{"cache_version": "1", "model": {"a": {"b": true, "y": null}, "z": [1, 2]}}'
    assert cache_key(model=nested) == sha256(expected)


def test_the_key_ignores_argument_and_dict_order():
    assert cache_key(b=1, a=2) == cache_key(a=2, b=1)
    assert cache_key(m={"x": 1, "y": 2}) == cache_key(m={"y": 2, "x": 1})


def test_values_json_cannot_write_are_keyed_by_their_text():
    assert cache_key(path=Path("data/cats")) == cache_key(path="data/cats")
    assert cache_key(dtype=torch.float16) == sha256(
        '{"cache_version": "1", "dtype": "torch.float16"}'
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"kind": "texts"},
        {"model": {"fingerprint": "f2", "dtype": "torch.float32"}},
        {"model": {"fingerprint": "f1", "dtype": "torch.bfloat16"}},
        {"data": "d2"},
        {"templates": ["a sketch of a {}."]},
        {"templates": ["a photo of a {}.", "a sketch of a {}."]},
        {"skip_bad_images": True},
        {"extra": None},
    ],
)
def test_any_changed_part_changes_the_key(changed):
    base = {
        "kind": "images",
        "model": {"fingerprint": "f1", "dtype": "torch.float32"},
        "data": "d1",
        "templates": ["a photo of a {}."],
        "skip_bad_images": False,
    }
    assert cache_key(**{**base, **changed}) != cache_key(**base)
    assert len(cache_key(**base)) == 64 and int(cache_key(**base), 16) >= 0


# --- the keys embed_dataset uses ----------------------------------------------------------------


class RecordingCache(TensorCache):
    """A cache that never hits and records the keys asked for."""

    def __init__(self, directory):
        super().__init__(directory)
        self.asked: dict[str, list[str]] = {"images": [], "texts": []}

    def get(self, kind, key):
        self.asked[kind].append(key)
        return None


@pytest.fixture(scope="module")
def bundle(tiny_clip_dir):
    return load_clip(str(tiny_clip_dir), device="cpu")


def keys(bundle, dataset, templates, tmp_path, **options) -> tuple[str, str]:
    cache = RecordingCache(tmp_path / "cache")
    embed_dataset(bundle, dataset, templates, cache=cache, progress=False, **options)
    return cache.asked["images"][-1], cache.asked["texts"][-1]


def test_embedding_keys_change_with_every_input_that_changes_embeddings(
    bundle, domainbed_root, tmp_path
):
    template = ["a photo of a {}."]
    data = from_domainbed(domainbed_root)
    image, text = keys(bundle, data, template, tmp_path)
    assert keys(bundle, from_domainbed(domainbed_root), template, tmp_path) == (image, text)

    other_model = dataclasses.replace(bundle, fingerprint="another checkpoint")
    assert set(keys(other_model, data, template, tmp_path)).isdisjoint({image, text})
    other_dtype = dataclasses.replace(bundle, dtype=torch.float64)
    assert set(keys(other_dtype, data, template, tmp_path)).isdisjoint({image, text})

    # Images only: the file list, a file's size, preprocessing, skipping bad images.
    fewer = data.subset(range(len(data) - 1))
    assert keys(bundle, fewer, template, tmp_path) == (keys(bundle, fewer, template, tmp_path))
    assert keys(bundle, fewer, template, tmp_path)[0] != image
    assert keys(bundle, data, template, tmp_path, skip_bad_images=True)[0] != image
    processor = bundle.image_processor.__class__(
        **{**bundle.image_processor.to_dict(), "image_mean": [0.5, 0.5, 0.5]}
    )
    other_processing = dataclasses.replace(bundle, image_processor=processor)
    assert keys(other_processing, data, template, tmp_path) == (
        keys(other_processing, data, template, tmp_path)
    )
    assert keys(other_processing, data, template, tmp_path)[0] != image

    # Text only: the templates.
    sketch = ["a sketch of a {}."]
    assert keys(bundle, data, sketch, tmp_path) != (image, text)
    assert keys(bundle, data, sketch, tmp_path)[0] == image


def test_a_rewritten_image_of_another_size_changes_the_image_key(bundle, domainbed_root, tmp_path):
    template = ["a photo of a {}."]
    image, text = keys(bundle, from_domainbed(domainbed_root), template, tmp_path)
    path = Path(from_domainbed(domainbed_root).items[0].path)
    before = os.stat(path)
    write_image(path, (10, 200, 30), size=(48, 48))  # another size on disk, the same mtime
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size != before.st_size
    changed = keys(bundle, from_domainbed(domainbed_root), template, tmp_path)
    assert changed[0] != image and changed[1] == text


# --- where entries live -------------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPGAUGE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("CLIPGAUGE_CACHE", "")
    assert default_cache_dir() == tmp_path / "xdg" / "clipgauge"
    monkeypatch.delenv("CLIPGAUGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "clipgauge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "clipgauge"
    assert TensorCache().directory == tmp_path / "home" / ".cache" / "clipgauge"
    assert TensorCache(str(tmp_path / "c")).directory == tmp_path / "c"


def test_entry_paths_and_refused_names(tmp_path):
    cache = TensorCache(tmp_path)
    assert cache.path("images", "aB9_-") == tmp_path / "images" / "aB9_-.safetensors"
    for kind, key in [("images", "k/"), ("images", "k\n"), ("im ages", "k"), ("images", "k.")]:
        with pytest.raises(
            CacheError, match=r"^cache kinds and keys are letters, digits, - and _; not '"
        ):
            cache.path(kind, key)


def test_put_then_get_returns_tensors_and_metadata_with_the_key(tmp_path):
    cache = TensorCache(tmp_path)
    strided = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    path = cache.put("images", "k1", {"x": strided}, {"skipped": [["a.png", "bad"]], "n": 2})
    assert path == tmp_path / "images" / "k1.safetensors"
    tensors, meta = cache.get("images", "k1")
    assert tensors.keys() == {"x"} and torch.equal(tensors["x"], strided)
    assert meta == {"skipped": [["a.png", "bad"]], "n": 2, "key": "k1"}
    assert cache.get("images", "k2") is None and cache.get("texts", "k1") is None


def test_an_entry_under_another_key_is_removed_not_returned(tmp_path):
    cache = TensorCache(tmp_path)
    cache.put("images", "k1", {"x": torch.ones(1)}, {})
    moved = tmp_path / "images" / "k2.safetensors"
    os.replace(tmp_path / "images" / "k1.safetensors", moved)
    assert cache.get("images", "k2") is None
    assert not moved.exists()
    save_file({"x": torch.ones(1)}, str(tmp_path / "images" / "k3.safetensors"))  # no metadata
    assert cache.get("images", "k3") is None
    assert not (tmp_path / "images" / "k3.safetensors").exists()


def test_a_damaged_entry_is_removed(tmp_path):
    cache = TensorCache(tmp_path)
    path = cache.put("texts", "k", {"x": torch.ones(4)}, {})
    path.write_bytes(path.read_bytes()[:30])
    assert cache.get("texts", "k") is None and not path.exists()


def test_read_metadata_decodes_json_values_and_a_file_without_any(tmp_path):
    save_file({"x": torch.ones(1)}, str(tmp_path / "bare.safetensors"))
    assert read_metadata(tmp_path / "bare.safetensors") == {}
    atomic_save_tensors(tmp_path / "m.safetensors", {"x": torch.ones(1)}, {"a": [1, "b"]})
    assert read_metadata(tmp_path / "m.safetensors") == {"a": [1, "b"]}


# --- atomic writes ------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture
def renames(monkeypatch):
    """Every os.replace(source, target) made, still performed."""
    made = []
    real = os.replace

    def record(source, target):
        made.append((Path(source), Path(target)))
        real(source, target)

    monkeypatch.setattr(cache_module.os, "replace", record)
    return made


def test_written_files_get_a_normal_files_mode(tmp_path, umask_022, renames):
    atomic_write_bytes(tmp_path / "new" / "deeper" / "report.md", b"text")
    atomic_save_tensors(tmp_path / "t" / "x.safetensors", {"x": torch.ones(1)}, {})
    for path in (tmp_path / "new" / "deeper" / "report.md", tmp_path / "t" / "x.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "private.md", b"text")
    assert stat.S_IMODE((tmp_path / "private.md").stat().st_mode) == 0o600
    assert os.umask(0o022) == 0o077  # reading the umask left it as it was


def test_writes_go_through_a_hidden_temporary_file_beside_the_target(tmp_path, renames):
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    atomic_save_tensors(tmp_path / "b.safetensors", {"x": torch.ones(1)}, {"k": 1})
    for (source, target), name in zip(renames, ["a.json", "b.safetensors"], strict=True):
        assert target == tmp_path / name and source.parent == tmp_path
        assert source.name.startswith(f".{name}.") and source.name.endswith(".tmp")
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    assert load_file(tmp_path / "b.safetensors")["x"].tolist() == [1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.safetensors"]


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    atomic_write_bytes(tmp_path / "kept.json", b"old")

    def refuse(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(tmp_path / "kept.json", b"new")
    with pytest.raises(OSError, match="disk full"):
        atomic_save_tensors(tmp_path / "x.safetensors", {"x": torch.ones(1)}, {})
    assert [p.name for p in tmp_path.iterdir()] == ["kept.json"]
    assert (tmp_path / "kept.json").read_bytes() == b"old"


def test_atomic_write_bytes_writes_and_syncs_the_bytes(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(cache_module.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    atomic_write_bytes(tmp_path / "data.bin", bytes(range(256)))
    assert (tmp_path / "data.bin").read_bytes() == bytes(range(256))
    assert len(synced) == 1


def test_tensor_metadata_is_stored_as_json_text(tmp_path):
    from safetensors import safe_open

    atomic_save_tensors(tmp_path / "m.safetensors", {"x": torch.ones(1)}, {"a": [1], "b": "s"})
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert f.metadata() == {"a": "[1]", "b": json.dumps("s")}
