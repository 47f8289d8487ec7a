"""The procedural world: determinism, tasks x domains, captions, tasks.yaml, datasets, export."""

from __future__ import annotations

import hashlib
import itertools
import math
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from clipgauge.data.dataset import Item
from clipgauge.errors import DataError
from clipgauge.prompts import DEFAULT_TEMPLATE, templates_for
from clipgauge.world import (
    ATTRIBUTES,
    WORLD_VERSION,
    caption_for,
    caption_words,
    domain_names,
    export_world,
    list_tasks,
    load_tasks,
    max_caption_words,
    open_world,
    pretraining_sample,
    pretraining_stream,
    render,
    render_grid,
    render_task_image,
    sample_scene,
    vocabulary,
    world_dataset,
)
from clipgauge.world import pretrain as pretrain_module
from clipgauge.world.captions import (
    DOMAIN_AFTER,
    DOMAIN_BEFORE,
    MAX_COUNT_WITH_POSITION,
    POSITION_PHRASES,
)
from clipgauge.world.export import MARKER
from clipgauge.world.pretrain import PretrainConfig, contrast_groups
from clipgauge.world.styles import parse_domains
from clipgauge.world.tasks import parse_tasks

TASKS = list_tasks()
TASK_DOMAINS = [(t.name, d) for t in TASKS for d in t.domains]


def digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


# --- determinism -------------------------------------------------------------------------------


def test_same_identity_same_pixels_whatever_the_order():
    args = ("shapes", "test", "photo", 3, 7)
    first = render_task_image(*args, seed=0)
    for i in range(5):  # render other images in between: no shared state may leak
        render_task_image("shapes", "test", "photo", 3, i, seed=0)
    assert np.array_equal(first, render_task_image(*args, seed=0))
    dataset = world_dataset("shapes", per_class=8, domains=["photo"])
    index = next(i for i, it in enumerate(dataset.items) if it.path.endswith("/photo/3/7"))
    indices = [index, *range(3), index]
    loaded = [np.asarray(dataset.load_image(i)) for i in reversed(indices)]
    assert np.array_equal(loaded[0], first) and np.array_equal(loaded[-1], first)


def test_every_part_of_the_identity_changes_the_image():
    base = dict(task="shapes", split="test", domain="photo", class_index=3, index=7, seed=0)
    reference = digest(render_task_image(**base))
    for key, other in [("index", 8), ("seed", 1), ("split", "train"), ("class_index", 4)]:
        assert digest(render_task_image(**{**base, key: other})) != reference, key
    assert digest(render_task_image(**{**base, "domain": "sketch"})) != reference


def test_render_is_a_function_of_scene_domain_size_and_generator_state():
    scene = sample_scene(np.random.default_rng(5))
    assert scene == sample_scene(np.random.default_rng(5))
    a = render(scene, "painting", 48, np.random.default_rng(9))
    b = render(scene, "painting", 48, np.random.default_rng(9))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(scene, "painting", 48, np.random.default_rng(10)))


def test_train_and_test_share_no_image():
    def digests(split: str) -> set[str]:
        dataset = world_dataset("sizes", split=split, per_class=6, size=32)
        return {digest(np.asarray(dataset.load_image(i))) for i in range(len(dataset))}

    train, test = digests("train"), digests("test")
    assert len(train) == len(test) == 2 * 4 * 6
    assert not train & test


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "domain"), TASK_DOMAINS)
def test_every_task_renders_in_every_domain(task, domain):
    pixels = render_task_image(task, "test", domain, class_index=1, index=0)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    assert pixels.std() > 5  # not a blank image


@pytest.mark.parametrize("size", [16, 40, 96])
def test_other_sizes(size):
    scene = sample_scene(np.random.default_rng(1), count=4, size="small")
    for domain in domain_names():
        assert render(scene, domain, size, np.random.default_rng(0)).shape == (size, size, 3)


@pytest.mark.parametrize("size", [8, 64.0, True, 1000])
def test_bad_size_is_a_data_error(size):
    with pytest.raises(DataError, match="size"):
        render(sample_scene(np.random.default_rng(0)), "photo", size)


