import json

import pytest
from imagegen import write_image

from clipgauge.data.manifest import from_csv
from clipgauge.errors import DataError


@pytest.fixture
def images(tmp_path):
    for name in ["a.png", "b.png", "c.png", "sub/d.png"]:
        write_image(tmp_path / "data" / name)
    return tmp_path / "data"


def write_csv(folder, text, name="manifest.csv"):
    path = folder / name
    path.write_text(text)
    return path


def test_csv_happy_path(images, tmp_path):
    outside = write_image(tmp_path / "elsewhere.png")
    manifest = write_csv(
        images,
        "path,label,domain,note\n"
        "b.png,zebra,photo,x\n"
        "a.png,ice_cream,art,\n"
        "\n"
        f"{outside},zebra,art,absolute paths are allowed\n"
        "sub/d.png,ice_cream,photo,y\n",
    )
    dataset = from_csv(manifest)
    assert dataset.class_names == ["ice cream", "zebra"]
    assert dataset.source["class_keys"] == ["ice_cream", "zebra"]
    assert dataset.domain_names == ["art", "photo"]
    assert [it.path for it in dataset.items] == [
        str(images / "b.png"),
        str(images / "a.png"),
        str(outside),
        str(images / "sub" / "d.png"),
    ]
    assert dataset.labels == [1, 0, 1, 0]
    assert dataset.domains == [1, 0, 0, 1]
    assert dataset.source["kind"] == "csv" and dataset.source["root"] == str(images)
    assert len(dataset.file_stats) == 4
    assert dataset.load_image(0).mode == "RGB"


def test_csv_without_domain_column(images):
    dataset = from_csv(write_csv(images, "Label , Path\ncat,a.png\ndog,b.png\n"))
    assert dataset.domain_names == ["all"]
    assert dataset.class_names == ["cat", "dog"]


def test_csv_class_map(images, tmp_path):
    class_map = tmp_path / "classes.json"
    class_map.write_text(json.dumps({"cat": "tabby cat", "dog": "dog", "owl": "owl"}))
    dataset = from_csv(write_csv(images, "path,label\na.png,cat\nb.png,dog\n"), class_map)
    assert dataset.class_names == ["tabby cat", "dog", "owl"]
    assert dataset.labels == [0, 1]
    manifest = write_csv(images, "path,label\na.png,cat\nb.png,horse\n", "bad.csv")
    with pytest.raises(DataError, match=r"bad\.csv, line 3: unknown label 'horse'.*classes\.json"):
        from_csv(manifest, class_map)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("file,label\na.png,cat\n", r"line 1: missing column\(s\) \['path'\].*\['file', 'label'\]"),
        ("path,label\na.png,cat\nb.png,\n", r"line 3: the label is empty"),
        ("path,label\n,cat\n", r"line 2: the path is empty"),
        ("path,label\na.png,cat\nb.png,dog\n./a.png,dog\n", r"line 4: duplicate path.*line 2"),
        (
            "path,label\na.png,cat\n../x.png,cat\n",
            r"line 3: path '\.\./x\.png' is outside the root",
        ),
        ("path,label\nsub/../../x.png,cat\n", r"line 2: .*outside the root"),
        ("path,label\nmissing.png,cat\n", r"line 2: image file .*missing\.png not found"),
        ("path,label\nsub,cat\n", r"line 2: .*sub is not a file"),
        ("path,label,domain\na.png,cat,\n", r"line 2: the domain is empty"),
        ("path,label\n", r"has a header but no rows"),
        ("", r"is empty"),
    ],
)
def test_csv_errors_name_file_and_line(images, text, pattern):
    manifest = write_csv(images, text, "broken.csv")
    with pytest.raises(DataError, match=pattern) as caught:
        from_csv(manifest)
    assert "broken.csv" in str(caught.value)


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv does not exist"):
        from_csv(tmp_path / "nope.csv")
