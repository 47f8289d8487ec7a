from collections import Counter

import pytest

from clipgauge.data.dataset import ImageDataset, Item
from clipgauge.data.splits import holdout, split_from_files, split_train_test
from clipgauge.errors import DataError


def virtual_dataset(group_sizes, root="/data"):
    """Items `<root>/<domain>/<class>/<i>.png` with the given size per (domain, class) group."""
    domains = sorted({d for d, _ in group_sizes})
    classes = sorted({c for _, c in group_sizes})
    items = [
        Item(f"{root}/{d}/{c}/{i}.png", classes.index(c), domains.index(d))
        for (d, c), n in sorted(group_sizes.items())
        for i in range(n)
    ]
    return ImageDataset(items, classes, domains, loader=None, source={"root": root})


def paths(dataset):
    return [it.path for it in dataset.items]


def group_counts(dataset):
    return Counter((it.domain, it.label) for it in dataset.items)


SIZES = {("art", "cat"): 10, ("art", "dog"): 5, ("photo", "cat"): 2, ("photo", "dog"): 1}


def test_split_is_deterministic_and_seed_dependent():
    dataset = virtual_dataset({("a", "x"): 40, ("a", "y"): 40})
    train, test = split_train_test(dataset, 0.25, seed=3)
    again_train, again_test = split_train_test(dataset, 0.25, seed=3)
    assert paths(test) == paths(again_test) and paths(train) == paths(again_train)
    _, other_test = split_train_test(dataset, 0.25, seed=4)
    assert paths(other_test) != paths(test)


def test_split_is_stratified_with_group_minimums():
    dataset = virtual_dataset(SIZES)
    train, test = split_train_test(dataset, test_fraction=0.2)
    # round(10*.2)=2, round(5*.2)=1, n=2 keeps one on each side, n=1 stays in train.
    assert group_counts(test) == {(0, 0): 2, (0, 1): 1, (1, 0): 1}
    assert group_counts(train) == {(0, 0): 8, (0, 1): 4, (1, 0): 1, (1, 1): 1}
    assert sorted(paths(train) + paths(test)) == sorted(paths(dataset))
    order = {p: i for i, p in enumerate(paths(dataset))}
    assert [order[p] for p in paths(test)] == sorted(order[p] for p in paths(test))
    assert train.class_names == dataset.class_names and train.domain_names == dataset.domain_names
    assert test.source["splits"] == [
        {"name": "test", "method": "stratified", "seed": 0, "test_fraction": 0.2}
    ]


def test_group_split_does_not_depend_on_other_groups():
    small = virtual_dataset({("a", "x"): 30})
    large = virtual_dataset({("a", "x"): 30, ("a", "w"): 7, ("b", "x"): 9})
    assert paths(split_train_test(small, seed=1)[1]) == [
        p for p in paths(split_train_test(large, seed=1)[1]) if "/a/x/" in p
    ]


def test_zero_fraction_and_bad_arguments():
    dataset = virtual_dataset(SIZES)
    train, test = split_train_test(dataset, test_fraction=0.0)
    assert len(test) == 0 and len(train) == len(dataset)
    with pytest.raises(DataError, match="test_fraction must be in"):
        split_train_test(dataset, test_fraction=1.0)
    with pytest.raises(DataError, match="seed"):
        split_train_test(dataset, seed=-1)


def test_holdout_caps_total_and_stays_stratified():
    dataset = virtual_dataset({("a", "x"): 600, ("a", "y"): 300, ("b", "x"): 100})
    rest, held = holdout(dataset, fraction=0.5, max_items=100, seed=0)
    assert len(held) == 100 and len(rest) == 900
    assert group_counts(held) == {(0, 0): 60, (0, 1): 30, (1, 0): 10}
    assert held.source["splits"][-1]["name"] == "held_out"
    _, uncapped = holdout(dataset, fraction=0.1)
    assert len(uncapped) == 100
    train, _ = split_train_test(dataset)
    _, validation = holdout(train, fraction=0.1)
    assert [s["name"] for s in validation.source["splits"]] == ["train", "held_out"]


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_split_from_files(tmp_path):
    dataset = virtual_dataset(SIZES)
    train_file = write_lines(tmp_path / "train.txt", ["# train", "art/cat/1.png", "art/cat/0.png"])
    test_file = write_lines(tmp_path / "test.txt", ["", "photo/dog/0.png", "./art/dog/4.png"])
    train, test = split_from_files(dataset, train_file, test_file)
    assert paths(train) == ["/data/art/cat/0.png", "/data/art/cat/1.png"]
    assert paths(test) == ["/data/art/dog/4.png", "/data/photo/dog/0.png"]
    assert test.source["splits"][0]["test_file"] == str(test_file)


def test_split_files_errors(tmp_path):
    dataset = virtual_dataset(SIZES)
    train_file = write_lines(tmp_path / "train.txt", ["art/cat/0.png", "art/cat/99.png"])
    test_file = write_lines(tmp_path / "test.txt", ["art/cat/1.png"])
    with pytest.raises(DataError, match=r"train\.txt, line 2: 'art/cat/99\.png' is not an image"):
        split_from_files(dataset, train_file, test_file)
    write_lines(train_file, ["art/cat/0.png", "art/cat/1.png"])
    with pytest.raises(DataError, match=r"share 1 image.*1\.png \(train line 2, test line 1\)"):
        split_from_files(dataset, train_file, test_file)
    with pytest.raises(DataError, match=r"absent\.txt does not exist"):
        split_from_files(dataset, train_file, tmp_path / "absent.txt")
