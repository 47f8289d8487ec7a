"""The one class-prompt encoder: measurement, training and evaluation see the same embeddings."""

import copy
import dataclasses

import torch
import torch.nn.functional as F

import clipgauge.encoding as encoding
from clipgauge.embeddings import encode_classes
from clipgauge.encoding import tokenize_class_prompts
from clipgauge.methods import MethodTask, get_method
from clipgauge.models.loading import load_clip

NAMES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {} on a table."]


def by_hand(model, tokenizer, names, templates):
    """Per template: normalised text features of each class prompt; mean; renormalised."""
    rows = []
    for template in templates:
        tokens = tokenizer([template.format(n) for n in names], padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.get_text_features(**tokens)
        rows.append(F.normalize(getattr(out, "pooler_output", out), dim=-1))
    return F.normalize(torch.stack(rows).mean(dim=0), dim=-1)


def test_measurement_matches_an_independent_computation(tiny_clip_dir):
    bundle = load_clip(tiny_clip_dir, device="cpu")
    measured = encode_classes(bundle, NAMES, TEMPLATES)
    expected = by_hand(bundle.model, bundle.tokenizer, NAMES, TEMPLATES)
    torch.testing.assert_close(measured, expected, atol=1e-6, rtol=0)


def test_training_and_evaluation_class_embeddings_are_identical(tiny_clip_dir):
    bundle = load_clip(tiny_clip_dir, device="cpu")
    measured = encode_classes(bundle, NAMES, TEMPLATES)
    method = get_method("full")  # trains the text side: the engine encodes with gradients
    task = MethodTask.of(NAMES, TEMPLATES, bundle.tokenizer)
    tuned = method.prepare(copy.deepcopy(bundle.model), method.make_config(), task)
    assert method.trains_text_tower(tuned)
    prompts = tokenize_class_prompts(bundle.tokenize, NAMES, TEMPLATES)
    training = tuned.encode_classes(prompts)
    assert training.requires_grad
    assert torch.equal(training.detach(), measured)
    # evaluating a run embeds through the tuned model, as load_run wraps it
    evaluation = encode_classes(dataclasses.replace(bundle, model=tuned), NAMES, TEMPLATES)
    assert torch.equal(evaluation, measured)


def test_chunked_prompts_equal_one_pass(tiny_clip_dir, monkeypatch):
    bundle = load_clip(tiny_clip_dir, device="cpu")
    names = [f"class {i}" for i in range(7)]
    whole = encode_classes(bundle, names, TEMPLATES)
    monkeypatch.setattr(encoding, "PROMPT_CHUNK", 3)  # 14 prompts in 5 chunks
    chunked = encode_classes(bundle, names, TEMPLATES)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    expected = by_hand(bundle.model, bundle.tokenizer, names, TEMPLATES)
    torch.testing.assert_close(chunked, expected, atol=1e-6, rtol=0)
