"""WiSE-FT of every method: alpha 0 is exactly the zero-shot model, alpha 1 exactly the tuned one,
and in between each method moves by the rule it documents (weights, LoRA updates, adapters)."""

import pytest
import torch
from imagegen import write_image
from method_options import tiny_options

from clipgauge.embeddings import encode_classes
from clipgauge.methods import method_names
from clipgauge.models.loading import load_clip
from clipgauge.training import finetune, load_run

pytestmark = pytest.mark.usefixtures("one_thread")
PIXELS = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
NAMES, TEMPLATES = ["cat", "dog"], ["a photo of a {}."]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("wise") / "task"
    for d, domain in enumerate(["photo", "art"]):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(5):
                shade = 50 + 30 * i + 15 * d
                write_image(root / domain / name / f"{i}.png", (220, shade, 60)[:: 1 - 2 * c])
    return root


def outputs(bundle):
    """(image features of fixed pixels, class embeddings) of a bundle's model."""
    with torch.no_grad():
        image = bundle.model.get_image_features(pixel_values=PIXELS)
    image = getattr(image, "pooler_output", image)
    return image, encode_classes(bundle, NAMES, TEMPLATES)


@pytest.mark.parametrize("method", sorted(set(method_names()) - {"zeroshot"}))
def test_alpha_0_is_zero_shot_and_1_is_the_tuned_model(method, tiny_clip_dir, task, tmp_path):
    run_dir = tmp_path / method
    options = {"epochs": 1, "lr": 0.05, "batch_size": 4}
    finetune(
        str(tiny_clip_dir),
        str(task),
        ["photo"],
        method,
        tiny_options(method),
        options,
        run_dir,
        progress=False,
    )
    base = outputs(load_clip(str(tiny_clip_dir), device="cpu"))
    tuned = outputs(load_run(run_dir, device="cpu"))
    zero = outputs(load_run(run_dir, device="cpu", wise_alpha=0.0))
    one = outputs(load_run(run_dir, device="cpu", wise_alpha=1.0))
    half = outputs(load_run(run_dir, device="cpu", wise_alpha=0.5))
    for got, want in zip(zero, base, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(one, tuned, strict=True):
        assert torch.equal(got, want)
    moved = [not torch.equal(a, b) for a, b in zip(base, tuned, strict=True)]
    assert any(moved)
    for got, a, b, m in zip(half, base, tuned, moved, strict=True):
        if m:
            assert not torch.equal(got, a) and not torch.equal(got, b)
    if method == "clip-adapter":  # adapters scale what they add: x + alpha * (adapter(x) - x)
        torch.testing.assert_close(half[0], base[0] + 0.5 * (tuned[0] - base[0]))
