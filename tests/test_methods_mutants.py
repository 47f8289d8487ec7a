"""Tests written to kill mutants that survived `make mutants` on clipgauge.methods (option
parsing and parameter selection). Expectations are explicit; docs/reliability.md has the run."""

import copy
import dataclasses
import re

import pytest
import torch
from transformers import CLIPModel

from clipgauge.methods import (
    MethodError,
    NotMergeableError,
    TunedClip,
    get_method,
    register,
    registry,
)
from clipgauge.methods.base import Method, MethodTask, _coerce, parse_blocks

pytestmark = pytest.mark.usefixtures("one_thread")


# --- blocks=... -----------------------------------------------------------------------------


def test_parse_blocks_ranges_lists_and_bounds():
    assert parse_blocks("0-1, 3", 4, "image") == {0, 1, 3}
    assert parse_blocks("2-3", 6, "image") == {2, 3}
    assert parse_blocks("3", 4, "text") == {3}
    assert parse_blocks(" all ", 3, "text") == {0, 1, 2}
    with pytest.raises(
        MethodError, match=r"^blocks='4': '4' is outside the text tower's blocks 0-3$"
    ):
        parse_blocks("4", 4, "text")
    with pytest.raises(MethodError, match=r"^blocks='0-4': '0-4' is outside"):
        parse_blocks("0-4", 4, "image")
    with pytest.raises(
        MethodError, match=r"^blocks='1;2': '1;2' is not N or A-B \(or use 'all'\)$"
    ):
        parse_blocks("1;2", 4, "image")


# --- option values from the CLI -------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "true", "True", " YES ", "on", "ON"])
def test_true_words(text):
    assert _coerce("flag", text, bool) is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "no", " No ", "off", "OFF"])
def test_false_words(text):
    assert _coerce("flag", text, bool) is False


def test_invalid_values_name_the_option_and_type():
    with pytest.raises(MethodError, match=r"^option flag='maybe' is not a valid bool$"):
        _coerce("flag", "maybe", bool)
    with pytest.raises(MethodError, match=r"^option rank=2\.5 is not a valid int$"):
        _coerce("rank", 2.5, int)
    assert _coerce("rank", 2.0, int) == 2
    assert _coerce("names", "a, ,b,", tuple[str, ...]) == ("a", "b")
    assert _coerce("names", ["a", " b "], tuple[str, ...]) == ("a", "b")


def test_method_task_of_makes_tuples():
    tokenizer = object()
    task = MethodTask.of(["cat", "dog"], (t for t in ["a {}."]), tokenizer)
    assert task == MethodTask(("cat", "dog"), ("a {}.",), tokenizer)
    assert task.tokenizer is tokenizer


@dataclasses.dataclass(frozen=True)
class _ToyConfig:
    names: tuple[str, ...] = dataclasses.field(
        default=("q", "v"), metadata={"help": "which modules"}
    )
    rank: int = dataclasses.field(default=4, metadata={"help": "the rank"})
    quiet: bool = False


@dataclasses.dataclass(frozen=True)
class _EmptyConfig:
    pass


class _Toy(Method):
    name = "toy"
    config_class = _ToyConfig


class _Empty(Method):
    name = "empty"
    config_class = _EmptyConfig


def test_describe_options_and_unknown_option_message():
    assert (
        _Toy().describe_options() == "names=q,v (which modules); rank=4 (the rank); quiet=False ()"
    )
    with pytest.raises(
        MethodError, match=r"^method toy has no option\(s\) a, b; options: names=q,v"
    ):
        _Toy().make_config({"b": 1, "a": 2})
    with pytest.raises(MethodError, match=r"^method empty has no option\(s\) x; options: none$"):
        _Empty().make_config({"x": 1})
    config = _Toy().make_config({"names": "k", "quiet": "yes"})
    assert config == _ToyConfig(names=("k",), rank=4, quiet=True)


# --- registry -------------------------------------------------------------------------------


def test_register_a_new_name_and_the_baseline():
    class Fresh(Method):
        name = "fresh-test-method"
        config_class = _EmptyConfig

    try:
        assert register(Fresh) is Fresh
        assert register(Fresh) is Fresh  # the same class again is fine
        assert type(get_method("fresh-test-method")) is Fresh
    finally:
        registry._METHODS.pop("fresh-test-method", None)
    assert registry.baseline_method() == "zeroshot"


