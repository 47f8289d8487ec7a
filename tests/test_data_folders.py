import json
import os
from pathlib import Path

import pytest
from imagegen import color_for, make_domainbed, make_folder, write_image

from clipgauge.data.folders import (
    class_display_name,
    detect_layout,
    from_domainbed,
    from_folder,
    from_image_folder,
    load_class_map,
)
from clipgauge.errors import DataError


def relative(dataset, root):
    return [Path(os.path.relpath(it.path, root)).as_posix() for it in dataset.items]


def test_domainbed_labels_domains_and_order(domainbed_root):
    dataset = from_domainbed(domainbed_root)
    assert dataset.domain_names == ["art", "photo"]
    assert dataset.class_names == ["dog", "ice cream"]
    assert relative(dataset, domainbed_root) == [
        "art/dog/img0.png",
        "art/dog/img1.png",
        "art/ice_cream/img0.png",
        "art/ice_cream/img1.png",
        "photo/dog/img0.png",
        "photo/dog/img1.png",
        "photo/ice_cream/img0.png",
        "photo/ice_cream/img1.png",
    ]
    assert dataset.labels == [0, 0, 1, 1, 0, 0, 1, 1]
    assert dataset.domains == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(os.path.isabs(it.path) for it in dataset.items)
    assert dataset.file_stats[0] == (
        os.stat(dataset.items[0].path).st_size,
        os.stat(dataset.items[0].path).st_mtime_ns,
    )
    assert dataset.source["kind"] == "domainbed"
    assert dataset.source["root"] == str(domainbed_root)
    assert dataset.source["class_keys"] == ["dog", "ice_cream"]
    assert dataset.load_image(0).getpixel((0, 0)) == color_for("art", "dog", 0)


def test_domainbed_domain_selection_keeps_indices(domainbed_root):
    dataset = from_domainbed(domainbed_root, domains=["photo"])
    assert dataset.domain_names == ["art", "photo"]
    assert set(dataset.domains) == {1} and len(dataset) == 4
    with pytest.raises(DataError, match="unknown domain.*sketch"):
        from_domainbed(domainbed_root, domains=["sketch"])


def test_single_folder(folder_root):
    dataset = from_folder(folder_root)
    assert dataset.domain_names == ["pets"]
    assert dataset.class_names == ["cat", "dog", "hot dog"]
    assert dataset.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert dataset.source["kind"] == "folder"


def test_class_display_names():
    assert class_display_name("ice_cream") == "ice cream"
    assert class_display_name("hot-dog") == "hot dog"
    assert class_display_name("Golden__Retriever") == "Golden Retriever"


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("map.json", json.dumps({"hot-dog": "frankfurter", "cat": "kitty"})),
        ("map.yaml", "hot-dog: frankfurter\ncat: kitty\n"),
        ("map.txt", "# folder,name\nhot-dog,frankfurter\n\ncat,kitty\n"),
        ("map.csv", "hot-dog,frankfurter\ncat,kitty\n"),
    ],
)
def test_class_map_overrides_names(folder_root, tmp_path, filename, content):
    map_path = tmp_path / filename
    map_path.write_text(content)
    dataset = from_folder(folder_root, class_map=map_path)
    assert dataset.class_names == ["kitty", "dog", "frankfurter"]
    assert dataset.source["class_map"] == str(map_path)


def test_class_map_errors(folder_root, tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"cat": "kitty", "horse": "pony"}))
    with pytest.raises(DataError, match=r"unknown\.json.*'horse'.*match no class"):
        from_folder(folder_root, class_map=unknown)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- cat\n- dog\n")
    with pytest.raises(DataError, match=r"list\.yaml must be a mapping"):
        load_class_map(not_mapping)
    bad_line = tmp_path / "map.txt"
    bad_line.write_text("cat,kitty\ndog\n")
    with pytest.raises(DataError, match=r"map\.txt, line 2"):
        load_class_map(bad_line)
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"cat": "dog"}))
    with pytest.raises(DataError, match="both get the display name 'dog'"):
        from_folder(folder_root, class_map=clash)
    with pytest.raises(DataError, match=r"missing\.json does not exist"):
        from_folder(folder_root, class_map=tmp_path / "missing.json")


def test_class_mismatch_lists_differences(tmp_path):
    root = make_domainbed(
        tmp_path / "ds",
        {"art": ["cat", "dog"], "photo": ["cat", "dog", "fox"], "sketch": ["cat", "owl", "dog"]},
    )
    with pytest.raises(DataError) as caught:
        from_domainbed(root)
    message = str(caught.value)
    assert "art: missing ['fox', 'owl']" in message
    assert "photo: missing ['owl']; extra ['fox']" in message
    assert "sketch: missing ['fox']; extra ['owl']" in message
    # Reading only agreeing domains works.
    assert len(from_domainbed(root, domains=["art"])) == 4


def test_empty_class_folder_is_an_error(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat"])
    (root / "dog").mkdir()
    (root / "dog" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"class folder .*dog contains no image files"):
        from_folder(root)


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    root = make_domainbed(tmp_path / "ds", ["a", "b"], ["cat", "dog"], per_class=1)
    write_image(root / "a" / "cat" / ".hidden.png")
    write_image(root / "a" / ".cache" / "x.png")
    write_image(root / ".trash" / "cat" / "y.png")
    write_image(root / "a" / "cat" / ".thumbs" / "z.png")
    (root / "a" / "cat" / "notes.txt").write_text("x")
    (root / "a" / "cat" / "labels.json").write_text("{}")
    (root / "README.md").write_text("x")
    write_image(root / "b" / "dog" / "nested" / "deep.JPG")
    dataset = from_domainbed(root)
    assert dataset.domain_names == ["a", "b"]
    assert relative(dataset, root) == [
        "a/cat/img0.png",
        "a/dog/img0.png",
        "b/cat/img0.png",
        "b/dog/img0.png",
        "b/dog/nested/deep.JPG",
    ]
    assert dataset.source["ignored_files"] == 3


@pytest.mark.parametrize("reader", [from_domainbed, from_folder, detect_layout])
def test_bad_roots(tmp_path, reader):
    with pytest.raises(DataError, match=r"nowhere does not exist; expected .*<class>/<image>"):
        reader(tmp_path / "nowhere")
    file_path = tmp_path / "file.png"
    write_image(file_path)
    with pytest.raises(DataError, match=r"file\.png is not a folder"):
        reader(file_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty.*expected"):
        reader(empty)


def test_images_at_the_wrong_level_are_an_error(tmp_path):
    root = make_domainbed(tmp_path / "ds", ["a"], ["cat"])
    write_image(root / "a" / "stray.png")
    with pytest.raises(DataError, match=r"stray\.png.*<domain>/<class>/<image>"):
        from_domainbed(root)


def test_layout_detection(domainbed_root, folder_root, tmp_path):
    assert detect_layout(domainbed_root) == "domainbed"
    assert detect_layout(folder_root) == "folder"
    assert from_image_folder(folder_root).source["kind"] == "folder"
    assert from_image_folder(domainbed_root, domains=["art"]).source["domains"] == ["art"]
    mixed = make_folder(tmp_path / "mixed", ["cat"])
    make_folder(mixed / "photo", ["dog"])
    with pytest.raises(DataError, match=r"cannot tell the layout.*'cat'.*'photo'"):
        detect_layout(mixed)