def test_sketch_is_gray_and_other_domains_show_colour():
    scene = sample_scene(np.random.default_rng(2), colour="red", size="large", count=1)
    sketch = render(scene, "sketch", 64, np.random.default_rng(0)).astype(int)
    assert np.abs(sketch[..., 0] - sketch[..., 2]).mean() < 8  # paper tint at most
    for domain in ("cartoon", "photo", "painting"):
        pixels = render(scene, domain, 64, np.random.default_rng(0)).astype(int)
        red = (pixels[..., 0] - pixels[..., 1:].max(axis=-1)) > 60
        assert red.mean() > 0.03, domain


def test_unknown_domain_is_a_data_error():
    with pytest.raises(DataError, match="known: cartoon"):
        render(sample_scene(np.random.default_rng(0)), "watercolour")


# --- scenes ------------------------------------------------------------------------------------


def test_sample_scene_honours_fixed_values_and_lists():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = sample_scene(rng, shape="star", count=[2, 3], position="left")
        assert scene.shape == "star" and scene.count in (2, 3) and scene.position == "left"
        assert len(scene.centres) == len(scene.angles) == scene.count


def test_sample_scene_covers_every_value():
    rng = np.random.default_rng(0)
    seen = {name: set() for name in ATTRIBUTES}
    for _ in range(400):
        for name, value in sample_scene(rng).attributes().items():
            seen[name].add(value)
    assert seen == {name: set(values) for name, values in ATTRIBUTES.items()}


def test_objects_stay_inside_and_apart_and_position_holds():
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng)
        r = scene.radius
        for x, y in scene.centres:
            assert r <= x <= 1 - r and r <= y <= 1 - r
        for a, b in itertools.combinations(scene.centres, 2):
            assert math.dist(a, b) >= 2.3 * r
        mx = sum(x for x, _ in scene.centres) / scene.count
        my = sum(y for _, y in scene.centres) / scene.count
        side = {"left": 0.5 - mx, "right": mx - 0.5, "top": 0.5 - my, "bottom": my - 0.5}
        if scene.position in side:
            assert side[scene.position] > 0.1, scene
        else:
            assert abs(mx - 0.5) < 0.1 and abs(my - 0.5) < 0.1


@pytest.mark.parametrize(
    ("fixed", "message"),
    [({"flavour": "sweet"}, "unknown scene attribute"), ({"count": 7}, "count cannot be 7")],
)
def test_sample_scene_rejects_bad_constraints(fixed, message):
    with pytest.raises(DataError, match=message):
        sample_scene(np.random.default_rng(0), **fixed)


def test_large_objects_are_larger_than_small_ones_at_any_count():
    rng = np.random.default_rng(0)
    largest_small = max(sample_scene(rng, size="small").radius for _ in range(200))
    smallest_large = min(sample_scene(rng, size="large").radius for _ in range(200))
    assert smallest_large > largest_small


# --- captions and vocabulary -------------------------------------------------------------------


def test_captions_use_only_the_vocabulary_and_fit_the_length():
    words, limit = set(vocabulary()), max_caption_words()
    rng = np.random.default_rng(0)
    longest = 0
    for i in range(3000):
        domain = domain_names()[i % len(domain_names())]
        caption = caption_for(sample_scene(rng), domain, rng)
        tokens = caption_words(caption)
        assert set(tokens) <= words, caption
        longest = max(longest, len(tokens))
    assert longest <= limit
    assert longest >= limit - 3  # the bound is not wildly loose


def test_caption_mentions_follow_the_odds():
    scene = sample_scene(
        np.random.default_rng(0), shape="heart", colour="green", count=3, position="top"
    )
    rng = np.random.default_rng(1)
    always = caption_for(scene, "cartoon", rng, mention=dict.fromkeys(ATTRIBUTES, 1.0))
    for word in ("hearts", "green", "three", scene.texture if scene.texture != "solid" else ""):
        assert word in always
    never = caption_for(
        scene, "cartoon", rng, mention={**dict.fromkeys(ATTRIBUTES, 0.0), "domain": 0.0}
    )
    assert not {"heart", "hearts", "green", "three", "top", "cartoon"} & set(caption_words(never))
    with pytest.raises(DataError, match="mention"):
        caption_for(scene, "cartoon", rng, mention={"mood": 1.0})