def test_baseline_needs_exactly_one_method_that_trains_nothing(monkeypatch):
    class Idle(Method):
        name = "idle-test-method"
        trains_nothing = True

    monkeypatch.setitem(registry._METHODS, "idle-test-method", Idle)
    with pytest.raises(
        MethodError,
        match=r"^exactly one registered method must train nothing, found "
        r"\['zeroshot', 'idle-test-method'\]$",
    ):
        registry.baseline_method()


# --- trained weights ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_clip(tiny_clip_dir):
    return CLIPModel.from_pretrained(tiny_clip_dir).eval()


def test_load_trained_refuses_missing_or_unexpected_or_misshapen(base_clip):
    method = get_method("bitfit")
    tuned = method.prepare(copy.deepcopy(base_clip), method.make_config({}))
    state = method.trained_state(tuned)
    key = sorted(state)[0]
    only_missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(MethodError, match=r"1 missing .*, 0 unexpected \(e\.g\. \[\]\)$"):
        method.load_trained(tuned, only_missing)
    with pytest.raises(MethodError, match=r"0 missing \(e\.g\. \[\]\), 1 unexpected"):
        method.load_trained(tuned, {**state, "extra": torch.zeros(1)})
    shape = tuple(state[key].shape)
    bad = {**state, key: torch.zeros(shape + (2,))}
    expected = f"trained tensor {key} has shape {shape + (2,)}, the model expects {shape}"
    with pytest.raises(MethodError, match=f"^{re.escape(expected)}$"):
        method.load_trained(tuned, bad)


def test_trained_state_is_a_cpu_copy_and_loads_into_the_parameter_dtype(base_clip):
    method = get_method("bitfit")
    tuned = method.prepare(copy.deepcopy(base_clip), method.make_config({}))
    state = method.trained_state(tuned)
    params = {n: p for n, p in tuned.named_parameters() if p.requires_grad}
    assert len(state) == len(params)
    first = next(iter(params.values()))
    before = first.detach().clone()
    for tensor in state.values():
        tensor.add_(1.0)  # a copy: the model must not change
    assert torch.equal(first.detach(), before)
    method.load_trained(tuned, {k: v.double() for k, v in state.items()})
    assert first.dtype == torch.float32
    assert torch.equal(first.detach(), before + 1.0)


def test_merge_refuses_a_model_with_only_a_text_adapter(base_clip):
    tuned = TunedClip(copy.deepcopy(base_clip), text_adapter=torch.nn.Identity())
    with pytest.raises(NotMergeableError, match=r"^method full adds modules outside CLIPModel$"):
        get_method("full").merge(tuned)


# --- TunedClip.forward on precomputed tower features -----------------------------------------


def test_forward_on_tower_features_is_scaled_cosine(base_clip):
    torch.manual_seed(0)
    adapter = torch.nn.Linear(32, 32)
    tuned = TunedClip(copy.deepcopy(base_clip), image_adapter=adapter)
    tower_features = torch.randn(4, 32)
    class_embeds = torch.randn(3, 32, dtype=torch.float64)
    class_embeds = class_embeds / class_embeds.norm(dim=1, keepdim=True)
    with torch.no_grad():
        got = tuned(tower_features=tower_features, class_embeds=class_embeds)
        adapted = adapter(tower_features)
        unit = adapted / adapted.norm(dim=1, keepdim=True)
        expected = base_clip.logit_scale.exp() * unit @ class_embeds.float().T
    assert got.shape == (4, 3)
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"^forward needs class prompts or class_embeds$"):
        tuned(tower_features=tower_features)


