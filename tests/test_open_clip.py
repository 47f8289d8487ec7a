"""open_clip checkpoints without open_clip: key layout, tokenizer, equivalence, round trips."""

import json

import pytest
import torch
import torch.nn.functional as F
from imagegen import write_image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

from clipgauge.cli import main
from clipgauge.errors import ModelError
from clipgauge.methods.counts import parameter_counts
from clipgauge.models import open_clip_format as ocf
from clipgauge.models.build import make_image_processor
from clipgauge.models.loading import load_clip
from clipgauge.models.open_clip_tokenizer import open_clip_tokenizer
from clipgauge.task_measures import measure

pytestmark = pytest.mark.usefixtures("one_thread")

# Token ids from open_clip 3.3's own tokenizer (open_clip.tokenize), padding zeros removed.
OPEN_CLIP_IDS = [
    ("a photo of a dog.", [49406, 320, 1125, 539, 320, 1929, 269, 49407]),
    ("A PHOTO of   the  Café &amp; bar", [49406, 320, 1125, 539, 518, 15304, 261, 2411, 49407]),
    ("it's a big's don't I'LL", [49406, 585, 568, 320, 1205, 568, 847, 713, 328, 1342, 49407]),
    ("émoji 🐶 test", [49406, 3459, 617, 2697, 10631, 1628, 49407]),
    (
        "numbers 12345 and 3.14",
        [49406, 6121, 272, 273, 274, 275, 276, 537, 274, 269, 272, 275, 49407],
    ),
    ("", [49406, 49407]),
    ("&lt;b&gt;bold&lt;/b&gt;", [49406, 283, 321, 285, 8911, 34308, 321, 285, 49407]),
    (
        "schön 日本語 текст",
        [
            49406,
            844,
            7255,
            333,
            39121,
            44353,
            34002,
            508,
            17875,
            22176,
            27152,
            23669,
            141,
            480,
            49407,
        ],
    ),
    ("a sketch of a hot-air balloon", [49406, 320, 5269, 539, 320, 2069, 268, 1922, 13634, 49407]),
]
TINY = {"width": 32, "layers": 2, "heads": 2, "patch": 8, "image": 32, "embed": 16}


