"""The shipped embedded model: loads with plain transformers and keeps its zero-shot skill."""

import json

import pytest
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from clipgauge.models.loading import load_clip, named_models
from clipgauge.task_measures import measure
from clipgauge.world import load_tasks, vocabulary, world_dataset
from clipgauge.world.pretrain import PretrainConfig

# Lower bounds on zero-shot accuracy (overall, 12 test images per class and domain, each task's
# own prompts): above chance, and below what the shipped checkpoint reaches on this set (shapes
# 0.250, colours 0.972, textures 0.474, counts 0.760, positions 0.996, sizes 0.865), so a broken
# checkpoint, tokenizer or preprocessing fails.
MIN_ACCURACY = {
    "shapes": 0.18,
    "colours": 0.87,
    "textures": 0.42,
    "counts": 0.70,
    "positions": 0.90,
    "sizes": 0.75,
}


@pytest.fixture(scope="module")
def world_clip_dir():
    models = named_models()
    assert "world-clip" in models, "the embedded world-clip checkpoint is missing from the package"
    return models["world-clip"]


def test_world_clip_loads_with_plain_transformers(world_clip_dir):
    model = CLIPModel.from_pretrained(world_clip_dir)
    tok = AutoTokenizer.from_pretrained(world_clip_dir)
    proc = CLIPImageProcessor.from_pretrained(world_clip_dir)
    assert proc.crop_size["height"] == model.config.vision_config.image_size
    ids = tok(vocabulary())["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)
    size = sum(p.stat().st_size for p in world_clip_dir.iterdir())
    assert size < 25 * 2**20


def test_world_clip_is_what_pretrain_defaults_produce(world_clip_dir):
    record = json.loads((world_clip_dir / "pretraining.json").read_text())
    defaults = json.loads(json.dumps(PretrainConfig().__dict__))
    assert record["config"] == defaults, "shipped checkpoint was not made with the default config"


@pytest.fixture(scope="module")
def world_clip(world_clip_dir):
    return load_clip("world-clip", device="cpu")


@pytest.mark.parametrize("task", sorted(MIN_ACCURACY))
def test_world_clip_zero_shot_above_thresholds(world_clip, task):
    bundle = world_clip
    spec = load_tasks()[task]
    data = world_dataset(task, split="test", per_class=12, seed=0)
    report = measure(bundle, data, templates=list(spec.templates), progress=False)
    chance = 1 / len(spec.classes)
    accuracy = report.rows["overall"]["zero_shot_accuracy"]
    assert MIN_ACCURACY[task] > chance
    assert accuracy >= MIN_ACCURACY[task], (task, accuracy)
