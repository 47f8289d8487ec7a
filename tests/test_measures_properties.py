"""Properties the measures promise, checked with hypothesis on generated embeddings.

Every measure is a mean over images (or over the image and text points), so it cannot depend
on row order; classes are only told apart by index, so renaming them consistently (permuting
text rows and relabelling images) changes nothing; and every embedding is L2-normalised first
(clipgauge.measures), so scaling any image or text row by a positive factor changes nothing.
Embeddings are drawn around class centres from a seed, so argmax ties (where a renaming may
legitimately pick another class) have probability zero.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clipgauge.measures import MEASURE_FIELDS, compute_measures

FAST = settings(max_examples=25, deadline=None)


@st.composite
def tasks(draw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images N x D, class texts C x D, labels), unnormalised, some classes possibly empty."""
    n_classes = draw(st.integers(2, 5))
    n_images = draw(st.integers(2, 30))
    dim = draw(st.integers(2, 12))
    spread = draw(st.floats(0.1, 3.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    texts = rng.standard_normal((n_classes, dim))
    labels = rng.integers(0, n_classes, n_images)
    images = texts[labels] + spread * rng.standard_normal((n_images, dim))
    images *= rng.uniform(0.5, 2.0, (n_images, 1))  # no row starts out unit length
    return images, texts, labels


def assert_same_measures(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected) == list(MEASURE_FIELDS)
    for field in MEASURE_FIELDS:
        a, e = actual[field], expected[field]
        if isinstance(e, float) and math.isnan(e):
            assert math.isnan(a), field
        else:
            assert math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9), (field, a, e)


@FAST
@given(task=tasks(), data=st.data())
def test_row_order_does_not_matter(task, data):
    images, texts, labels = task
    order = np.array(data.draw(st.permutations(range(len(images)))))
    assert_same_measures(
        compute_measures(images[order], texts, labels[order]),
        compute_measures(images, texts, labels),
    )


@FAST
@given(task=tasks(), data=st.data())
def test_renaming_classes_consistently_does_not_matter(task, data):
    images, texts, labels = task
    rename = np.array(data.draw(st.permutations(range(len(texts)))))  # class c becomes rename[c]
    renamed_texts = np.empty_like(texts)
    renamed_texts[rename] = texts
    assert_same_measures(
        compute_measures(images, renamed_texts, rename[labels]),
        compute_measures(images, texts, labels),
    )


positive_factors = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@FAST
@given(task=tasks(), data=st.data())
def test_scaling_rows_by_positive_factors_does_not_matter(task, data):
    images, texts, labels = task
    image_factors = data.draw(
        st.lists(positive_factors, min_size=len(images), max_size=len(images))
    )
    text_factors = data.draw(st.lists(positive_factors, min_size=len(texts), max_size=len(texts)))
    assert_same_measures(
        compute_measures(
            images * np.array(image_factors)[:, None],
            texts * np.array(text_factors)[:, None],
            labels,
        ),
        compute_measures(images, texts, labels),
    )


@FAST
@given(task=tasks())
def test_a_negative_factor_does_matter(task):
    """The scaling property is about positive factors only: flipping every image changes ACS
    sign, so the tests above would catch a measure that ignored its input."""
    images, texts, labels = task
    flipped = compute_measures(-images, texts, labels)
    expected = -compute_measures(images, texts, labels)["acs"]
    assert math.isclose(flipped["acs"], expected, rel_tol=1e-9, abs_tol=1e-12)