def test_captions_name_the_position_of_one_or_two_objects_only():
    rng = np.random.default_rng(0)
    phrases = {p for options in POSITION_PHRASES.values() for p in options}
    named = {1: 0, 2: 0, 3: 0, 4: 0}
    for _ in range(400):
        scene = sample_scene(rng)
        caption = caption_for(scene, "photo", rng, mention={"position": 1.0})
        named[scene.count] += any(p in caption for p in phrases)
        if scene.count <= MAX_COUNT_WITH_POSITION:
            assert any(p in caption for p in POSITION_PHRASES[scene.position]), caption
    assert named[3] == named[4] == 0 and named[1] > 50 and named[2] > 50


def test_position_contrast_groups_hold_one_or_two_objects():
    cfg = replace(PretrainConfig(), batch_size=32, group_attributes={"position": 1.0})
    phrases = {p for options in POSITION_PHRASES.values() for p in options}
    for step in range(3):
        _, captions = contrast_groups(0, step, cfg)
        assert len(captions) == 32
        assert all(any(p in c for p in phrases) for c in captions), captions


def group_scenes(monkeypatch, cfg):
    """Every scene contrast_groups draws for one batch (group bases and members)."""
    scenes, real = [], pretrain_module.sample_scene

    def spy(rng, **fixed):
        scenes.append(real(rng, **fixed))
        return scenes[-1]

    monkeypatch.setattr(pretrain_module, "sample_scene", spy)
    contrast_groups(0, 0, cfg)
    monkeypatch.undo()
    return scenes


@pytest.mark.parametrize(
    "varied, fixed",
    [("shape", {"count": {1, 2}}), ("texture", {"count": {1, 2}, "size": {"large"}})],
)
def test_shape_and_texture_groups_hold_objects_large_enough_to_show_them(
    monkeypatch, varied, fixed
):
    cfg = replace(PretrainConfig(), batch_size=32, group_attributes={varied: 1.0})
    scenes = group_scenes(monkeypatch, cfg)
    assert len(scenes) == 32 + 32 // cfg.group_size  # members plus one base per group
    for attribute, allowed in fixed.items():
        assert {getattr(s, attribute) for s in scenes} <= allowed, attribute
    assert len({getattr(s, varied) for s in scenes}) > 2
    unpinned = group_scenes(monkeypatch, replace(cfg, group_fixed={}))
    assert {s.count for s in unpinned} > {1, 2}


def test_sketch_captions_never_name_a_colour():
    colours = set(ATTRIBUTES["colour"])
    rng = np.random.default_rng(0)
    for _ in range(300):
        caption = caption_for(sample_scene(rng), "sketch", rng, mention={"colour": 1.0})
        assert not colours & set(caption_words(caption))


def test_every_domain_has_caption_phrases():
    for domain in domain_names():
        assert DOMAIN_BEFORE[domain] and DOMAIN_AFTER[domain]


def test_word_tokenizer_covers_captions_and_prompts():
    from clipgauge.models.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(vocabulary(), max_length=max_caption_words() + 2)
    rng = np.random.default_rng(0)
    texts = [caption_for(sample_scene(rng), "photo", rng) for _ in range(200)]
    texts += [prompt for task in TASKS for prompt in task.prompts()]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert len(ids) <= max_caption_words() + 2


# --- tasks.yaml --------------------------------------------------------------------------------


