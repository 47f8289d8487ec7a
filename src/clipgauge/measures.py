"""Zero-shot alignment measures of a CLIP task: accuracy, ACS, silhouettes, modality gap, IIMM.

Inputs are image embeddings (N x D), class text embeddings (C x D, one row per class) and integer
image labels in [0, C). Numpy arrays and torch tensors are accepted; work is done in float64 over
row chunks, so memory stays bounded for millions of images. Every embedding is L2-normalised
first; a zero row raises ValueError because its cosine is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse

MEASURE_FIELDS = (
    "n_images",
    "n_classes",
    "zero_shot_accuracy",
    "balanced_accuracy",
    "acs",
    "silhouette_modality",
    "silhouette_class",
    "modality_gap",
    "wrong_text_similarity",
    "image_image_similarity",
    "iimm",
)

# The measure that accuracy tables, gains and correlations are about.
ACCURACY = "zero_shot_accuracy"
# The domain label of measures pooled over every domain of a task.
OVERALL = "overall"

DEFAULT_CHUNK_SIZE = 1024

# Mean cosine distances below this are rounding noise: with exact duplicates sklearn computes
# a == b == 0 and reports s = 0 (its nan_to_num of 0/0); we do the same.
_ZERO_DISTANCE = 1e-10


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; no torch import needed here
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # float16 / bfloat16
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _as_matrix(x: Any, name: str) -> np.ndarray:
    x = _as_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x dims), got shape {x.shape}")
    return x


def _row_chunks(
    blocks: Sequence[np.ndarray], chunk_size: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first row index, float64 rows, 1 / row norms) over the stacked blocks."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    offset = 0
    for block in blocks:
        for lo in range(0, len(block), chunk_size):
            rows = np.array(block[lo : lo + chunk_size], dtype=np.float64)
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
            if not np.isfinite(norms).all():
                raise ValueError("embeddings contain NaN or infinite values")
            if (norms == 0).any():
                bad = offset + lo + int(np.flatnonzero(norms == 0)[0])
                raise ValueError(f"row {bad} is a zero vector: its cosine distance is undefined")
            yield offset + lo, rows, 1.0 / norms
        offset += len(block)


def _unit_chunks(blocks: Sequence[np.ndarray], chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row index, L2-normalised float64 rows) over the stacked blocks."""
    for start, rows, inverse_norms in _row_chunks(blocks, chunk_size):
        rows *= inverse_norms[:, None]
        yield start, rows


def _silhouette_blocks(blocks: Sequence[np.ndarray], labels: Any, chunk_size: int) -> np.ndarray:
    n_points = sum(len(b) for b in blocks)
    classes, codes = np.unique(_as_numpy(labels), return_inverse=True)
    codes = codes.reshape(-1)
    if len(codes) != n_points:
        raise ValueError(f"got {len(codes)} labels for {n_points} points")
    if not 1 < len(classes) < n_points:
        raise ValueError(
            f"silhouette needs 2 to n_points - 1 = {n_points - 1} distinct labels, "
            f"got {len(classes)}"
        )
    n_clusters, dim = len(classes), blocks[0].shape[1]
    counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, dim))
    # Normalising is folded into the products (weights 1/||x||) to spare a pass over the rows.
    for start, x, inverse_norms in _row_chunks(blocks, chunk_size):
        c = codes[start : start + len(x)]
        one_hot = scipy.sparse.csr_matrix(
            (inverse_norms, (c, np.arange(len(c)))), shape=(n_clusters, len(c))
        )
        sums += one_hot @ x

    values = np.empty(n_points)
    for start, x, inverse_norms in _row_chunks(blocks, chunk_size):
        c = codes[start : start + len(x)]
        rows = np.arange(len(x))
        dots = (x @ sums.T) * inverse_norms[:, None]  # x_i . S_k, S_k = sum of unit vectors in k
        # For unit vectors, sum_j (1 - x_i . x_j) over cluster k = n_k - x_i . S_k.
        mean_dist = 1.0 - dots / counts
        mean_dist[rows, c] = np.inf
        b = np.maximum(mean_dist.min(axis=1), 0.0)
        # Own cluster: drop x_i itself (x_i . x_i = 1) and average over the other n_k - 1.
        own_n = counts[c]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.maximum((own_n - dots[rows, c]) / (own_n - 1), 0.0)
            larger = np.maximum(a, b)
            s = (b - a) / larger
        s[(own_n == 1) | (larger < _ZERO_DISTANCE)] = 0.0  # sklearn: singletons score 0
        values[start : start + len(x)] = s
    return values