def test_text_features_respect_the_attention_mask(base_clip):
    tuned = TunedClip(copy.deepcopy(base_clip))
    input_ids = torch.tensor([[0, 5, 6, 7, 1], [0, 5, 1, 3, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        got = tuned.get_text_features(input_ids, attention_mask=mask)
        unmasked = tuned.get_text_features(input_ids)
        expected = base_clip.text_projection(
            base_clip.text_model(input_ids=input_ids, attention_mask=mask).pooler_output
        )
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got[1], unmasked[1], atol=1e-6)


@dataclasses.dataclass(frozen=True)
class _FactoryConfig:
    names: tuple[str, ...] = dataclasses.field(
        default_factory=lambda: ("a", "b"), metadata={"help": "built by a factory"}
    )


class _Factory(Method):
    name = "factory"
    config_class = _FactoryConfig


def test_describe_options_shows_default_factory_values():
    assert _Factory().describe_options() == "names=a,b (built by a factory)"


def test_load_trained_names_at_most_three_missing_keys(base_clip):
    method = get_method("bitfit")
    tuned = method.prepare(copy.deepcopy(base_clip), method.make_config({}))
    state = method.trained_state(tuned)
    dropped = sorted(state)[:4]
    with pytest.raises(MethodError) as error:
        method.load_trained(tuned, {k: v for k, v in state.items() if k not in dropped})
    assert f"4 missing (e.g. {dropped[:3]}), " in str(error.value)
    extra = {f"extra{i}": torch.zeros(1) for i in range(4)}
    with pytest.raises(MethodError) as error:
        method.load_trained(tuned, {**state, **extra})
    assert str(error.value).endswith("4 unexpected (e.g. ['extra0', 'extra1', 'extra2'])")


# --- keyword arguments reach the Hugging Face model --------------------------------------------


def test_image_features_pass_keyword_arguments_to_the_model(base_clip):
    """interpolate_pos_encoding lets the tiny 32 x 32 model embed 64 x 64 images."""
    tuned = TunedClip(copy.deepcopy(base_clip))
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = tuned.get_image_features(pixels, interpolate_pos_encoding=True)
        expected = base_clip.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True)
    expected = getattr(expected, "pooler_output", expected)
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError):  # without it the model refuses the size
        tuned.get_image_features(pixels)


def test_text_features_pass_keyword_arguments_to_the_model(base_clip):
    tuned = TunedClip(copy.deepcopy(base_clip))
    seen = []
    real = tuned.clip.get_text_features

    def spy(**kwargs):
        seen.append(sorted(kwargs))
        return real(**kwargs)

    tuned.clip.get_text_features = spy
    input_ids = torch.tensor([[0, 5, 6, 1]])
    with torch.no_grad():
        tuned.get_text_features(input_ids, output_attentions=True, output_hidden_states=False)
        tuned.get_image_features(torch.zeros(1, 3, 32, 32))
    assert seen == [["attention_mask", "input_ids", "output_attentions", "output_hidden_states"]]


# --- SigLIP's logit bias, WiSE-FT interpolation, task-specific class encoders ----------------


def test_forward_adds_a_models_logit_bias(base_clip):
    clip = copy.deepcopy(base_clip)
    clip.logit_bias = torch.nn.Parameter(torch.tensor([-2.5]))
    tuned = TunedClip(clip)
    features = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    class_embeds = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    with torch.no_grad():
        got = tuned(tower_features=features, class_embeds=class_embeds)
        unit = features / features.norm(dim=1, keepdim=True)
        expected = clip.logit_scale.exp() * unit @ class_embeds.T - 2.5
    assert torch.allclose(got, expected, atol=1e-5)


def test_default_interpolation_is_a_lerp_of_the_trained_tensors_only(base_clip):
    method = get_method("bitfit")
    tuned = method.prepare(copy.deepcopy(base_clip), method.make_config({}))
    zero_shot = {k: v.clone() for k, v in base_clip.state_dict().items()}
    params = dict(tuned.named_parameters())
    trained = [
        "vision_model.encoder.layers.0.mlp.fc1.bias",
        "text_model.encoder.layers.1.layer_norm2.bias",
    ]
    frozen = "vision_model.encoder.layers.0.mlp.fc1.weight"
    with torch.no_grad():
        for key in trained:
            params["clip." + key].add_(4.0)
        params["clip." + frozen].add_(4.0)  # not named as trained: must stay as it is
    before_frozen = params["clip." + frozen].detach().clone()
    method.interpolate(tuned, zero_shot, trained, 0.25)
    for key in trained:
        assert torch.allclose(params["clip." + key], zero_shot[key] + 1.0, atol=1e-6)
    assert torch.equal(params["clip." + frozen], before_frozen)
    with pytest.raises(
        MethodError,
        match=r"^method bitfit trains tensors the zero-shot model has not \(extra\); it must "
        r"define how to interpolate them$",
    ):
        method.interpolate(tuned, zero_shot, ["extra"], 0.5)
    with pytest.raises(MethodError, match=r"has not \(a, b, c\); it must"):
        method.interpolate(tuned, zero_shot, ["a", "b", "c", "d"], 0.5)
    # zero-shot tensors in another dtype are cast to the parameter's
    doubled = {k: v.double() for k, v in zero_shot.items()}
    method.interpolate(tuned, doubled, trained, 0.0)
    for key in trained:
        assert params["clip." + key].dtype == torch.float32
        assert torch.equal(params["clip." + key], zero_shot[key])


