"""open_clip checkpoints <-> transformers' CLIPModel, without the open_clip package.

An open_clip ViT-CLIP (the OpenAI, LAION, DataComp and MetaCLIP models) and transformers'
CLIPModel compute the same function with differently named and packed weights:

- attention: open_clip packs q, k and v as `attn.in_proj_weight` [3d, d] (and `in_proj_bias`);
  transformers has `self_attn.{q,k,v}_proj`;
- projections: open_clip's `visual.proj` and `text_projection` are [width, embed], applied as
  x @ P; transformers' `visual_projection` and `text_projection` are Linear layers, [embed, width];
- activation: `quick_gelu: true` is transformers' "quick_gelu", otherwise "gelu";
- text pooling: open_clip pools at the argmax token id (OpenAI's BPE puts <end>, the largest id,
  there); transformers pools at the first <end> (eos_token_id).

Converting is a renaming plus a split or a transpose, so it is exact: HF -> open_clip -> HF gives
the same tensors bit for bit. Config features the mapping cannot represent are refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPConfig

from clipgauge.errors import ModelError

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "open_clip"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

# Config keys whose non-default value changes the architecture beyond what CLIPModel holds.
UNSUPPORTED = {
    "ls_init_value": (None, "layer scale"),
    "attentional_pool": (False, "attentional pooling"),
    "no_ln_pre": (False, "a tower without its pre-transformer LayerNorm"),
    "final_ln_after_pool": (False, "the final LayerNorm after pooling"),
    "qk_norm": (False, "qk-norm attention"),
    "scaled_cosine_attn": (False, "scaled-cosine attention"),
    "scale_heads": (False, "per-head attention scales"),
    "scale_attn_inner": (False, "the extra attention LayerNorm"),
    "scale_attn": (False, "the extra attention LayerNorm"),
    "scale_fc": (False, "the extra MLP LayerNorm"),
    "block_type": (None, "a custom attention block"),
    "timm_model_name": (None, "a timm image tower"),
    "hf_model_name": (None, "a Hugging Face text tower"),
    "embed_cls": (False, "a CLS text embedding"),
    "no_causal_mask": (False, "a text tower without causal mask"),
    "proj_bias": (False, "a text projection with bias"),
    "image_seq_len": (None, "a variable image sequence length"),
    "act_kwargs": (None, "custom activation settings"),
    "norm_kwargs": (None, "custom LayerNorm settings"),
    "hf_tokenizer_name": (None, "a Hugging Face tokenizer by name"),
    "tokenizer_kwargs": (None, "custom tokenizer settings"),
}
# Keys with a value the mapping represents; any other value is refused.
REQUIRED_VALUES = {
    "pool_type": {"vision_cfg": ("tok",), "text_cfg": ("argmax", "eos")},
    "pos_embed_type": {"vision_cfg": ("learnable",)},
    "text_arch": {"text_cfg": ("clip",)},
    "proj_type": {"text_cfg": ("linear",)},
    "block_type": {"vision_cfg": (None, "default"), "text_cfg": (None, "default")},
}
# Keys that do not change inference (training-time options and bookkeeping).
IGNORED = {"patch_dropout", "output_tokens", "tokenizer_mode", "pad_id", "bos_id"}
SHAPE_KEYS = {
    "vision_cfg": {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"},
    "text_cfg": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "eos_id"},
}
TOP_KEYS = {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "custom_text", "cast_dtype"}


def supported_architectures() -> list[str]:
    """open_clip model config names shipped with clipgauge."""
    return sorted(p.stem for p in (ASSETS / "model_configs").glob("*.json"))


def architecture_config(arch: str) -> dict:
    path = ASSETS / "model_configs" / f"{arch}.json"
    if not path.is_file():
        raise ModelError(
            f"open_clip architecture {arch!r} is not one clipgauge supports; choose one of "
            f"{', '.join(supported_architectures())}, or put an {CONFIG_FILE} next to the weights"
        )
    return json.loads(path.read_text())


def pretrained_tags() -> dict[str, dict[str, dict]]:
    """{arch: {tag: {hf_hub, quick_gelu?, mean, std, interpolation, resize_mode}}}."""
    return json.loads((ASSETS / "pretrained.json").read_text())


def check_representable(model_cfg: dict, where: str) -> None:
    """Refuse, by name, any config feature that CLIPModel cannot represent."""
    for key in model_cfg:
        if key not in TOP_KEYS:
            raise ModelError(f"{where}: open_clip config key {key!r} is not supported")
    for part in ("vision_cfg", "text_cfg"):
        cfg = model_cfg.get(part, {})
        for key, value in cfg.items():
            _check_key(part, key, value, where)
    if not isinstance(model_cfg.get("vision_cfg", {}).get("layers", 12), int):
        raise ModelError(f"{where}: a ResNet image tower (a list of vision_cfg.layers) is refused")


def _check_key(part: str, key: str, value, where: str) -> None:
    if key in REQUIRED_VALUES and part in REQUIRED_VALUES[key]:
        allowed = REQUIRED_VALUES[key][part]
        if value not in allowed:
            raise ModelError(
                f"{where}: {part}.{key}={value!r} is not supported (clipgauge maps "
                f"{', '.join(map(repr, allowed))} only)"
            )
        return
    if key in UNSUPPORTED:
        default, feature = UNSUPPORTED[key]
        if value not in (default, None, False, {}):
            raise ModelError(
                f"{where}: {part}.{key}={value!r} ({feature}) cannot be represented by "
                "transformers' CLIPModel, so clipgauge does not load this model"
            )
        return
    if key not in IGNORED and key not in SHAPE_KEYS[part]:
        raise ModelError(f"{where}: open_clip config key {part}.{key} is not supported")


def hf_config(
    model_cfg: dict, *, eos_token_id: int, bos_token_id: int, pad_token_id: int
) -> CLIPConfig:
    """The CLIPConfig of an open_clip model config (already checked)."""
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    width = vision.get("width", 768)
    text_width = text.get("width", 512)
    return CLIPConfig(
        projection_dim=model_cfg["embed_dim"],
        text_config=dict(
            vocab_size=text.get("vocab_size", 49408),
            hidden_size=text_width,
            intermediate_size=int(text_width * text.get("mlp_ratio", 4.0)),
            num_hidden_layers=text.get("layers", 12),
            num_attention_heads=text.get("heads", 8),
            max_position_embeddings=text.get("context_length", 77),
            hidden_act=act,
            layer_norm_eps=1e-5,
            eos_token_id=eos_token_id,
            bos_token_id=bos_token_id,
            pad_token_id=pad_token_id,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=int(width * vision.get("mlp_ratio", 4.0)),
            num_hidden_layers=vision.get("layers", 12),
            num_attention_heads=width // vision.get("head_width", 64),
            image_size=vision.get("image_size", 224),
            patch_size=vision.get("patch_size", 16),
            hidden_act=act,
            layer_norm_eps=1e-5,
        ),
    )


def open_clip_config(config: CLIPConfig) -> dict:
    """The open_clip model config of a CLIPConfig (the inverse of `hf_config`)."""
    v, t = config.vision_config, config.text_config
    if v.hidden_act != t.hidden_act or v.hidden_act not in ("gelu", "quick_gelu"):
        raise ModelError(
            f"activations {v.hidden_act!r} (image) and {t.hidden_act!r} (text) cannot be written "
            "as open_clip's one quick_gelu switch"
        )
    vision = dict(
        image_size=v.image_size,
        layers=v.num_hidden_layers,
        width=v.hidden_size,
        head_width=v.hidden_size // v.num_attention_heads,
        mlp_ratio=v.intermediate_size / v.hidden_size,
        patch_size=v.patch_size,
    )
    text = dict(
        context_length=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        width=t.hidden_size,
        heads=t.num_attention_heads,
        layers=t.num_hidden_layers,
        mlp_ratio=t.intermediate_size / t.hidden_size,
    )
    if t.eos_token_id not in (2, t.vocab_size - 1):  # argmax pooling would pick another token
        text.update(pool_type="eos", eos_id=t.eos_token_id)
    return dict(
        embed_dim=config.projection_dim,
        quick_gelu=v.hidden_act == "quick_gelu",
        vision_cfg=vision,
        text_cfg=text,
    )


BLOCK_NAMES = {  # open_clip resblock tensor -> transformers encoder layer tensor
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
VISION_NAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
TEXT_NAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
TRANSPOSED = {
    "visual.proj": "visual_projection.weight",
    "text_projection": "text_projection.weight",
}
TOWERS = {
    "visual.transformer.resblocks": "vision_model.encoder.layers",
    "transformer.resblocks": "text_model.encoder.layers",
}


def to_hf_state(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """An open_clip ViT-CLIP state dict as CLIPModel tensors (exact copies)."""
    out, left = {}, dict(state)
    left.pop("attn_mask", None)  # a causal-mask buffer some old checkpoints carry
    for names in (VISION_NAMES, TEXT_NAMES):
        for src, dst in names.items():
            out[dst] = _take(left, src, where)
    for src, dst in TRANSPOSED.items():
        out[dst] = _take(left, src, where).T.contiguous()
    for key in [k for k in left if _block_key(k)]:
        tower, index, rest = _block_key(key)
        prefix = f"{TOWERS[tower]}.{index}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip("qkv", left.pop(key).chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{name}_proj.{kind}"] = part.contiguous()
        elif rest in BLOCK_NAMES:
            out[prefix + BLOCK_NAMES[rest]] = left.pop(key)
    if left:
        raise ModelError(
            f"{where}: weights not in an open_clip ViT-CLIP: {', '.join(sorted(left)[:6])}"
            + (" ..." if len(left) > 6 else "")
        )
    return out


def from_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPModel tensors as an open_clip state dict (the inverse of `to_hf_state`)."""
    out = {}
    for names in (VISION_NAMES, TEXT_NAMES):
        for src, dst in names.items():
            out[src] = state[dst]
    for src, dst in TRANSPOSED.items():
        out[src] = state[dst].T.contiguous()
    inverse = {dst: src for src, dst in BLOCK_NAMES.items()}
    for oc_tower, hf_tower in TOWERS.items():
        index = 0
        while f"{hf_tower}.{index}.layer_norm1.weight" in state:
            hf, oc = f"{hf_tower}.{index}.", f"{oc_tower}.{index}."
            for kind in ("weight", "bias"):
                parts = [state[f"{hf}self_attn.{n}_proj.{kind}"] for n in "qkv"]
                out[f"{oc}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
            for dst, src in inverse.items():
                out[oc + src] = state[hf + dst]
            index += 1
    return out


def _block_key(key: str) -> tuple[str, int, str] | None:
    for tower in TOWERS:  # the longer prefix first: visual.transformer before transformer
        if key.startswith(tower + "."):
            index, _, rest = key[len(tower) + 1 :].partition(".")
            if index.isdigit():
                return tower, int(index), rest
    return None


def _take(state: dict, key: str, where: str) -> torch.Tensor:
    if key not in state:
        raise ModelError(f"{where}: the weights lack {key!r}; this is not an open_clip ViT-CLIP")
    return state.pop(key)