def test_shipped_tasks_are_valid():
    assert len(TASKS) >= 5
    attributes = {t.attribute for t in TASKS}
    assert {"shape", "colour", "texture", "count", "position"} <= attributes
    words = set(vocabulary())
    for task in TASKS:
        assert set(task.domains) <= set(domain_names())
        for prompt in task.prompts():
            assert set(caption_words(prompt)) <= words, prompt
        # Sorted folder names: a DomainBed reader gives the same label indices back.
        assert task.folder_names() == sorted(task.folder_names()), task.name
        assert list(task.domains) == sorted(task.domains), task.name
    assert "sketch" not in load_tasks()["colours"].domains


BASE_TASK = {
    "attribute": "shape",
    "classes": ["circle", "star"],
    "template": "a photo of a {}.",
    "domains": ["photo"],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attribute": "mood"}, "attribute 'mood'"),
        ({"classes": ["circle", "blob"]}, "shape cannot be 'blob'"),
        ({"classes": ["circle"]}, "at least two classes"),
        ({"template": "a photo of a thing."}, "exactly one"),
        ({"template": "a snapshot of a {}."}, "snapshot"),
        ({"templates": ["a photo of a {}.", "a snapshot of a {}."]}, "snapshot"),
        ({"template": "a {}.", "templates": ["a photo of a {}."]}, "not both or neither"),
        ({"template": None, "templates": []}, "not both or neither"),
        ({"templates": "a photo of a {}."}, "non-empty list"),
        ({"templates": ["a {}.", "a {}."]}, "twice"),
        ({"domains": ["photo", "mosaic"]}, "mosaic"),
        ({"fixed": {"shape": "star"}}, "own attribute"),
        ({"fixed": {"count": 9}}, "count cannot be 9"),
        ({"values": ["circle"]}, "one shape per class"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_bad_task_entries_are_data_errors(change, message):
    entry = {**BASE_TASK, **change}
    if "templates" in change and "template" not in change:
        del entry["template"]
    if change.get("template", "") is None:
        del entry["template"], entry["templates"]
    with pytest.raises(DataError, match=message):
        parse_tasks({"t": entry})


def test_task_templates_are_one_string_or_an_ensemble():
    one = parse_tasks({"t": BASE_TASK})["t"]
    assert one.templates == ("a photo of a {}.",)
    entry = {k: v for k, v in BASE_TASK.items() if k != "template"}
    entry["templates"] = ["a photo of a {}.", "a photo of two {} shapes."]
    both = parse_tasks({"t": entry})["t"]
    assert both.prompts() == [
        "a photo of a circle.",
        "a photo of a star.",
        "a photo of two circle shapes.",
        "a photo of two star shapes.",
    ]
    assert both.to_dict()["templates"] == entry["templates"]


def test_templates_for_gives_world_data_its_tasks_prompts():
    data = world_dataset("positions", per_class=1)
    assert templates_for(None, data) == list(load_tasks()["positions"].templates)
    assert templates_for(["a {}."], data) == ["a {}."]  # asked for: used as given
    assert data.subset([0]).templates == data.templates  # subsets keep them
    folders = replace(data, source={"kind": "domainbed"}, templates=None)
    assert templates_for(None, folders) == [DEFAULT_TEMPLATE]


def test_shipped_tasks_have_a_prompt_for_each_object_count_they_show():
    """One prompt per number of objects: 'a star' and 'two star shapes' (tasks.yaml)."""
    tasks = load_tasks()
    for name in ("shapes", "textures", "positions"):  # one or two objects
        assert len(tasks[name].templates) == 2, name
        assert "two" in caption_words(tasks[name].templates[1]), name
    for name in ("colours", "sizes"):  # one to four
        assert len(tasks[name].templates) == 4, name
    assert len(tasks["counts"].templates) == 1  # its class names say how many


def test_load_tasks_from_a_user_file(tmp_path: Path):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"two-shapes": {**BASE_TASK, "fixed": {"count": [1, 2]}}}))
    task = load_tasks(path)["two-shapes"]
    assert task.prompts() == ["a photo of a circle.", "a photo of a star."]
    assert world_dataset(task, per_class=2).class_names == ["circle", "star"]
    path.write_text("two-shapes: [unclosed")
    with pytest.raises(DataError, match="not valid YAML"):
        load_tasks(path)