def silhouette_samples(X: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Per-point cosine silhouette, equal to sklearn's silhouette_samples(metric="cosine").

    Costs O(N x K x D) time and no N x N matrix. Points alone in their cluster get 0.
    Raises ValueError unless the number of distinct labels is in 2..N-1.
    """
    return _silhouette_blocks([_as_matrix(X, "X")], labels, chunk_size)


def silhouette(X: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Mean cosine silhouette of the rows of X, as sklearn silhouette_score(metric="cosine")."""
    return float(silhouette_samples(X, labels, chunk_size=chunk_size).mean())


def _images_texts(image_embeds: Any, text_embeds: Any) -> tuple[np.ndarray, np.ndarray]:
    images = _as_matrix(image_embeds, "image_embeds")
    texts = _as_matrix(text_embeds, "text_embeds")
    if len(texts) == 0:
        raise ValueError("text_embeds needs at least one class embedding")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image dims {images.shape[1]} != text dims {texts.shape[1]}")
    return images, texts


def _class_labels(labels: Any, n_images: int, n_classes: int) -> np.ndarray:
    labels = _as_numpy(labels).reshape(-1)
    if len(labels) != n_images:
        raise ValueError(f"got {len(labels)} labels for {n_images} images")
    if n_images and (
        labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= n_classes
    ):
        raise ValueError(f"labels must be integer class indices in [0, {n_classes})")
    return labels.astype(np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    """All rows of a small non-empty matrix (the class texts), L2-normalised in float64."""
    return next(_unit_chunks([x], len(x)))[1]


def modality_silhouette(
    image_embeds: Any, text_embeds: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Cosine silhouette of all images plus the C class texts, labelled image vs text (the
    study's ss). High = the two modalities sit apart. NaN when undefined (fewer than 3 points)."""
    images, texts = _images_texts(image_embeds, text_embeds)
    if len(images) + len(texts) < 3 or len(images) == 0:
        return math.nan
    labels = np.r_[np.zeros(len(images), np.int64), np.ones(len(texts), np.int64)]
    return float(_silhouette_blocks([images, texts], labels, chunk_size).mean())


def class_silhouette(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Cosine silhouette of the same point set labelled by class (text row c is class c).
    NaN instead of an error when fewer than 2 classes or no images (silhouette undefined)."""
    images, texts = _images_texts(image_embeds, text_embeds)
    labels = _class_labels(labels, len(images), len(texts))
    if len(texts) < 2 or len(images) == 0:
        return math.nan
    point_labels = np.r_[labels, np.arange(len(texts))]
    return float(_silhouette_blocks([images, texts], point_labels, chunk_size).mean())


class _TextStats(NamedTuple):
    predicted: np.ndarray  # argmax-cosine class per image
    labels: np.ndarray  # true class per image
    correct_cosine_sum: float  # sum over images of cos(image, its class text)
    cosine_sum: float  # sum over all image-text pairs
    n_classes: int


def _text_stats(image_embeds: Any, text_embeds: Any, labels: Any, chunk_size: int) -> _TextStats:
    """One chunked pass over the images gives every image-text measure."""
    images, texts = _images_texts(image_embeds, text_embeds)
    labels = _class_labels(labels, len(images), len(texts))
    unit_texts = _unit(texts)
    predicted, correct, total = [np.zeros(0, np.int64)], 0.0, 0.0
    for start, unit in _unit_chunks([images], chunk_size):
        cosines = unit @ unit_texts.T
        predicted.append(cosines.argmax(axis=1))
        correct += cosines[np.arange(len(unit)), labels[start : start + len(unit)]].sum()
        total += cosines.sum()
    return _TextStats(np.concatenate(predicted), labels, float(correct), float(total), len(texts))


def _zero_shot_accuracy(stats: _TextStats) -> float:
    return float((stats.predicted == stats.labels).mean()) if len(stats.labels) else math.nan


def _balanced_accuracy(stats: _TextStats) -> float:
    if len(stats.labels) == 0:
        return math.nan
    support = np.bincount(stats.labels)
    hits = np.bincount(stats.labels[stats.predicted == stats.labels], minlength=len(support))
    present = support > 0
    return float((hits[present] / support[present]).mean())


def _acs(stats: _TextStats) -> float:
    n = len(stats.labels)
    return stats.correct_cosine_sum / n if n else math.nan


def _wrong_text_similarity(stats: _TextStats) -> float:
    n_pairs = len(stats.labels) * (stats.n_classes - 1)
    return (stats.cosine_sum - stats.correct_cosine_sum) / n_pairs if n_pairs else math.nan


def zero_shot_accuracy(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Top-1 accuracy of argmax cosine over the class texts. NaN with no images."""
    return _zero_shot_accuracy(_text_stats(image_embeds, text_embeds, labels, chunk_size))


def correct_predictions(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Per image, whether argmax cosine over the class texts is its label (bool, N): the
    image-level outcomes that zero_shot_accuracy averages."""
    stats = _text_stats(image_embeds, text_embeds, labels, chunk_size)
    return stats.predicted == stats.labels


def balanced_accuracy(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Mean per-class recall over the classes present in labels. NaN with no images."""
    return _balanced_accuracy(_text_stats(image_embeds, text_embeds, labels, chunk_size))


def acs(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Average cosine of each image with its correct class text. NaN with no images."""
    return _acs(_text_stats(image_embeds, text_embeds, labels, chunk_size))


def wrong_text_similarity(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Mean cosine over all N x (C - 1) pairs of an image and an incorrect class text.
    NaN with no images or a single class."""
    return _wrong_text_similarity(_text_stats(image_embeds, text_embeds, labels, chunk_size))


def _unit_sum(x: np.ndarray, chunk_size: int) -> np.ndarray:
    """Sum of the L2-normalised rows of x."""
    total = np.zeros(x.shape[1])
    for _, unit in _unit_chunks([x], chunk_size):
        total += unit.sum(axis=0)
    return total


def image_image_similarity(image_embeds: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Mean cosine over all ordered pairs of distinct images. NaN with fewer than 2 images."""
    images = _as_matrix(image_embeds, "image_embeds")
    n = len(images)
    if n < 2:
        return math.nan
    total = _unit_sum(images, chunk_size)
    # For unit vectors ||S||^2 = sum_ij x_i . x_j = N + sum over pairs i != j.
    return float((total @ total - n) / (n * (n - 1)))


def modality_gap(
    image_embeds: Any, text_embeds: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """|| mean unit image - mean unit class text ||_2 (Liang et al., 2022). NaN with no images."""
    images, texts = _images_texts(image_embeds, text_embeds)
    if len(images) == 0:
        return math.nan
    image_mean = _unit_sum(images, chunk_size) / len(images)
    return float(np.linalg.norm(image_mean - _unit(texts).mean(axis=0)))


def iimm(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> float:
    """Mean of wrong_text_similarity and image_image_similarity (the follow-up's IIMM)."""
    wrong = wrong_text_similarity(image_embeds, text_embeds, labels, chunk_size=chunk_size)
    return (wrong + image_image_similarity(image_embeds, chunk_size=chunk_size)) / 2


def compute_measures(
    image_embeds: Any, text_embeds: Any, labels: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> dict[str, float]:
    """All measures, keyed by MEASURE_FIELDS in that order. A measure undefined for the input
    (no images, one image, one class) is NaN rather than an error."""
    images, texts = _images_texts(image_embeds, text_embeds)
    stats = _text_stats(images, texts, labels, chunk_size)
    wrong = _wrong_text_similarity(stats)
    image_image = image_image_similarity(images, chunk_size=chunk_size)
    return {
        "n_images": len(images),
        "n_classes": len(texts),
        "zero_shot_accuracy": _zero_shot_accuracy(stats),
        "balanced_accuracy": _balanced_accuracy(stats),
        "acs": _acs(stats),
        "silhouette_modality": modality_silhouette(images, texts, chunk_size=chunk_size),
        "silhouette_class": class_silhouette(images, texts, labels, chunk_size=chunk_size),
        "modality_gap": modality_gap(images, texts, chunk_size=chunk_size),
        "wrong_text_similarity": wrong,
        "image_image_similarity": image_image,
        "iimm": (wrong + image_image) / 2,
    }
