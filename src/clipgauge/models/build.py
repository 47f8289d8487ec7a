"""Build small CLIP and SigLIP checkpoints from scratch (random weights) as standard Hugging Face
folders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from clipgauge.models.tokenizer import build_word_tokenizer

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# The shape of OpenAI's CLIP ViT-B/32 (transformers' CLIPConfig defaults with patch 32), for
# benchmarks with random weights.
VIT_B32_SHAPE = dict(
    image_size=224,
    patch_size=32,
    vision_width=768,
    vision_layers=12,
    vision_heads=12,
    text_width=512,
    text_layers=12,
    text_heads=8,
    projection_dim=512,
    context_length=77,
)


def make_image_processor(image_size: int) -> CLIPImageProcessor:
    """The OpenAI CLIP preprocessing (resize shortest edge, centre crop, normalise) at a size."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
        do_convert_rgb=True,
    )


def new_clip(
    words: Iterable[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_width: int = 32,
    vision_layers: int = 2,
    vision_heads: int = 2,
    text_width: int = 32,
    text_layers: int = 2,
    text_heads: int = 2,
    vision_mlp_width: int | None = None,
    projection_dim: int = 32,
    context_length: int = 16,
    hidden_act: str = "quick_gelu",
    seed: int = 0,
) -> tuple[CLIPModel, object, CLIPImageProcessor]:
    """A random-weight CLIP (seeded), its word-level tokenizer and its image processor.

    `hidden_act` is the MLP activation of both towers, by transformers' name (OpenAI CLIP's
    "quick_gelu", "gelu", ...). `vision_mlp_width` is the image tower's MLP hidden units
    (transformers' `intermediate_size`); None gives CLIP's 4 x width, as the text tower has.
    """
    tokenizer = build_word_tokenizer(words, max_length=context_length)
    if vision_mlp_width is None:
        vision_mlp_width = 4 * vision_width
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_width,
            intermediate_size=4 * text_width,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            hidden_act=hidden_act,
            max_position_embeddings=context_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=vision_mlp_width,
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads,
            hidden_act=hidden_act,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    return model, tokenizer, make_image_processor(image_size)


def save_clip(out_dir: str | Path, model: torch.nn.Module, tokenizer, processor) -> Path:
    """Save model (CLIP or SigLIP), tokenizer and image processor as one Hugging Face
    checkpoint folder: `CLIPModel` / `SiglipModel.from_pretrained(out_dir)` loads it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_clip(out_dir: str | Path, words: Iterable[str], **options) -> Path:
    """Create a random-weight CLIP with a word-level tokenizer and save it as an HF folder.

    `options` are those of `new_clip` (sizes, context length, seed).
    """
    return save_clip(out_dir, *new_clip(words, **options))


def new_siglip(
    words: Iterable[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    context_length: int = 16,
    seed: int = 0,
) -> tuple[SiglipModel, object, SiglipImageProcessor]:
    """A random-weight SigLIP (seeded) with a word-level tokenizer and SigLIP's preprocessing
    (squash to the square, mean and std 0.5)."""
    tokenizer = build_word_tokenizer(words, max_length=context_length)
    tower = dict(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
    )
    config = SiglipConfig(
        text_config=dict(
            **tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=context_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(**tower, image_size=image_size, patch_size=patch_size),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config)
    processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return model, tokenizer, processor


def build_siglip(out_dir: str | Path, words: Iterable[str], **options) -> Path:
    """Create a random-weight SigLIP with a word-level tokenizer and save it as an HF folder."""
    return save_clip(out_dir, *new_siglip(words, **options))
