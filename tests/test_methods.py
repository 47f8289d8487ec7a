"""Fine-tuning methods: the registry matrix (every registered method) and per-method choices."""

import copy
import functools
import re
from functools import partial

import pytest
import torch
from method_options import tiny_options
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from clipgauge.cli import main
from clipgauge.encoding import tokenize_class_prompts
from clipgauge.methods import (
    MethodError,
    MethodTask,
    NotMergeableError,
    TunedClip,
    count_parameters,
    get_method,
    method_names,
    parameter_counts,
    register,
)
from clipgauge.methods.base import Method

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = method_names()
CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def base_clip(tiny_clip_dir):
    return CLIPModel.from_pretrained(tiny_clip_dir).eval()


@pytest.fixture(scope="module")
def batch(tiny_clip_dir):
    """Random pixels, labels and tokenised class prompts for the tiny model."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    tokenize = partial(tokenizer, padding=True, return_tensors="pt")
    prompts = tokenize_class_prompts(tokenize, CLASSES, ["a photo of a {}."])
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.randn(6, 3, 32, 32, generator=generator),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "prompts": prompts,
    }


@functools.cache
def matrix_task(model_dir: str) -> MethodTask:
    """The task every matrix model is prepared for (the engine always passes one)."""
    return MethodTask.of(CLASSES, ["a photo of a {}."], AutoTokenizer.from_pretrained(model_dir))


def prepared(base_clip, name, seed=0, task="default", **options):
    """A method's model prepared for the matrix task (or `task`, None when counting)."""
    method = get_method(name)
    torch.manual_seed(seed)
    config = method.make_config({**tiny_options(name), **options})
    if task == "default":
        task = matrix_task(base_clip.config._name_or_path)
    return method, method.prepare(copy.deepcopy(base_clip), config, task)


def logits(tuned, batch):
    with torch.no_grad():
        return tuned(batch["pixel_values"], prompts=batch["prompts"])


