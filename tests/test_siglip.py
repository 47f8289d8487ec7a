"""SigLIP through transformers' SiglipModel: loading, padding, logits, measures and every method."""

import json

import pytest
import torch
import torch.nn.functional as F
from imagegen import write_image
from method_options import tiny_options

from clipgauge.embeddings import encode_classes, encode_texts
from clipgauge.errors import ModelError
from clipgauge.methods import get_method, method_names
from clipgauge.methods.base import count_parameters
from clipgauge.models import backbone
from clipgauge.models.build import build_siglip
from clipgauge.models.loading import load_clip
from clipgauge.task_measures import measure
from clipgauge.training import TrainConfig, evaluate_run, finetune
from clipgauge.training.losses import class_loss

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = "a photo of the cat dog red blue".split()


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return build_siglip(tmp_path_factory.mktemp("siglip") / "tiny-siglip", WORDS, seed=1)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours") / "data"
    for d, domain in enumerate(["photo", "art"]):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(6):
                shade = 40 + 25 * i + 10 * d
                write_image(
                    root / domain / name / f"{i}.png",
                    (230, shade, 60) if c == 0 else (60, shade, 230),
                )
    return root


def test_loads_as_siglip_and_pads_to_the_context(siglip_dir):
    bundle = load_clip(str(siglip_dir), device="cpu")
    assert bundle.family == "siglip"
    assert bundle.provenance()["family"] == "siglip"
    tokens = bundle.tokenize(["a cat", "a photo of the red dog"])
    assert tokens["input_ids"].shape == (2, 16)  # max_position_embeddings of the tiny model
    assert bool(tokens["attention_mask"].all())  # the tower sees the pads, as in pretraining
    assert backbone.embed_dim(bundle.model) == 32


def test_text_features_equal_the_model_with_max_length_padding(siglip_dir):
    bundle = load_clip(str(siglip_dir), device="cpu")
    texts = ["a photo of the cat", "a dog"]
    raw = bundle.tokenizer(texts, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = bundle.model.get_text_features(input_ids=raw["input_ids"])
    expected = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(encode_texts(bundle, texts), expected, atol=1e-6, rtol=0)


def test_zero_shot_logits_are_siglips_own(siglip_dir):
    """scale * cos + bias, as SiglipModel computes logits_per_image."""
    bundle = load_clip(str(siglip_dir), device="cpu")
    with torch.no_grad():
        bundle.model.logit_bias.fill_(-3.0)
        bundle.model.logit_scale.fill_(2.0)
    method = get_method("zeroshot")
    tuned = method.prepare(bundle.model, method.make_config())
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    names, template = ["cat", "dog"], "a photo of the {}."
    class_embeds = encode_classes(bundle, names, [template])
    with torch.no_grad():
        ours = tuned(pixel_values=pixels, class_embeds=class_embeds)
        ids = bundle.tokenize([template.format(n) for n in names])["input_ids"]
        reference = bundle.model(input_ids=ids, pixel_values=pixels).logits_per_image
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_sigmoid_loss_is_siglips_pairwise_loss():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    labels = torch.tensor([0, 2])
    z = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
    expected = -torch.log(torch.sigmoid(z * logits)).sum() / 2
    torch.testing.assert_close(class_loss(logits, labels, "sigmoid"), expected)
    torch.testing.assert_close(
        class_loss(logits, labels, "cross-entropy"), F.cross_entropy(logits, labels)
    )


def test_measures_run_on_siglip(siglip_dir, colours):
    report = measure(
        str(siglip_dir),
        str(colours),
        templates=["a photo of the {}."],
        device="cpu",
        progress=False,
    )
    overall = report.to_dict()["overall"]
    assert 0.0 <= overall["zero_shot_accuracy"] <= 1.0
    assert -1.0 <= overall["silhouette_modality"] <= 1.0
    assert overall["modality_gap"] > 0


@pytest.mark.parametrize("method", sorted(set(method_names()) - {"zeroshot"}))
def test_every_method_trains_and_evaluates_on_siglip(method, siglip_dir, colours, tmp_path):
    config = TrainConfig(batch_size=4, epochs=1, lr=1e-3, val_fraction=0.25)
    result = finetune(
        str(siglip_dir),
        str(colours),
        ["photo"],
        method,
        tiny_options(method),
        config,
        tmp_path / "run",
        progress=False,
    )
    assert result.trainable_parameters > 0
    report = evaluate_run(tmp_path / "run", str(colours), device="cpu", progress=False)
    assert set(report.to_dict()["domains"]) == {"photo", "art"}


def test_sigmoid_loss_reaches_the_engine(siglip_dir, colours, tmp_path):
    """Same model and validation images: the same epoch-0 accuracy, a different loss."""
    first = {}
    for loss in ("cross-entropy", "sigmoid"):
        config = TrainConfig(batch_size=4, epochs=1, lr=1e-3, val_fraction=0.25, loss=loss)
        out = tmp_path / loss
        result = finetune(
            str(siglip_dir), str(colours), ["photo"], "bitfit", {}, config, out, progress=False
        )
        assert json.loads((out / "config.json").read_text())["train"]["loss"] == loss
        first[loss] = result.metrics[0]
        assert result.metrics[1]["train_loss"] > 0
    assert first["sigmoid"]["val_accuracy"] == first["cross-entropy"]["val_accuracy"]
    assert first["sigmoid"]["val_loss"] != pytest.approx(first["cross-entropy"]["val_loss"])


def test_methods_select_by_role_on_siglip(siglip_dir):
    """BitFit: block biases only (not the pooling heads); A-CLIP: q/k/v weights of the blocks."""
    bundle = load_clip(str(siglip_dir), device="cpu")
    for name, wanted in {
        "bitfit": lambda r: r.block is not None and r.role.endswith("_bias"),
        "aclip": lambda r: r.block is not None and r.role in ("q_weight", "k_weight", "v_weight"),
    }.items():
        method = get_method(name)
        tuned = method.prepare(load_clip(str(siglip_dir), device="cpu").model, method.make_config())
        trained = {n.removeprefix("clip.") for n, p in tuned.named_parameters() if p.requires_grad}
        expected = {r.name for r in backbone.parameter_roles(bundle.model) if wanted(r)}
        assert trained == expected and expected
        assert not any(".head." in n for n in trained)
        assert count_parameters(tuned)[0] == sum(
            bundle.model.get_parameter(n).numel() for n in expected
        )


def test_naflex_siglip2_is_refused(siglip_dir, tmp_path):
    folder = tmp_path / "naflex"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(ModelError, match="NaFlex"):
        load_clip(str(folder))