def tiny_hf_clip(act="quick_gelu", seed=0) -> CLIPModel:
    """A random CLIP with open_clip's text vocabulary and ids (BPE, <end> = 49407)."""
    w = TINY["width"]
    tower = dict(
        hidden_size=w,
        intermediate_size=4 * w,
        num_hidden_layers=TINY["layers"],
        num_attention_heads=TINY["heads"],
        hidden_act=act,
    )
    config = CLIPConfig(
        projection_dim=TINY["embed"],
        text_config=dict(
            **tower,
            vocab_size=49408,
            max_position_embeddings=77,
            eos_token_id=49407,
            bos_token_id=49406,
            pad_token_id=0,
        ),
        vision_config=dict(**tower, image_size=TINY["image"], patch_size=TINY["patch"]),
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # LayerNorms away from 1/0, so a swapped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def open_clip_state(model: CLIPModel) -> dict:
    """The documented open_clip ViT-CLIP key layout, written here independently of clipgauge:
    q/k/v stacked into attn.in_proj_*, projections as x @ P ([width, embed])."""
    sd = model.state_dict()
    out = {
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].t(),
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t(),
        "logit_scale": sd["logit_scale"],
    }
    for oc, hf in (
        ("visual.transformer.resblocks", "vision_model.encoder.layers"),
        ("transformer.resblocks", "text_model.encoder.layers"),
    ):
        for i in range(TINY["layers"]):
            h, o = f"{hf}.{i}.", f"{oc}.{i}."
            for kind in ("weight", "bias"):
                out[f"{o}attn.in_proj_{kind}"] = torch.cat(
                    [sd[f"{h}self_attn.{p}_proj.{kind}"] for p in "qkv"]
                )
                out[f"{o}attn.out_proj.{kind}"] = sd[f"{h}self_attn.out_proj.{kind}"]
                out[f"{o}ln_1.{kind}"] = sd[f"{h}layer_norm1.{kind}"]
                out[f"{o}ln_2.{kind}"] = sd[f"{h}layer_norm2.{kind}"]
                out[f"{o}mlp.c_fc.{kind}"] = sd[f"{h}mlp.fc1.{kind}"]
                out[f"{o}mlp.c_proj.{kind}"] = sd[f"{h}mlp.fc2.{kind}"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def tiny_model_cfg(quick_gelu=True) -> dict:
    return {
        "embed_dim": TINY["embed"],
        "quick_gelu": quick_gelu,
        "vision_cfg": {
            "image_size": TINY["image"],
            "layers": TINY["layers"],
            "width": TINY["width"],
            "head_width": TINY["width"] // TINY["heads"],
            "patch_size": TINY["patch"],
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": TINY["width"],
            "heads": TINY["heads"],
            "layers": TINY["layers"],
        },
    }


def write_open_clip(folder, model, model_cfg, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(open_clip_state(model), folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, **extra}))
    return folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(HF model, open_clip-format folder of the same weights)."""
    model = tiny_hf_clip()
    folder = write_open_clip(tmp_path_factory.mktemp("oc") / "tiny", model, tiny_model_cfg())
    return model, folder


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours") / "data"
    for d, domain in enumerate(["photo", "art"]):
        for c, name in enumerate(["cat", "dog", "bird"]):
            for i in range(4):
                write_image(
                    root / domain / name / f"{i}.png", (40 + 60 * c, 30 * i + 10 * d, 200 - 50 * c)
                )
    return root


@pytest.mark.parametrize(("text", "ids"), OPEN_CLIP_IDS)
def test_tokenizer_gives_open_clips_ids(text, ids):
    tokens = open_clip_tokenizer().as_open_clip([text])[0]
    assert len(tokens) == 77
    assert tokens == ids + [0] * (77 - len(ids))


def test_tokenizer_truncates_as_open_clip():
    tokens = open_clip_tokenizer().as_open_clip(
        ["the quick brown fox jumps over the lazy dog " * 12]
    )[0]
    assert len(tokens) == 77 and tokens[0] == 49406 and tokens[-1] == 49407 and 0 not in tokens


def test_embeddings_equal_the_hf_model(pair):
    model, folder = pair
    bundle = load_clip(f"open_clip:{folder}", device="cpu")
    assert bundle.source == "open_clip" and bundle.family == "clip"
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    texts = ["a photo of a dog.", "a sketch of a hot-air balloon", "émoji 🐶 test"]
    ids = torch.tensor(open_clip_tokenizer().as_open_clip(texts))
    with torch.no_grad():
        ours_img = bundle.model.get_image_features(pixel_values=pixels).pooler_output
        ref_img = model.get_image_features(pixel_values=pixels).pooler_output
        ours_txt = bundle.model.get_text_features(**bundle.tokenize(texts)).pooler_output
        ref_txt = model.get_text_features(input_ids=ids).pooler_output  # open_clip's padded ids
    assert (ours_img - ref_img).abs().max() <= 1e-5
    assert (ours_txt - ref_txt).abs().max() <= 1e-5


def test_measures_equal_across_formats(pair, colours, tmp_path):
    model, folder = pair
    hf_dir = tmp_path / "hf"
    model.save_pretrained(hf_dir)
    open_clip_tokenizer().save_pretrained(hf_dir)
    make_image_processor(32).save_pretrained(hf_dir)
    common = dict(templates=["a photo of a {}."], device="cpu", progress=False)
    a = measure(f"open_clip:{folder}", str(colours), **common).to_dict()
    b = measure(str(hf_dir), str(colours), **common).to_dict()
    for row in ("overall", "domains"):
        flat_a, flat_b = json.dumps(a[row], sort_keys=True), json.dumps(b[row], sort_keys=True)
        assert json.loads(flat_a).keys() == json.loads(flat_b).keys()
    for key, value in a["overall"].items():
        assert value == pytest.approx(b["overall"][key], abs=1e-5), key


def test_gelu_and_quick_gelu_are_kept_apart(pair, tmp_path):
    _, folder = pair
    gelu = write_open_clip(
        tmp_path / "gelu", tiny_hf_clip(act="gelu"), tiny_model_cfg(quick_gelu=False)
    )
    assert load_clip(f"open_clip:{gelu}").model.config.vision_config.hidden_act == "gelu"
    assert load_clip(f"open_clip:{folder}").model.config.text_config.hidden_act == "quick_gelu"


def test_hf_to_open_clip_to_hf_is_bit_exact(tiny_clip_dir, tmp_path):
    """A word-tokenizer CLIP (pools at its <eos>, id 3) through both converters."""
    assert (
        main(
            [
                "convert",
                "--model",
                str(tiny_clip_dir),
                "--to",
                "open_clip",
                "--out",
                str(tmp_path / "oc"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "convert",
                "--model",
                f"open_clip:{tmp_path / 'oc'}",
                "--to",
                "hf",
                "--out",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    before, after = (
        CLIPModel.from_pretrained(tiny_clip_dir),
        CLIPModel.from_pretrained(tmp_path / "hf"),
    )
    a, b = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert before.config.text_config.eos_token_id == after.config.text_config.eos_token_id
    assert before.config.to_diff_dict() == after.config.to_diff_dict()
    settings = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    assert settings["model_cfg"]["text_cfg"]["pool_type"] == "eos"  # not OpenAI's argmax rule
    x = load_clip(str(tiny_clip_dir)).tokenize(["a photo of the cat"])
    y = load_clip(f"open_clip:{tmp_path / 'oc'}").tokenize(["a photo of the cat"])
    assert torch.equal(x["input_ids"], y["input_ids"])


def test_open_clip_to_hf_to_open_clip_is_bit_exact(pair, tmp_path):
    _, folder = pair
    assert (
        main(
            [
                "convert",
                "--model",
                f"open_clip:{folder}",
                "--to",
                "hf",
                "--out",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "convert",
                "--model",
                str(tmp_path / "hf"),
                "--to",
                "open_clip",
                "--out",
                str(tmp_path / "oc"),
            ]
        )
        == 0
    )
    from safetensors.torch import load_file

    a = load_file(folder / "open_clip_model.safetensors")
    b = load_file(tmp_path / "oc" / "open_clip_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("part", "key", "value", "named"),
    [
        ("vision_cfg", "ls_init_value", 1e-5, "layer scale"),
        ("vision_cfg", "attentional_pool", True, "attentional pooling"),
        ("vision_cfg", "pool_type", "avg", "pool_type='avg'"),
        ("text_cfg", "pool_type", "last", "pool_type='last'"),
        ("vision_cfg", "qk_norm", True, "qk-norm"),
        ("vision_cfg", "timm_model_name", "vit_base_patch16_siglip_224", "timm image tower"),
        ("text_cfg", "hf_model_name", "xlm-roberta-base", "Hugging Face text tower"),
        ("vision_cfg", "no_ln_pre", True, "pre-transformer LayerNorm"),
        ("text_cfg", "some_future_key", 1, "text_cfg.some_future_key"),
    ],
)
def test_unrepresentable_configs_are_refused_by_name(pair, tmp_path, part, key, value, named):
    model, _ = pair
    cfg = tiny_model_cfg()
    cfg[part][key] = value
    folder = write_open_clip(tmp_path / "bad", model, cfg)
    with pytest.raises(ModelError, match=named.replace("(", r"\(")):
        load_clip(f"open_clip:{folder}")


def test_pickle_weights_are_refused_with_the_safe_conversion(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="weights_only=True"):
        load_clip(f"open_clip:ViT-B-32:{weights}")


def test_unknown_arch_and_tag_name_the_choices(tmp_path):
    with pytest.raises(ModelError, match="ViT-B-32"):
        load_clip("open_clip:ViT-Q-99:laion2b_s34b_b79k")
    with pytest.raises(ModelError, match="laion2b_s34b_b79k"):
        load_clip("open_clip:ViT-B-32:no_such_tag")


def test_uncached_pretrained_tag_fails_fast_offline(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelError, match="nor in the Hugging Face cache"):
        load_clip("open_clip:ViT-B-32:laion2b_s34b_b79k")
    assert time.perf_counter() - start < 10


def test_shipped_configs_map_to_the_known_shapes():
    """ViT-B-32 as open_clip describes it is transformers' openai/clip-vit-base-patch32 shape."""
    config = ocf.hf_config(
        ocf.architecture_config("ViT-B-32-quickgelu"),
        eos_token_id=49407,
        bos_token_id=49406,
        pad_token_id=0,
    )
    v, t = config.vision_config, config.text_config
    assert (
        v.hidden_size,
        v.num_hidden_layers,
        v.num_attention_heads,
        v.intermediate_size,
        v.patch_size,
    ) == (768, 12, 12, 3072, 32)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size) == (
        512,
        12,
        8,
        2048,
    )
    assert config.projection_dim == 512 and v.hidden_act == "quick_gelu"
    big = ocf.hf_config(
        ocf.architecture_config("ViT-bigG-14"),
        eos_token_id=49407,
        bos_token_id=49406,
        pad_token_id=0,
    )
    assert (big.vision_config.num_attention_heads, big.vision_config.intermediate_size) == (
        16,
        8192,
    )
    assert big.vision_config.hidden_act == "gelu"


