import json
import os
import random
from pathlib import Path

import pytest
from imagegen import color_for, make_domainbed, make_folder, write_image
from permissions import enforced_permissions

from clipgauge.data.folders import (
    class_display_name,
    detect_layout,
    from_domainbed,
    from_folder,
    from_image_folder,
    load_class_map,
)
from clipgauge.data.images import IMAGE_EXTENSIONS, UnreadableImageError
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


# Reading order: the scan must list exactly what a plain os.walk reference lists -------------------


def reference_scan(root: Path, domainbed: bool) -> list[tuple[str, int, int, tuple[int, int]]]:
    """(path, label, domain, (size, mtime_ns)) the straightforward way: sorted visible folders,
    then os.walk of each class folder with every image sorted by its relative POSIX path."""

    def visible_folders(folder: Path) -> list[str]:
        names = [e.name for e in os.scandir(folder) if e.is_dir()]
        return sorted(n for n in names if not n.startswith(".") and n != "__MACOSX")

    domain_folders = [root / d for d in visible_folders(root)] if domainbed else [root]
    class_names = visible_folders(domain_folders[0])
    rows = []
    for domain, domain_folder in enumerate(domain_folders):
        for label, class_name in enumerate(class_names):
            base = os.path.join(domain_folder, class_name)
            images = []
            for current, dirs, files in os.walk(base, followlinks=True):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
                images += [
                    os.path.join(current, f)
                    for f in files
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
                ]
            images.sort(key=lambda p, base=base: Path(os.path.relpath(p, base)).as_posix())
            for path in images:
                st = os.stat(path)
                rows.append((path, label, domain, (st.st_size, st.st_mtime_ns)))
    return rows


NAME_PARTS = ["a", "A", "b", "B", "img", "Img", "10", "2", "é", "z", "-", "_", " ", ".", "0"]
EXTENSIONS = [".png", ".PNG", ".jpg", ".Jpeg", ".gif", ".txt", ".json", ""]


def random_name(rng: random.Random) -> str:
    name = "".join(rng.choice(NAME_PARTS) for _ in range(rng.randint(1, 4)))
    return name if name.strip(" .") and not name.startswith(" ") else "x" + name


def fill_class_folder(folder: Path, rng: random.Random, depth: int = 0) -> None:
    """Files of mixed-case names and extensions, hidden files and, up to depth 2, subfolders
    (some hidden or `__MACOSX`); the one image file `first.png` makes every folder count."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "first.png").write_bytes(b"x" * rng.randint(1, 9))
    for _ in range(rng.randint(2, 8)):
        name = random_name(rng) + rng.choice(EXTENSIONS)
        if not (folder / name).exists():
            (folder / name).write_bytes(b"x" * rng.randint(0, 9))
    (folder / ".hidden.png").write_bytes(b"x")
    if depth < 2:
        for sub in {random_name(rng) for _ in range(rng.randint(0, 3))} | {".cache", "__MACOSX"}:
            if not (folder / sub).is_file():
                fill_class_folder(folder / sub, rng, depth + 1)


def generated_tree(root: Path, domains: list[str], classes: list[str], seed: int) -> Path:
    rng = random.Random(seed)
    for domain in domains:
        for class_name in classes:
            fill_class_folder(root / domain / class_name, rng)
    return root


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_order_equals_a_plain_walk(tmp_path, seed):
    classes = ["Dog", "dog", "cat", "Cat-2", "cat_1", "ice.cream", "été"]
    root = generated_tree(tmp_path / "ds", ["photo", "Art", "art-2"], classes, seed)
    dataset = from_domainbed(root)
    expected = reference_scan(root, domainbed=True)
    assert len(expected) > 200
    assert [(it.path, it.label, it.domain) for it in dataset.items] == [r[:3] for r in expected]
    assert dataset.file_stats == [r[3] for r in expected]
    assert from_image_folder(root).items == dataset.items
    single = from_folder(root / "photo")
    assert [it.path for it in single.items] == [r[0] for r in reference_scan(root / "photo", False)]


def test_names_that_sort_around_the_path_separator(tmp_path):
    """'a-b' < 'a.png' < 'a/' < 'a0' in code points: files in subfolder `a` sort between."""
    folder = tmp_path / "ds" / "cat"
    for name in ["a0.png", "a/x.png", "a.png", "a-b.png", "A.png", "a/b/y.png", "a b.png"]:
        write_image(folder / name)
    assert relative(from_folder(tmp_path / "ds"), folder) == [
        "A.png",
        "a b.png",
        "a-b.png",
        "a.png",
        "a/b/y.png",
        "a/x.png",
        "a0.png",
    ]


# Symbolic links -----------------------------------------------------------------------------------


def test_symlinked_images_and_folders_are_read(tmp_path):
    """Links to files and to class and domain folders outside the dataset just work; items keep
    the linked path and the target's size and time."""
    store = make_domainbed(tmp_path / "store", ["photo", "art"], ["cat", "dog"], per_class=2)
    root = tmp_path / "ds"
    (root / "photo" / "cat").mkdir(parents=True)
    for i in range(2):
        (root / "photo" / "cat" / f"link{i}.png").symlink_to(
            store / "photo" / "cat" / f"img{i}.png"
        )
    (root / "photo" / "dog").symlink_to(store / "photo" / "dog", target_is_directory=True)
    (root / "art").symlink_to(store / "art", target_is_directory=True)
    dataset = from_image_folder(root)
    assert relative(dataset, root) == [
        "art/cat/img0.png",
        "art/cat/img1.png",
        "art/dog/img0.png",
        "art/dog/img1.png",
        "photo/cat/link0.png",
        "photo/cat/link1.png",
        "photo/dog/img0.png",
        "photo/dog/img1.png",
    ]
    assert dataset.labels == [0, 0, 1, 1, 0, 0, 1, 1]
    target = store / "photo" / "cat" / "img1.png"
    assert dataset.file_stats[5] == (target.stat().st_size, target.stat().st_mtime_ns)
    assert dataset.load_image(5).getpixel((0, 0)) == color_for("photo", "cat", 1)