def fixed_encoder(learned: torch.Tensor):
    """A class encoder whose learned class embeddings are `learned`."""
    from clipgauge.methods.base import ClassEncoder

    class Fixed(ClassEncoder):
        def learned_classes(self, tuned):
            return learned

    return Fixed(len(learned))


def test_a_class_encoder_mixes_learned_and_prompt_embeddings(base_clip, tiny_clip_dir):
    from clipgauge.encoding import tokenize_class_prompts
    from clipgauge.models.loading import load_clip

    bundle = load_clip(str(tiny_clip_dir), device="cpu")
    prompts = tokenize_class_prompts(bundle.tokenize, ["cat", "dog"], ["a photo of the {}."])
    learned = torch.nn.functional.normalize(
        torch.randn(2, 32, generator=torch.Generator().manual_seed(1)), dim=-1
    )
    encoder = fixed_encoder(learned)
    tuned = TunedClip(copy.deepcopy(base_clip), class_encoder=encoder)
    with torch.no_grad():
        from_prompts = tuned.prompt_classes(prompts)
        assert torch.equal(tuned.encode_classes(prompts), learned)
        encoder.mix = 0.0
        assert torch.equal(tuned.encode_classes(prompts), from_prompts)
        encoder.mix = 0.25
        mixed = from_prompts + 0.25 * (learned - from_prompts)
        expected = mixed / mixed.norm(dim=-1, keepdim=True)
        assert torch.allclose(tuned.encode_classes(prompts), expected, atol=1e-6)
    three = tokenize_class_prompts(bundle.tokenize, ["cat", "dog", "car"], ["a {}."])
    message = (
        "this model's class encoder was trained for 2 classes, not 3: embed another task's "
        "classes with the method's other_task_view (clipgauge.training.other_task_bundle)"
    )
    with pytest.raises(MethodError, match=f"^{re.escape(message)}$"):
        tuned.encode_classes(three)


def test_other_task_view_drops_only_the_class_encoder(base_clip):
    method = get_method("full")
    identity = torch.nn.Identity
    plain = TunedClip(copy.deepcopy(base_clip), image_adapter=identity(), text_adapter=identity())
    assert method.other_task_view(plain) is plain
    headed = TunedClip(
        plain.clip,
        image_adapter=plain.image_adapter,
        text_adapter=plain.text_adapter,
        class_encoder=fixed_encoder(torch.eye(2, 32)),
    )
    view = method.other_task_view(headed)
    assert view.class_encoder is None
    assert view.clip is headed.clip and view.image_adapter is headed.image_adapter
    assert view.text_adapter is headed.text_adapter
    head_only = TunedClip(plain.clip, class_encoder=fixed_encoder(torch.eye(2, 32)))
    message = (
        "method full classifies with class embeddings it learned for its own task's classes "
        "(a head or learned prompt context), which no CLIPModel produces from class prompts. "
        "Use the run directly (`clipgauge evaluate --run`, or clipgauge.training.load_run in "
        "Python)"
    )
    with pytest.raises(NotMergeableError, match=f"^{re.escape(message)}$"):
        method.merge(head_only)
    assert method.on_epoch_start(headed, 1, 3) == 1.0


def test_a_class_encoder_counts_as_the_text_side(base_clip):
    method = get_method("full")
    encoder = fixed_encoder(torch.eye(2, 32))
    encoder.weight = torch.nn.Parameter(torch.zeros(2))
    tuned = TunedClip(copy.deepcopy(base_clip), class_encoder=encoder)
    for _, param in tuned.named_parameters():
        param.requires_grad_(False)
    assert not method.trains_text_tower(tuned)
    encoder.weight.requires_grad_(True)
    assert method.trains_text_tower(tuned)
    assert not method.trains_image_tower(tuned)
    assert set(method.trained_parameters(tuned)) == {"class_encoder.weight"}