def test_trainable_counts_on_vit_b32_are_the_studys_in_both_formats():
    from clipgauge.models.build import VIT_B32_SHAPE, new_clip  # noqa: F401

    expected = {
        "aclip": 30_670_848,
        "bitfit": 168_960,
        "lora": 983_040,
        "clip-adapter": 262_144,
        "full": 151_277_313,
    }
    from_open_clip = ocf.hf_config(
        ocf.architecture_config("ViT-B-32"), eos_token_id=49407, bos_token_id=49406, pad_token_id=0
    )
    hf = CLIPConfig(
        projection_dim=512,
        text_config=dict(
            vocab_size=49408,
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            max_position_embeddings=77,
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
        ),
    )
    a, b = parameter_counts(from_open_clip, list(expected)), parameter_counts(hf, list(expected))
    assert {k: v["trainable"] for k, v in a.items()} == expected
    assert a == b


def test_export_of_an_open_clip_run_is_open_clip(pair, colours, tmp_path):
    from clipgauge.training import TrainConfig, export_run, finetune

    _, folder = pair
    config = TrainConfig(batch_size=4, epochs=1, lr=1e-3, val_fraction=0.25)
    finetune(
        f"open_clip:{folder}",
        str(colours),
        ["photo"],
        "bitfit",
        {},
        config,
        tmp_path / "run",
        progress=False,
    )
    out = export_run(tmp_path / "run", tmp_path / "export")
    assert (out / "open_clip_config.json").is_file() and (
        out / "open_clip_model.safetensors"
    ).is_file()
    exported = load_clip(f"open_clip:{out}")
    hf = export_run(tmp_path / "run", tmp_path / "export-hf", fmt="hf")
    reloaded = load_clip(str(hf))
    a, b = exported.model.state_dict(), reloaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_clip(f"open_clip:{folder}").model.state_dict()
    changed = [k for k in a if not torch.equal(a[k], base[k])]
    assert changed and all(k.endswith(".bias") and ".layers." in k for k in changed)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (
            F.cosine_similarity(
                exported.model.get_image_features(pixel_values=pixels).pooler_output,
                reloaded.model.get_image_features(pixel_values=pixels).pooler_output,
            ).min()
            > 0.999999
        )
