import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, silhouette_score
from sklearn.metrics import silhouette_samples as sk_silhouette_samples

from clipgauge import measures
from clipgauge.measures import (
    MEASURE_FIELDS,
    acs,
    balanced_accuracy,
    class_silhouette,
    compute_measures,
    iimm,
    image_image_similarity,
    modality_gap,
    modality_silhouette,
    silhouette,
    silhouette_samples,
    wrong_text_similarity,
    zero_shot_accuracy,
)

TOL = 1e-5


def sk_score(X, labels):
    return silhouette_score(np.asarray(X, dtype=np.float64), labels, metric="cosine")


def clustered(seed, n, dim, k, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = rng.integers(0, k, n)
    return centres[labels] + spread * rng.normal(size=(n, dim)), labels


def task(seed=0, n=60, dim=12, n_classes=5):
    """Images near their class text, plus the texts and labels."""
    rng = np.random.default_rng(seed)
    texts = rng.normal(size=(n_classes, dim))
    labels = rng.integers(0, n_classes, n)
    images = texts[labels] + 1.5 * rng.normal(size=(n, dim)) + 0.5
    return images, texts, labels


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- silhouette against sklearn ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n", "dim", "k"), [(40, 3, 2), (150, 16, 6), (120, 8, 40)])
def test_silhouette_matches_sklearn_on_random_data(seed, n, dim, k):
    X, labels = clustered(seed, n, dim, k, spread=0.3 + seed)
    assert silhouette(X, labels) == pytest.approx(sk_score(X, labels), abs=TOL)
    expected = sk_silhouette_samples(X, labels, metric="cosine")
    np.testing.assert_allclose(silhouette_samples(X, labels), expected, atol=TOL)


def test_silhouette_is_scale_invariant_and_matches_sklearn():
    X, labels = clustered(3, 100, 10, 4)
    scaled = X * np.random.default_rng(3).uniform(1e-3, 1e3, size=(100, 1))
    assert silhouette(scaled, labels) == pytest.approx(sk_score(scaled, labels), abs=TOL)
    assert silhouette(scaled, labels) == pytest.approx(silhouette(X, labels), abs=1e-12)


def test_silhouette_singleton_clusters_score_zero():
    X, labels = clustered(4, 30, 6, 3)
    labels = labels.copy()
    labels[[0, 5]] = [7, 8]  # two clusters of one point each
    values = silhouette_samples(X, labels)
    assert values[0] == 0.0 and values[5] == 0.0
    np.testing.assert_allclose(values, sk_silhouette_samples(X, labels, metric="cosine"), atol=TOL)
    assert silhouette(X, labels) == pytest.approx(sk_score(X, labels), abs=TOL)


@pytest.mark.parametrize(
    ("rows", "labels"),
    [
        ([0, 0, 0, 0, 0], [0, 0, 0, 1, 1]),  # every point identical, two clusters
        ([0, 0, 0, 1, 2, 3, 4], [0, 0, 1, 1, 1, 2, 2]),  # duplicates within and across clusters
        ([0, 0, 1, 1, 2, 3], [0, 0, 1, 1, 2, 2]),  # clusters made of one repeated point
        ([0, 0, 1, 2, 3], [0, 1, 2, 2, 3]),  # duplicate pair split into two singletons
    ],
)
def test_silhouette_duplicate_points_match_sklearn(rows, labels):
    base = np.random.default_rng(5).normal(size=(5, 7))
    X = base[rows] * np.arange(1, len(rows) + 1)[:, None]  # same direction, different norm
    np.testing.assert_allclose(
        silhouette_samples(X, labels), sk_silhouette_samples(X, labels, metric="cosine"), atol=TOL
    )
    assert silhouette(X, labels) == pytest.approx(sk_score(X, labels), abs=TOL)


def test_silhouette_many_random_duplicates_match_sklearn():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(8, 5))[rng.integers(0, 8, 200)]
    labels = rng.integers(0, 6, 200)
    assert silhouette(X, labels) == pytest.approx(sk_score(X, labels), abs=TOL)