def test_bad_domain_style_is_a_data_error():
    with pytest.raises(DataError, match="unknown parameter"):
        parse_domains({"mosaic": {"tiles": 3}})
    with pytest.raises(DataError, match="number >= 0"):
        parse_domains({"mosaic": {"blur": -1}})


# --- datasets and specs ------------------------------------------------------------------------


def test_world_dataset_items_labels_and_source():
    dataset = world_dataset("positions", split="train", per_class=3, seed=2, size=32)
    task = load_tasks()["positions"]
    assert len(dataset) == len(task.classes) * len(task.domains) * 3
    assert dataset.class_names == list(task.classes)
    assert dataset.domain_names == list(task.domains)
    assert sorted(set(dataset.labels)) == list(range(len(task.classes)))
    assert dataset.items[0].path == "world://positions/train/cartoon/0/0"
    assert dataset.source == {
        "kind": "world",
        "task": "positions",
        "split": "train",
        "per_class": 3,
        "seed": 2,
        "size": 32,
        "world_version": WORLD_VERSION,
        "fixed": {"count": [1, 2]},
    }
    image = dataset.load_image(len(dataset) - 1)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)


def test_world_dataset_domain_selection_keeps_indices():
    dataset = world_dataset("shapes", per_class=2, domains=["sketch", "photo"])
    assert dataset.domain_names == ["cartoon", "painting", "photo", "sketch"]
    assert set(dataset.domains) == {2, 3}
    assert dataset.source["domains"] == ["sketch", "photo"]
    with pytest.raises(DataError, match="its domains: cartoon, painting, photo"):
        world_dataset("colours", domains=["sketch"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"split": "dev"}, "split"), ({"per_class": 0}, "per_class"), ({"seed": -1}, "seed")],
)
def test_world_dataset_rejects_bad_options(kwargs, message):
    with pytest.raises(DataError, match=message):
        world_dataset("shapes", **kwargs)


def test_open_world_options():
    dataset = open_world("counts?split=train&per_class=2&seed=1&size=32&domains=photo,sketch")
    assert dataset.source["split"] == "train" and dataset.source["seed"] == 1
    assert dataset.source["size"] == 32 and dataset.source["per_class"] == 2
    assert len(dataset) == 4 * 2 * 2
    default = open_world("counts")
    assert default.source["split"] == "test" and len(default) == 4 * 4 * 50
    assert len(open_world("counts?per_class=1", domains=["photo"])) == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch", "known tasks: shapes, colours"),
        ("shapes?colour=red", "unknown world option 'colour'"),
        ("shapes?per_class=many", "per_class must be an integer"),
        ("shapes?seed=1&seed=2", "'seed' is given 2 times"),
        ("shapes?split=dev", "split"),
        ("shapes?size=4", "size"),
        ("shapes?per_class", "cannot read the options"),
        ("?split=train", "names no task"),
    ],
)
def test_open_world_errors(spec, message):
    with pytest.raises(DataError, match=message):
        open_world(spec)


def test_world_spec_through_open_dataset():
    open_module = pytest.importorskip("clipgauge.data.open")
    dataset = open_module.open_dataset("world:textures?per_class=2", domains=["sketch"])
    assert dataset.source["task"] == "textures" and len(dataset) == 4 * 2


def test_open_world_class_map_renames_classes():
    pytest.importorskip("clipgauge.data.folders")
    dataset = open_world("sizes?per_class=1", class_map={"large": "big"})
    assert dataset.class_names == ["big", "small"]
    dataset = open_world("positions?per_class=1", class_map={"on_the_left": "leftish"})
    assert dataset.class_names[3] == "leftish"


def test_loader_survives_pickling_for_worker_processes():
    dataset = world_dataset("textures", per_class=2, size=24)
    loader = pickle.loads(pickle.dumps(dataset.loader))
    item = dataset.items[5]
    assert np.array_equal(np.asarray(loader(item)), np.asarray(dataset.load_image(5)))
    with pytest.raises(DataError, match="not an image of world task"):
        loader(Item("world://shapes/test/photo/0/0", 0, 0))