def test_broken_symlink_is_an_unreadable_image(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat", "dog"])
    link = root / "cat" / "gone.png"
    link.symlink_to(tmp_path / "nowhere.png")
    dataset = from_folder(root)
    assert relative(dataset, root)[:3] == ["cat/gone.png", "cat/img0.png", "cat/img1.png"]
    with pytest.raises(UnreadableImageError) as caught:
        dataset.load_image(0)
    message = str(caught.value)
    assert str(link) in message and "broken symbolic link" in message
    assert "nowhere.png does not exist" in message and "point the link at an image" in message
    # Once the target exists the fingerprint changes, so no cache entry that skipped it is reused.
    write_image(tmp_path / "nowhere.png")
    assert from_folder(root).fingerprint() != dataset.fingerprint()
    assert from_folder(root).load_image(0).size == (8, 8)


def test_symlink_loop_to_itself_is_an_unreadable_image(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat"])
    (root / "cat" / "self.png").symlink_to("self.png")
    dataset = from_folder(root)
    assert relative(dataset, root) == ["cat/img0.png", "cat/img1.png", "cat/self.png"]
    with pytest.raises(UnreadableImageError, match=r"self\.png: it is a symbolic link loop"):
        dataset.load_image(2)


def test_broken_link_to_a_class_folder_is_an_error(tmp_path):
    root = make_domainbed(tmp_path / "ds", ["photo"], ["cat"])
    (root / "photo" / "dog").symlink_to(tmp_path / "unmounted" / "dog")
    with pytest.raises(
        DataError, match=r"photo/dog, where class folders are expected, is a broken"
    ):
        from_domainbed(root)


@pytest.mark.parametrize(
    ("link", "target", "message"),
    [
        ("photo/cat/loop", ".", r"photo/cat/loop leads back to .*/ds, a folder that contains it"),
        ("photo/cat/up", "photo", r"photo/cat/up leads back to .*/ds/photo, a folder that"),
        ("photo/cat/self", "photo/cat", r"photo/cat/self leads back to .*/photo/cat, a folder"),
        ("photo/cat/dogs", "photo/dog", r"photo/cat/dogs leads to .* already read.*count twice"),
        ("photo/cat/art", "art/cat", r"photo/cat/art leads to .*already read.*count twice"),
        (
            "photo/wolf",
            "photo/dog",
            r"photo/wolf leads to .*photo/wolf, which is the folder .*/dog",
        ),
        ("sketch", "photo", r"ds/sketch leads to .*ds/sketch, which is the folder .*ds/photo"),
    ],
)
def test_links_that_reach_a_folder_twice_are_errors(tmp_path, link, target, message):
    """Without the check, `loop` made 132 images of a 36-image class: every domain and class
    again, nested until the OS gave up."""
    root = make_domainbed(tmp_path / "ds", ["photo", "art"], ["cat", "dog"], per_class=2)
    (root / link).symlink_to(root / target, target_is_directory=True)
    with pytest.raises(DataError, match=message) as caught:
        from_image_folder(root)
    assert "remove" in str(caught.value)


def test_a_link_into_a_domain_left_out_is_still_caught(tmp_path):
    root = make_domainbed(tmp_path / "ds", ["photo", "art"], ["cat", "dog"], per_class=2)
    (root / "photo" / "cat" / "more").symlink_to(root / "art" / "cat", target_is_directory=True)
    with pytest.raises(DataError, match=r"photo/cat/more leads to .*already read"):
        from_domainbed(root, domains=["photo"])


def test_two_class_folders_linking_one_outside_folder_are_an_error(tmp_path):
    outside = make_folder(tmp_path / "outside", ["animals"])
    root = make_folder(tmp_path / "ds", ["cat", "dog"])
    (root / "cat" / "extra").symlink_to(outside / "animals", target_is_directory=True)
    (root / "dog" / "extra").symlink_to(outside / "animals", target_is_directory=True)
    with pytest.raises(DataError, match=r"dog/extra leads to .*already read"):
        from_folder(root)


def test_links_that_count_a_file_twice_are_errors(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat", "dog"])
    (root / "cat" / "same.png").symlink_to(root / "dog" / "img0.png")
    with pytest.raises(DataError, match=r"cat/same\.png points to .*dog/img0\.png, which the data"):
        from_folder(root)
    (root / "cat" / "same.png").unlink()
    write_image(tmp_path / "outside.png")
    (root / "cat" / "one.png").symlink_to(tmp_path / "outside.png")
    (root / "dog" / "two.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DataError, match=r"links .*one\.png and .*two\.png point to the same file"):
        from_folder(root)


# Unreadable files and folders, names that are not UTF-8 -------------------------------------------


def test_unreadable_image_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat"])
    locked = root / "cat" / "img1.png"
    locked.chmod(0)
    dataset = from_folder(root)  # listing and stat need no read permission
    with enforced_permissions(), pytest.raises(UnreadableImageError) as caught:
        dataset.load_image(1)
    assert caught.value.path == str(locked)
    assert "permission denied" in str(caught.value) and "chmod a+r" in str(caught.value)
    assert dataset.load_image(0).size == (8, 8)


def test_unreadable_folder_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat", "dog"])
    write_image(root / "dog" / "more" / "img.png")
    (root / "dog" / "more").chmod(0)
    with enforced_permissions(), pytest.raises(DataError) as caught:
        from_folder(root)
    assert f"cannot list folder {root / 'dog' / 'more'}: permission denied" in str(caught.value)


def non_utf8(folder: Path, name: bytes) -> Path:
    """A path in `folder` whose last part is the raw bytes `name` (Python holds them escaped)."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def test_file_name_not_utf8_is_an_unreadable_image(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat"])
    images = sorted((root / "cat").iterdir())
    latin1 = write_image(non_utf8(root / "cat", b"caf\xe9.png"))
    dataset = from_folder(root)
    assert [it.path for it in dataset.items] == [str(latin1), *(str(p) for p in images)]
    assert len(dataset.fingerprint()) == 64
    with pytest.raises(UnreadableImageError) as caught:
        dataset.load_image(0)
    assert caught.value.path == str(root / "cat" / "caf\\xe9.png")
    assert "not valid UTF-8" in str(caught.value) and "rename" in str(caught.value)
    str(caught.value).encode("utf-8")  # printable as it is


def test_class_folder_name_not_utf8_is_an_error(tmp_path):
    root = make_folder(tmp_path / "ds", ["cat"])
    write_image(non_utf8(root, b"caf\xe9") / "img0.png")
    with pytest.raises(DataError, match=r"class folder .*caf\\xe9 has a name that is not valid"):
        from_folder(root)