@pytest.mark.parametrize("kind", ["torch32", "numpy32", "numpy64", "strided"])
def test_silhouette_input_types(kind):
    X, labels = clustered(7, 90, 20, 5)
    X32 = X.astype(np.float32)
    inputs = {
        "torch32": (torch.from_numpy(X32), torch.from_numpy(labels)),
        "numpy32": (X32, labels),
        "numpy64": (X, labels),
        "strided": (np.asfortranarray(X)[::2, ::2], labels[::2]),
    }
    data, lab = inputs[kind]
    reference = np.asarray(data, dtype=np.float64)
    # sklearn on the same float32 values, which it computes in float32
    assert silhouette(data, lab) == pytest.approx(
        silhouette_score(np.asarray(data), np.asarray(lab), metric="cosine"), abs=TOL
    )
    assert silhouette(data, lab) == pytest.approx(sk_score(reference, np.asarray(lab)), abs=TOL)


@pytest.mark.parametrize(
    "names", [["cat", "dog", "eel"], [-5, 17, 1000], [2.5, -1.0, 9.0], [True, False, True]]
)
def test_silhouette_arbitrary_label_values(names):
    X, codes = clustered(8, 60, 9, 3)
    labels = np.array(names, dtype=object if isinstance(names[0], str) else None)[codes]
    labels = list(labels)
    assert silhouette(X, labels) == pytest.approx(sk_score(X, labels), abs=TOL)


def test_silhouette_label_count_errors():
    X, _ = clustered(9, 10, 4, 2)
    with pytest.raises(ValueError, match="distinct labels"):
        silhouette(X, np.zeros(10))
    with pytest.raises(ValueError, match="distinct labels"):
        silhouette(X, np.arange(10))  # N labels for N points is undefined too
    with pytest.raises(ValueError, match="labels for"):
        silhouette(X, [0, 1])


def test_zero_vector_raises():
    X, labels = clustered(10, 10, 4, 2)
    X[3] = 0
    with pytest.raises(ValueError, match="row 3 is a zero vector"):
        silhouette(X, labels)
    images, texts, labels = task()
    texts[1] = 0
    with pytest.raises(ValueError, match="zero vector"):
        acs(images, texts, labels)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_chunking_gives_identical_results(chunk_size):
    X, labels = clustered(11, 50, 6, 4)
    np.testing.assert_allclose(
        silhouette_samples(X, labels, chunk_size=chunk_size),
        silhouette_samples(X, labels),
        rtol=0,
        atol=1e-12,
    )
    images, texts, labels = task(11)
    chunked = compute_measures(images, texts, labels, chunk_size=chunk_size)
    whole = compute_measures(images, texts, labels)
    assert chunked.keys() == whole.keys()
    for key in whole:
        assert chunked[key] == pytest.approx(whole[key], abs=1e-12), key


# --- study silhouettes on the stacked point set -----------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_modality_and_class_silhouette_match_sklearn(seed):
    images, texts, labels = task(seed)
    points = np.vstack([images, texts])
    modality = np.r_[np.zeros(len(images)), np.ones(len(texts))]
    classes = np.r_[labels, np.arange(len(texts))]
    assert modality_silhouette(images, texts) == pytest.approx(sk_score(points, modality), abs=TOL)
    assert class_silhouette(images, texts, labels) == pytest.approx(
        sk_score(points, classes), abs=TOL
    )


def test_study_silhouettes_undefined_give_nan():
    images, texts, labels = task()
    assert math.isnan(class_silhouette(images, texts[:1], np.zeros(len(images), int)))
    assert math.isnan(modality_silhouette(images[:1], texts[:1]))
    one_image = modality_silhouette(images[:1], texts)
    points = np.vstack([images[:1], texts])
    modality = np.r_[0, np.ones(len(texts))]
    assert one_image == pytest.approx(sk_score(points, modality), abs=TOL)


# --- other measures against brute force -------------------------------------------------------


