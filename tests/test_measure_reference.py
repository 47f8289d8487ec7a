"""`clipgauge measure --json` equals brute-force numpy and scikit-learn computations on the
embeddings `clipgauge embed` exports for the same images, per domain and overall."""

from __future__ import annotations

import json

import numpy as np
import pytest
from imagegen import make_domainbed
from safetensors.numpy import load_file
from sklearn.metrics import balanced_accuracy_score, silhouette_score

from clipgauge.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_measures(images: np.ndarray, texts: np.ndarray, labels: np.ndarray) -> dict:
    """Every measure from its definition (README, `clipgauge.measures` docstrings), with full
    N x C and N x N similarity matrices and scikit-learn."""
    images, texts = unit_rows(images), unit_rows(texts)
    n, c = len(images), len(texts)
    cosines = images @ texts.T
    predicted = cosines.argmax(axis=1)
    correct = cosines[np.arange(n), labels]
    wrong_mask = np.ones_like(cosines, dtype=bool)
    wrong_mask[np.arange(n), labels] = False
    image_pairs = images @ images.T
    distinct = ~np.eye(n, dtype=bool)
    points = np.vstack([images, texts])
    wrong = cosines[wrong_mask].mean()
    image_image = image_pairs[distinct].mean()
    return {
        "n_images": n,
        "n_classes": c,
        "zero_shot_accuracy": np.mean(predicted == labels),
        "balanced_accuracy": balanced_accuracy_score(labels, predicted),
        "acs": correct.mean(),
        "silhouette_modality": silhouette_score(
            points, np.r_[np.zeros(n), np.ones(c)], metric="cosine"
        ),
        "silhouette_class": silhouette_score(points, np.r_[labels, np.arange(c)], metric="cosine"),
        "modality_gap": np.linalg.norm(images.mean(axis=0) - texts.mean(axis=0)),
        "wrong_text_similarity": wrong,
        "image_image_similarity": image_image,
        "iimm": (wrong + image_image) / 2,
    }


def test_measure_json_equals_brute_force_on_the_exported_embeddings(
    tiny_clip_dir, tmp_path, capsys
):
    data = make_domainbed(
        tmp_path / "task", ["photo", "art", "sketch"], ["cat", "dog", "bird"], per_class=4
    )
    common = ["--model", str(tiny_clip_dir), "--data", str(data), "--no-cache", "--no-progress"]
    assert main(["embed", *common, "--out", str(tmp_path / "e.safetensors")]) == 0
    assert main(["measure", *common, "--json", str(tmp_path / "m.json")]) == 0
    capsys.readouterr()
    exported = load_file(tmp_path / "e.safetensors")
    sidecar = json.loads((tmp_path / "e.json").read_text())
    report = json.loads((tmp_path / "m.json").read_text())

    images, texts = exported["image_embeds"], exported["text_embeds"]
    labels, domains = exported["labels"], exported["domains"]
    assert images.shape[0] == 36 and texts.shape[0] == 3
    assert report["provenance"]["templates"] == sidecar["templates"]
    assert report["provenance"]["class_names"] == sidecar["class_names"]
    expected = {
        name: brute_force_measures(images[domains == d], texts, labels[domains == d])
        for d, name in enumerate(sidecar["domain_names"])
    }
    expected["overall"] = brute_force_measures(images, texts, labels)
    measured = {**report["domains"], "overall": report["overall"]}
    assert list(measured) == ["art", "photo", "sketch", "overall"]
    for name, row in measured.items():
        assert row.keys() == expected[name].keys()
        for field, value in expected[name].items():
            assert row[field] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, field)
    # The data is not so easy that the accuracies say nothing.
    assert len({round(row["zero_shot_accuracy"], 6) for row in measured.values()}) > 1