# --- export, grid and pretraining stream -------------------------------------------------------


def test_export_writes_domainbed_folders(tmp_path: Path):
    out = export_world("counts", per_class=3, out_dir=tmp_path / "counts", size=24)
    task = load_tasks()["counts"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == list(task.domains)
    for domain in task.domains:
        assert sorted(p.name for p in (out / domain).iterdir()) == task.folder_names()
        for folder in task.folder_names():
            assert sorted(p.name for p in (out / domain / folder).iterdir()) == [
                "0.png",
                "1.png",
                "2.png",
            ]
    saved = np.asarray(Image.open(out / "photo" / "two_objects" / "1.png").convert("RGB"))
    two = task.classes.index("two objects")
    assert np.array_equal(saved, render_task_image("counts", "test", "photo", two, 1, size=24))
    assert (out / MARKER).is_file()

    # An earlier export is replaced; a folder with other files is refused.
    export_world("counts", per_class=1, out_dir=out, size=24, domains=["sketch"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["sketch"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        export_world("counts", per_class=1, out_dir=foreign)


def test_export_reads_back_with_the_same_labels(tmp_path: Path):
    folders = pytest.importorskip("clipgauge.data.folders")
    if not hasattr(folders, "from_domainbed"):
        pytest.skip("no DomainBed folder reader")
    dataset = world_dataset("positions", per_class=11, size=16)
    out = export_world("positions", per_class=11, out_dir=tmp_path / "positions", size=16)
    back = folders.from_domainbed(out)
    assert back.class_names == dataset.class_names
    assert back.domain_names == dataset.domain_names
    assert back.labels == dataset.labels and back.domains == dataset.domains
    assert np.array_equal(np.asarray(back.load_image(25)), np.asarray(dataset.load_image(25)))


def test_render_grid_writes_one_row_per_domain(tmp_path: Path):
    path = render_grid(tmp_path / "grid.png", per_domain=3, size=32, scale=1)
    with Image.open(path) as image:
        width, height = image.size
    assert height == len(domain_names()) * (32 + 2)
    assert width > 3 * 32
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_pretraining_stream_batches_are_deterministic_and_resumable():
    batches = pretraining_stream(seed=3, batch_size=4, size=32)
    first, second = next(batches), next(batches)
    images, captions = first
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and len(captions) == 4
    resumed = next(pretraining_stream(seed=3, batch_size=4, size=32, start=4))
    assert np.array_equal(resumed[0], second[0]) and resumed[1] == second[1]
    words = set(vocabulary())
    assert all(set(caption_words(c)) <= words for c in captions + second[1])


def test_pretraining_stream_pins_scene_attributes():
    mention = {"count": 1.0, "position": 1.0, "shape": 0.0}
    captions = next(pretraining_stream(5, 40, size=16, mention=mention, fixed={"count": 1}))[1]
    assert all("one" in caption_words(c) for c in captions)
    assert not any({"two", "three", "four"} & set(caption_words(c)) for c in captions)
    free = next(pretraining_stream(5, 40, size=16, mention=mention))[1]
    assert any({"two", "three", "four"} & set(caption_words(c)) for c in free)
    with pytest.raises(DataError, match="count cannot be 7"):
        next(pretraining_stream(5, 2, size=16, fixed={"count": 7}))


def test_pretraining_domain_weights():
    weights = {"photo": 1.0, "sketch": 0.0}
    domains = {pretraining_sample(0, i, 16, weights)[2] for i in range(30)}
    assert domains == {"photo"}
    mixed = {pretraining_sample(0, i, 16)[2] for i in range(60)}
    assert mixed == set(domain_names())
    with pytest.raises(DataError, match="unknown domain"):
        next(pretraining_stream(0, 2, domain_weights={"mosaic": 1.0}))
    with pytest.raises(DataError, match="positive sum"):
        next(pretraining_stream(0, 2, domain_weights={"photo": 0.0}))
