"""clipgauge.task_measures: per-domain and overall measures with provenance, the JSON report
and the table. References: compute_measures on rows selected by hand, hand-written JSON and
table text, and the split made by clipgauge.data.splits directly."""

import json
import math

import numpy as np
import pytest
import torch
from imagegen import make_domainbed

from clipgauge import __version__
from clipgauge.cache import TensorCache
from clipgauge.data.folders import from_domainbed
from clipgauge.data.splits import split_train_test
from clipgauge.embeddings import TaskEmbeddings, embed_dataset
from clipgauge.errors import DataError
from clipgauge.measures import MEASURE_FIELDS, compute_measures
from clipgauge.models.loading import load_clip
from clipgauge.task_measures import (
    MeasureReport,
    _json_safe,
    format_table,
    measure,
    measure_embeddings,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def embeddings(domains: list[int], domain_names: list[str]) -> TaskEmbeddings:
    rng = np.random.default_rng(0)
    n = len(domains)
    labels = [i % 3 for i in range(n)]
    return TaskEmbeddings(
        image_embeds=torch.nn.functional.normalize(torch.tensor(rng.normal(size=(n, 8))), dim=1),
        text_embeds=torch.nn.functional.normalize(torch.tensor(rng.normal(size=(3, 8))), dim=1),
        labels=torch.tensor(labels),
        domains=torch.tensor(domains),
        class_names=["cat", "dog", "bird"],
        domain_names=domain_names,
        paths=[f"{i}.png" for i in range(n)],
        templates=["a photo of a {}."],
        preprocessing={"processor": "P"},
        model={"name": "m", "fingerprint": "f"},
        data={"root": "r"},
        skipped=[("bad.png", "not an image")],
    )


def same_row(actual: dict, expected: dict) -> bool:
    assert list(actual) == list(MEASURE_FIELDS)
    return all(
        (math.isnan(expected[k]) and math.isnan(actual[k])) or actual[k] == expected[k]
        for k in MEASURE_FIELDS
    )


def test_rows_are_each_domains_images_then_all_of_them():
    domains = [0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    emb = embeddings(domains, ["photo", "sketch"])
    report = measure_embeddings(emb)
    assert list(report.rows) == ["photo", "sketch", "overall"]
    for d, name in enumerate(["photo", "sketch"]):
        picked = [i for i, x in enumerate(domains) if x == d]
        reference = compute_measures(emb.image_embeds[picked], emb.text_embeds, emb.labels[picked])
        assert same_row(report.rows[name], reference)
        assert report.rows[name]["n_images"] == len(picked)
    overall = compute_measures(emb.image_embeds, emb.text_embeds, emb.labels)
    assert same_row(report.rows["overall"], overall)


def test_a_domain_without_images_has_no_row_and_provenance_is_complete():
    emb = embeddings([0, 2, 2, 0, 2, 0], ["photo", "empty", "art"])
    report = measure_embeddings(emb)
    assert list(report.rows) == ["photo", "art", "overall"]
    assert report.provenance == {
        "clipgauge_version": __version__,
        "model": {"name": "m", "fingerprint": "f"},
        "data": {"root": "r"},
        "templates": ["a photo of a {}."],
        "preprocessing": {"processor": "P"},
        "skipped_images": [{"path": "bad.png", "reason": "not an image"}],
        "class_names": ["cat", "dog", "bird"],
    }


def test_json_safe_turns_nan_into_null_at_any_depth():
    nan = float("nan")
    value = {"a": nan, "b": [1.5, nan, (nan, "x")], "c": {"d": nan, "e": 0.0}, "f": None}
    assert _json_safe(value) == {
        "a": None,
        "b": [1.5, None, [None, "x"]],
        "c": {"d": None, "e": 0.0},
        "f": None,
    }
    assert _json_safe(nan) is None and _json_safe(2.0) == 2.0 and _json_safe("nan") == "nan"


def test_report_dict_and_json_file(tmp_path):
    rows = {"photo": {"acs": 0.5}, "art": {"acs": float("nan")}, "overall": {"acs": 0.25}}
    report = MeasureReport(rows=rows, provenance={"seed": 1})
    assert report.to_dict() == {
        "domains": {"photo": {"acs": 0.5}, "art": rows["art"]},
        "overall": {"acs": 0.25},
        "provenance": {"seed": 1},
    }
    path = report.save_json(str(tmp_path / "out" / "report.json"))
    assert path == tmp_path / "out" / "report.json"
    text = path.read_text()
    assert text == json.dumps(
        {
            "domains": {"photo": {"acs": 0.5}, "art": {"acs": None}},
            "overall": {"acs": 0.25},
            "provenance": {"seed": 1},
        },
        indent=2,
    )
    assert '\n  "overall": {\n    "acs": 0.25\n  },' in text


ROW = {
    "n_images": 40,
    "n_classes": 4,
    "zero_shot_accuracy": 0.8125,
    "balanced_accuracy": 0.75,
    "acs": 0.12345,
    "silhouette_modality": float("nan"),
    "silhouette_class": -0.0625,
    "modality_gap": 0.5,
    "iimm": 1.0,
}
HEADER = (
    "domain         images   classes      acc  bal_acc     acs   ss_mod   ss_cls     gap    iimm"
)
ROW_TEXT = "40         4    0.812    0.750  0.1235      nan  -0.0625  0.5000  1.0000"
TABLE = "\n".join(
    [HEADER, "-" * 91, "photo              " + ROW_TEXT, "overall            " + ROW_TEXT]
)


def test_table_text_is_fixed_width():
    rows = {"photo": dict(ROW), "overall": dict(ROW)}
    assert format_table(rows) == TABLE
    assert MeasureReport(rows=rows, provenance={}).table() == TABLE


# --- measure(): the whole path ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tiny_clip_dir):
    return load_clip(str(tiny_clip_dir), device="cpu")


@pytest.fixture
def pacs(tmp_path):
    return make_domainbed(tmp_path / "pacs", ["photo", "art"], ["dog", "cat"], per_class=5)


def test_measure_a_split_of_chosen_domains(bundle, pacs, tmp_path):
    dataset = from_domainbed(pacs)
    cache = TensorCache(tmp_path / "cache")
    options = dict(split="test", seed=3, test_fraction=0.4, cache=cache, progress=False)
    report = measure(bundle, dataset, domains=["art"], batch_size=3, **options)
    _, test = split_train_test(dataset.select_domains(["art"]), test_fraction=0.4, seed=3)
    assert list(report.rows) == ["art", "overall"]
    assert report.rows["art"]["n_images"] == len(test) == 4
    assert report.provenance["split"] == {"split": "test", "seed": 3, "test_fraction": 0.4}
    assert report.provenance["from_cache"] is False
    assert report.provenance["data"]["n_items"] == len(test)
    again = measure(bundle, dataset, domains=["art"], **options)
    assert again.provenance["from_cache"] is True
    assert again.rows["art"] == report.rows["art"]
    train = measure(bundle, dataset, domains=["art"], split="train", seed=3, test_fraction=0.4)
    assert train.rows["art"]["n_images"] == 6


def test_measure_opens_the_model_and_data_by_name(tiny_clip_dir, pacs):
    report = measure(
        str(tiny_clip_dir),
        str(pacs),
        domains=["photo"],
        class_map={"dog": "puppy"},
        templates=["a sketch of the {}."],
        device="cpu",
        dtype="bf16",
        progress=False,
    )
    assert list(report.rows) == ["photo", "overall"]
    assert report.rows["photo"]["n_images"] == 10
    assert report.provenance["model"]["dtype"] == "bfloat16"
    assert report.provenance["model"]["device"] == "cpu"
    assert report.provenance["templates"] == ["a sketch of the {}."]
    assert sorted(report.provenance["class_names"]) == ["cat", "puppy"]
    assert report.provenance["split"]["split"] == "all"
    assert report.provenance["from_cache"] is False


def test_measure_defaults(tiny_clip_dir, pacs, capsys):
    """The documented defaults: fp32, every image, seed 0 and a 0.2 test fraction for a
    split, a progress bar, and a bad image stops the measurement."""
    dataset = from_domainbed(pacs)
    report = measure(str(tiny_clip_dir), dataset, domains=["art"], split="test", device="cpu")
    assert report.provenance["model"]["dtype"] == "float32"
    assert report.provenance["split"] == {"split": "test", "seed": 0, "test_fraction": 0.2}
    _, test = split_train_test(dataset.select_domains(["art"]), test_fraction=0.2, seed=0)
    assert report.rows["art"]["n_images"] == len(test) == 2
    assert "%|" in capsys.readouterr().err  # tqdm's bar
    (pacs / "art" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        measure(str(tiny_clip_dir), str(pacs), progress=False)


def test_the_split_seed_decides_which_images_are_measured(bundle, pacs, capsys):
    dataset = from_domainbed(pacs)
    for seed in (0, 5):
        report = measure(bundle, dataset, split="test", seed=seed, progress=False)
        _, test = split_train_test(dataset, test_fraction=0.2, seed=seed)
        reference = embed_dataset(bundle, test, ["a photo of a {}."], progress=False)
        expected = compute_measures(reference.image_embeds, reference.text_embeds, reference.labels)
        assert same_row(report.rows["overall"], expected)
        assert report.provenance["data"]["fingerprint"] == test.fingerprint()
    assert "%|" not in capsys.readouterr().err  # progress=False: no bar


def test_measure_all_domains_and_skip_bad_images(bundle, pacs):
    (pacs / "art" / "cat" / "broken.png").write_bytes(b"not a png")
    report = measure(bundle, from_domainbed(pacs), skip_bad_images=True, progress=False)
    assert list(report.rows) == ["art", "photo", "overall"]
    assert report.rows["overall"]["n_images"] == 20
    assert report.provenance["skipped_images"][0]["path"].endswith("broken.png")
