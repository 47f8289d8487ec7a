"""What differs between the model families clipgauge runs (CLIP and SigLIP), in one place.

Both are transformers models with the same tower layout: `vision_model` and `text_model`, each
with `encoder.layers.{i}` blocks of `self_attn.{q,k,v,out}_proj`, `layer_norm1/2` and
`mlp.fc1/fc2`, and both offer `get_image_features` / `get_text_features`. They differ in:

- text input: CLIP pools at the end token and takes prompts padded to the longest; SigLIP pools
  the last position, so prompts are padded to the context length with no attention mask, as it
  was pretrained;
- logits: CLIP's are exp(logit_scale) * cos; SigLIP adds `logit_bias` (the same for every
  class, so it changes neither the argmax nor a cross-entropy over classes);
- the parts outside the blocks: CLIP has `visual_projection` and `text_projection`; SigLIP has
  pooling heads (`vision_model.head`, a multi-head attention pooler, and `text_model.head`).

`parameter_roles` names every parameter by tower, block and role, so methods select parameters
by meaning (q weights of blocks 6-11, every block bias) rather than by a family's names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

FAMILIES = ("clip", "siglip")
TOWERS = {"image": "vision_model", "text": "text_model"}
BLOCK_PARAM = re.compile(r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)$")
BLOCK_ROLES = {
    "self_attn.q_proj.weight": "q_weight",
    "self_attn.q_proj.bias": "q_bias",
    "self_attn.k_proj.weight": "k_weight",
    "self_attn.k_proj.bias": "k_bias",
    "self_attn.v_proj.weight": "v_weight",
    "self_attn.v_proj.bias": "v_bias",
    "self_attn.out_proj.weight": "out_weight",
    "self_attn.out_proj.bias": "out_bias",
    "layer_norm1.weight": "norm1_weight",
    "layer_norm1.bias": "norm1_bias",
    "layer_norm2.weight": "norm2_weight",
    "layer_norm2.bias": "norm2_bias",
    "mlp.fc1.weight": "mlp_in_weight",
    "mlp.fc1.bias": "mlp_in_bias",
    "mlp.fc2.weight": "mlp_out_weight",
    "mlp.fc2.bias": "mlp_out_bias",
}
# Parameters outside the blocks, by name prefix within a tower (first match wins).
OUTER_ROLES = (
    ("embeddings.", "embedding"),
    ("pre_layrnorm.", "norm_pre"),
    ("post_layernorm.", "norm_final"),
    ("final_layer_norm.", "norm_final"),
    ("head.", "head"),
)


@dataclass(frozen=True)
class ParamRole:
    """A parameter's place: tower ("image", "text" or None), block index (None outside the
    blocks) and role (for example "q_weight", "mlp_in_bias", "embedding", "projection")."""

    name: str
    tower: str | None
    block: int | None
    role: str


def family(model) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", "clip")
    return "siglip" if model_type == "siglip" else "clip"


def context_length(model) -> int:
    return int(model.config.text_config.max_position_embeddings)


def embed_dim(model) -> int:
    """Width of the image and text embeddings."""
    config = model.config
    if family(model) == "siglip":
        text = config.text_config
        return int(getattr(text, "projection_size", None) or text.hidden_size)
    return int(config.projection_dim)


def num_blocks(model, tower: str) -> int:
    config = model.config.vision_config if tower == "image" else model.config.text_config
    return int(config.num_hidden_layers)


def logit_bias(model) -> torch.Tensor | None:
    return getattr(model, "logit_bias", None)


def tokenize(model, tokenizer, texts) -> dict[str, torch.Tensor]:
    """Token ids and attention mask for `texts`, padded as the model family requires."""
    length = context_length(model)
    if family(model) == "siglip":
        tokens = tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        ids = tokens["input_ids"]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    tokens = tokenizer(
        list(texts), padding=True, truncation=True, max_length=length, return_tensors="pt"
    )
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def role_of(name: str) -> ParamRole:
    """The role of a parameter named as in the model's state dict."""
    match = BLOCK_PARAM.match(name)
    if match:
        tower = "image" if match[1] == "vision_model" else "text"
        return ParamRole(name, tower, int(match[2]), BLOCK_ROLES.get(match[3], "other"))
    for tower, prefix in TOWERS.items():
        if name.startswith(prefix + "."):
            rest = name[len(prefix) + 1 :]
            role = next((r for p, r in OUTER_ROLES if rest.startswith(p)), "other")
            if tower == "text" and role == "head":  # SigLIP's text head is a linear projection
                role = "projection"
            return ParamRole(name, tower, None, role)
    if name.startswith("visual_projection."):
        return ParamRole(name, "image", None, "projection")
    if name.startswith("text_projection."):
        return ParamRole(name, "text", None, "projection")
    if name in ("logit_scale", "logit_bias"):
        return ParamRole(name, None, None, name)
    return ParamRole(name, None, None, "other")


def parameter_roles(model: torch.nn.Module) -> list[ParamRole]:
    """Every parameter of a CLIPModel or SiglipModel with its tower, block and role."""
    return [role_of(name) for name, _ in model.named_parameters()]