def perturb_trainable(tuned, seed=1):
    """Move trained tensors away from their initial values (LoRA B starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))


def trainable_names(tuned):
    return {n for n, p in tuned.named_parameters() if p.requires_grad}


# ---- the matrix: every registered method --------------------------------------------------


def test_registry_lists_the_study_methods():
    assert METHODS[:6] == ["zeroshot", "full", "bitfit", "lora", "clip-adapter", "aclip"]


@pytest.mark.parametrize("name", METHODS)
def test_training_step_changes_exactly_the_trainable_parameters(base_clip, batch, name):
    method, tuned = prepared(base_clip, name)
    tuned.train()
    before = {n: p.detach().clone() for n, p in tuned.named_parameters()}
    params = [p for p in tuned.parameters() if p.requires_grad]
    if params:
        optimizer = torch.optim.SGD(params, lr=0.1)
        for _ in range(2):  # two steps: LoRA's A only gets a gradient once B is non-zero
            optimizer.zero_grad()
            out = tuned(batch["pixel_values"], prompts=batch["prompts"])
            torch.nn.functional.cross_entropy(out, batch["labels"]).backward()
            optimizer.step()
    changed = {n for n, p in tuned.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable_names(tuned)
    state = method.trained_state(tuned)
    assert set(state) == {n.removeprefix("clip.") for n in trainable_names(tuned)}
    assert sum(t.numel() for t in state.values()) == count_parameters(tuned)[0]


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip_reproduces_logits(base_clip, batch, tmp_path, name):
    method, tuned = prepared(base_clip, name, seed=0)
    perturb_trainable(tuned)
    expected = logits(tuned.eval(), batch)
    save_file(method.trained_state(tuned), tmp_path / "trained.safetensors")

    _, fresh = prepared(base_clip, name, seed=123)  # different init: the load must set it all
    method.load_trained(fresh, load_file(tmp_path / "trained.safetensors"))
    assert torch.equal(logits(fresh.eval(), batch), expected)


@pytest.mark.parametrize("name", METHODS)
def test_merged_model_gives_the_same_logits(base_clip, batch, name):
    method, tuned = prepared(base_clip, name)
    perturb_trainable(tuned)
    expected = logits(tuned.eval(), batch)
    try:
        merged = method.merge(tuned)
    except NotMergeableError as err:
        assert name in str(err) and len(str(err)) > 80  # says why, not just "no"
        # Only added modules stop a merge: a task-specific class encoder, or adapters.
        assert not method.changes_base_weights or tuned.class_encoder is not None
        return
    assert type(merged) is CLIPModel
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        prompts = batch["prompts"]
        out = merged(
            pixel_values=batch["pixel_values"],
            input_ids=prompts.input_ids,
            attention_mask=prompts.attention_mask,
        ).logits_per_image
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_tuned_clip_quacks_like_clip_for_embeddings(base_clip, batch, name):
    _, tuned = prepared(base_clip, name)
    image = tuned.get_image_features(batch["pixel_values"])
    prompts = batch["prompts"]
    text = tuned.get_text_features(prompts.input_ids, prompts.attention_mask)
    assert isinstance(image, torch.Tensor) and isinstance(text, torch.Tensor)
    assert image.shape == (6, tuned.config.projection_dim)
    assert text.shape == (len(CLASSES), tuned.config.projection_dim)
    assert tuned.logit_scale is tuned.clip.logit_scale


@pytest.mark.parametrize("name", METHODS)
def test_every_option_has_help_and_defaults_round_trip(name):
    import dataclasses

    method = get_method(name)
    config = method.make_config()
    for f in dataclasses.fields(config):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help string"
    assert method.make_config(dataclasses.asdict(config)) == config
    assert method.description


# ---- parameter counts on a ViT-B/32-shaped model -------------------------------------------


def vitb32_config() -> CLIPConfig:
    return CLIPConfig(vision_config={"patch_size": 32})


def block_params(d: int, ff: int) -> int:
    attention = 4 * (d * d + d)  # q, k, v, out projections with biases
    layer_norms = 2 * (2 * d)
    mlp = (d * ff + ff) + (ff * d + d)
    return attention + layer_norms + mlp


def expected_counts(cfg: CLIPConfig) -> dict[str, dict[str, int]]:
    """Each method's counts from the config numbers alone (no model is built)."""
    v, t, proj = cfg.vision_config, cfg.text_config, cfg.projection_dim
    dv, dt, lv, lt = v.hidden_size, t.hidden_size, v.num_hidden_layers, t.num_hidden_layers
    text = (
        t.vocab_size * dt
        + t.max_position_embeddings * dt
        + lt * block_params(dt, t.intermediate_size)
        + 2 * dt  # final layer norm
    )
    patches = (v.image_size // v.patch_size) ** 2
    vision = (
        dv  # class embedding
        + 3 * v.patch_size**2 * dv  # patch embedding (conv, no bias)
        + (patches + 1) * dv  # position embedding
        + 2 * dv  # pre layer norm
        + lv * block_params(dv, v.intermediate_size)
        + 2 * dv  # post layer norm
    )
    total = text + vision + dv * proj + dt * proj + 1  # projections, logit scale
    block_biases = lambda d, ff: 4 * d + 2 * d + ff + d  # noqa: E731 - q,k,v,out; 2 LN; fc1; fc2
    rank = 16
    lora = lv * 2 * rank * (dv + dv) + lt * 2 * rank * (dt + dt)  # q and v, A and B
    adapters = 2 * (proj * (proj // 4) + (proj // 4) * proj)
    head = 1000 * proj  # heads are counted for ImageNet's 1000 classes
    image_tower = vision + dv * proj  # with its projection
    context = 16 * dt  # CoOp: 16 context vectors of the text width
    return {
        "zeroshot": {"trainable": 0, "total": total},
        "full": {"trainable": total, "total": total},
        "bitfit": {
            "trainable": lv * block_biases(dv, v.intermediate_size)
            + lt * block_biases(dt, t.intermediate_size),
            "total": total,
        },
        "lora": {"trainable": lora, "total": total + lora},
        "clip-adapter": {"trainable": adapters, "total": total + adapters},
        "aclip": {"trainable": 3 * lv * dv * dv + 3 * lt * dt * dt, "total": total},
        "linear-probe": {"trainable": head, "total": total + head},
        "lp-ft": {"trainable": image_tower + head, "total": total + head},
        "coop": {"trainable": context, "total": total + context},
    }


def test_every_registered_method_has_an_independent_expected_count():
    assert set(expected_counts(vitb32_config())) == set(METHODS)


def test_vitb32_parameter_counts():
    cfg = vitb32_config()
    expected = expected_counts(cfg)
    assert expected["full"]["total"] == 151_277_313  # the published ViT-B/32 CLIP size
    assert expected["aclip"]["trainable"] == 30_670_848 == 12 * 3 * 768**2 + 12 * 3 * 512**2
    assert expected["coop"]["trainable"] == 8_192 == 16 * 512
    assert parameter_counts(cfg) == expected


def test_parameter_counts_on_meta_match_a_real_model(tiny_clip_dir, base_clip):
    counts = parameter_counts(base_clip.config)
    for name in METHODS:
        method = get_method(name)
        tuned = method.prepare(copy.deepcopy(base_clip), method.make_config(), None)
        trainable, total = count_parameters(tuned)
        assert counts[name] == {"trainable": trainable, "total": total}


def test_methods_cli_json(capsys, tiny_clip_dir, base_clip, tmp_path):
    import json

    out = tmp_path / "methods.json"
    assert main(["methods", "--model", str(tiny_clip_dir), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in METHODS)
    assert json.loads(out.read_text()) == parameter_counts(base_clip.config)


# ---- what each method selects --------------------------------------------------------------

BLOCK = re.compile(r"^clip\.(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)$")


def selected(base_clip, name, **options):
    return trainable_names(prepared(base_clip, name, **options)[1])


def test_full_and_zeroshot(base_clip):
    everything = {f"clip.{n}" for n, _ in base_clip.named_parameters()}
    assert selected(base_clip, "full") == everything
    assert selected(base_clip, "zeroshot") == set()


@pytest.mark.parametrize("towers", ["both", "image", "text"])
def test_bitfit_trains_only_block_biases(base_clip, towers):
    names = selected(base_clip, "bitfit", towers=towers)
    kinds = {
        "self_attn.q_proj.bias",
        "self_attn.k_proj.bias",
        "self_attn.v_proj.bias",
        "self_attn.out_proj.bias",
        "layer_norm1.bias",
        "layer_norm2.bias",
        "mlp.fc1.bias",
        "mlp.fc2.bias",
    }
    towers_in = {"both": {"vision_model", "text_model"}, "image": {"vision_model"}}
    towers_in["text"] = {"text_model"}
    expected = {
        f"clip.{tower}.encoder.layers.{i}.{kind}"
        for tower in towers_in[towers]
        for i in range(2)
        for kind in kinds
    }
    assert names == expected
    assert not any("embeddings" in n or "projection" in n or "layrnorm" in n for n in names)


def test_aclip_defaults_and_options(base_clip):
    names = selected(base_clip, "aclip")
    assert len(names) == 2 * 2 * 3  # towers x blocks x q/k/v
    assert all(BLOCK.match(n)[3] in {f"self_attn.{p}_proj.weight" for p in "qkv"} for n in names)
    names = selected(base_clip, "aclip", towers="text", blocks="1", projections="q,v")
    assert names == {
        "clip.text_model.encoder.layers.1.self_attn.q_proj.weight",
        "clip.text_model.encoder.layers.1.self_attn.v_proj.weight",
    }
    with pytest.raises(MethodError, match="outside the image tower's blocks 0-1"):
        prepared(base_clip, "aclip", blocks="0-5")
    with pytest.raises(MethodError, match="choose from q,k,v"):
        get_method("aclip").make_config({"projections": "q,o"})


def test_lora_targets_rank_and_towers(base_clip):
    method, tuned = prepared(base_clip, "lora", rank=4, towers="image")
    names = trainable_names(tuned)
    assert len(names) == 2 * 2 * 2  # blocks x (q, v) x (A, B)
    assert all(n.startswith("clip.vision_model.") and ".lora_" in n for n in names)
    a = dict(tuned.named_parameters())[
        "clip.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight"
    ]
    assert a.shape == (4, 32)
    assert not method.trains_text_tower(tuned)
    names = selected(base_clip, "lora", target_modules="k_proj,fc1")
    assert {BLOCK.match(n)[3].split(".lora_")[0] for n in names} == {"self_attn.k_proj", "mlp.fc1"}
    with pytest.raises(MethodError, match="target_modules=nonexistent"):
        prepared(base_clip, "lora", target_modules="nonexistent")


def test_lora_starts_equal_to_the_base_model(base_clip, batch):
    _, plain = prepared(base_clip, "zeroshot")
    _, tuned = prepared(base_clip, "lora")
    torch.testing.assert_close(logits(tuned, batch), logits(plain, batch))
    scaling = tuned.clip.vision_model.encoder.layers[0].self_attn.q_proj.scaling["default"]
    assert scaling == pytest.approx(0.2)


def test_clip_adapter_shapes_and_mix(base_clip):
    _, tuned = prepared(base_clip, "clip-adapter")
    adapter = tuned.image_adapter
    assert adapter.down.weight.shape == (8, 32) and adapter.down.bias is None
    assert adapter.up.weight.shape == (32, 8) and adapter.up.bias is None
    x = torch.randn(3, 32)
    inner = torch.relu(adapter.up(torch.relu(adapter.down(x))))
    torch.testing.assert_close(adapter(x), 0.2 * inner + 0.8 * x)
    assert trainable_names(tuned) == {
        f"{side}_adapter.{layer}.weight" for side in ("image", "text") for layer in ("down", "up")
    }
    _, image_only = prepared(base_clip, "clip-adapter", towers="image", reduction=2, ratio=0.5)
    assert image_only.text_adapter is None and image_only.image_adapter.ratio == 0.5


@pytest.mark.parametrize(
    "name, options, trains_text",
    [
        ("zeroshot", {}, False),
        ("full", {}, True),
        ("bitfit", {}, True),
        ("bitfit", {"towers": "image"}, False),
        ("lora", {}, True),
        ("clip-adapter", {}, True),
        ("clip-adapter", {"towers": "image"}, False),
        ("aclip", {"towers": "image"}, False),
        ("aclip", {"towers": "text"}, True),
        ("linear-probe", {}, True),  # the head is the class side: asked every step, cheaply
        ("lp-ft", {}, True),
        ("coop", {}, True),
    ],
)
def test_trains_text_tower(base_clip, name, options, trains_text):
    method, tuned = prepared(base_clip, name, **options)
    assert method.trains_text_tower(tuned) is trains_text


def test_options_are_checked_and_converted():
    method = get_method("lora")
    config = method.make_config({"rank": "8", "dropout": "0.1", "target_modules": "q_proj, k_proj"})
    assert (config.rank, config.dropout, config.target_modules) == (8, 0.1, ("q_proj", "k_proj"))
    with pytest.raises(MethodError, match="has no option.*ranks.*rank=16"):
        method.make_config({"ranks": "8"})
    with pytest.raises(MethodError, match="rank='eight' is not a valid int"):
        method.make_config({"rank": "eight"})
    with pytest.raises(MethodError, match="towers='vision' is not one of both, image, text"):
        get_method("bitfit").make_config({"towers": "vision"})
    with pytest.raises(MethodError, match="unknown method 'lorra'.*zeroshot, full"):
        get_method("lorra")


def test_register_refuses_a_second_class_under_a_taken_name():
    class Impostor(Method):
        name = "full"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)


def test_tuned_clip_needs_text_or_class_embeddings(base_clip, batch):
    tuned = TunedClip(copy.deepcopy(base_clip))
    with pytest.raises(ValueError, match="class prompts"):
        tuned(batch["pixel_values"])


def test_which_methods_train_the_image_tower(base_clip):
    expected = {
        "zeroshot": False,
        "full": True,
        "bitfit": True,
        "lora": True,
        "clip-adapter": False,  # adapters sit after the tower: its features never change
        "aclip": True,
        "linear-probe": False,  # image features are computed once; the head trains on them
        "lp-ft": True,
        "coop": False,
    }
    for name, trains in expected.items():
        method, tuned = prepared(base_clip, name)
        assert method.trains_image_tower(tuned) is trains, name