def brute_force(images, texts, labels):
    cos = unit(images) @ unit(texts).T
    n, c = cos.shape
    wrong = [cos[i, j] for i in range(n) for j in range(c) if j != labels[i]]
    pairwise = unit(images) @ unit(images).T
    others = [pairwise[i, j] for i in range(n) for j in range(n) if i != j]
    gap = np.linalg.norm(unit(images).mean(axis=0) - unit(texts).mean(axis=0))
    return {
        "zero_shot_accuracy": np.mean(cos.argmax(axis=1) == labels),
        "acs": np.mean([cos[i, labels[i]] for i in range(n)]),
        "modality_gap": gap,
        "wrong_text_similarity": np.mean(wrong),
        "image_image_similarity": np.mean(others),
        "iimm": (np.mean(wrong) + np.mean(others)) / 2,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measures_match_brute_force(seed):
    images, texts, labels = task(seed, n=40 + 10 * seed)
    expected = brute_force(images, texts, labels)
    assert zero_shot_accuracy(images, texts, labels) == pytest.approx(
        expected["zero_shot_accuracy"], abs=TOL
    )
    assert acs(images, texts, labels) == pytest.approx(expected["acs"], abs=TOL)
    assert modality_gap(images, texts) == pytest.approx(expected["modality_gap"], abs=TOL)
    assert wrong_text_similarity(images, texts, labels) == pytest.approx(
        expected["wrong_text_similarity"], abs=TOL
    )
    assert image_image_similarity(images) == pytest.approx(
        expected["image_image_similarity"], abs=TOL
    )
    assert iimm(images, texts, labels) == pytest.approx(expected["iimm"], abs=TOL)


def test_balanced_accuracy_matches_sklearn_with_absent_classes():
    images, texts, labels = task(3, n_classes=6)
    labels = np.where(labels == 4, 0, labels)  # class 4 has no images
    predicted = (unit(images) @ unit(texts).T).argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent in y_true
        expected = balanced_accuracy_score(labels, predicted)
    assert balanced_accuracy(images, texts, labels) == pytest.approx(expected, abs=TOL)


def test_compute_measures_fields_and_torch_input():
    images, texts, labels = task(4)
    result = compute_measures(
        torch.from_numpy(images).float(), torch.from_numpy(texts).float(), torch.from_numpy(labels)
    )
    assert tuple(result) == MEASURE_FIELDS
    assert result["n_images"] == len(images) and isinstance(result["n_images"], int)
    assert result["n_classes"] == len(texts) and isinstance(result["n_classes"], int)
    expected = brute_force(images, texts, labels)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=TOL), key
    assert result["silhouette_modality"] == pytest.approx(modality_silhouette(images, texts), 1e-6)


@pytest.mark.parametrize(("n_images", "n_classes"), [(1, 3), (1, 1), (5, 1), (0, 3)])
def test_compute_measures_edge_cases_do_not_crash(n_images, n_classes):
    images, texts, _ = task(5, n=max(n_images, 1), n_classes=n_classes)
    images = images[:n_images]
    labels = np.zeros(n_images, dtype=int)
    result = compute_measures(images, texts, labels)
    assert tuple(result) == MEASURE_FIELDS
    nan_expected = {
        "image_image_similarity": n_images < 2,
        "wrong_text_similarity": n_classes < 2 or n_images == 0,
        "silhouette_class": n_classes < 2 or n_images == 0,
        "silhouette_modality": n_images + n_classes < 3 or n_images == 0,
        "zero_shot_accuracy": n_images == 0,
    }
    for key, is_nan in nan_expected.items():
        assert math.isnan(result[key]) == is_nan, key


def test_bad_class_labels_raise():
    images, texts, labels = task()
    with pytest.raises(ValueError, match="class indices"):
        acs(images, texts, labels + len(texts))
    with pytest.raises(ValueError, match="labels for"):
        acs(images, texts, labels[:-1])


def test_chunk_size_must_be_positive():
    X, labels = clustered(0, 10, 3, 2)
    with pytest.raises(ValueError, match="chunk_size"):
        measures.silhouette(X, labels, chunk_size=0)


def test_inputs_are_not_modified():
    X, labels = clustered(12, 30, 5, 3)
    original = X.copy()
    silhouette(X, labels)
    images, texts, image_labels = task(12)
    images_before, texts_before = images.copy(), texts.copy()
    compute_measures(images, texts, image_labels)
    np.testing.assert_array_equal(X, original)
    np.testing.assert_array_equal(images, images_before)
    np.testing.assert_array_equal(texts, texts_before)
