"""The one class-prompt encoder: measurement, training and evaluation all embed classes here.

A class embedding is the renormalised mean over templates of the normalised text embeddings of
"template filled with class" (a prompt ensemble). Prompts are tokenised once, padded to the
longest (CLIP) or to the context (SigLIP), and encoded in fixed chunks of rows, so the same
model and templates give the same bits whether the call runs under no_grad (measuring) or
with gradients (training the text side).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipgauge.prompts import class_prompts

# Rows of prompts per text-tower call: bounds memory for large prompt ensembles.
PROMPT_CHUNK = 256


def features(output) -> torch.Tensor:
    """Projected embeddings from get_*_features, whether it returns a tensor or a model output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class ClassPrompts:
    """Tokenised class prompts, template-major: row t * num_classes + c is template t, class c."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    num_templates: int
    num_classes: int

    def to(self, device) -> ClassPrompts:
        return ClassPrompts(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.num_templates,
            self.num_classes,
        )


Tokenize = Callable[[list[str]], Mapping[str, torch.Tensor]]


def tokenize_class_prompts(
    tokenize: Tokenize, class_names: Sequence[str], templates: Sequence[str]
) -> ClassPrompts:
    """Every class prompt through `tokenize` (texts -> input_ids and attention_mask, padded as
    the model family requires: `ClipBundle.tokenize` or `clipgauge.models.backbone.tokenize`)."""
    prompts = [p for row in class_prompts(class_names, templates) for p in row]
    tokens = tokenize(prompts)
    return ClassPrompts(
        tokens["input_ids"], tokens["attention_mask"], len(templates), len(class_names)
    )


TextEncoder = Callable[[torch.Tensor, torch.Tensor], object]


def encode_class_prompts(encode_text: TextEncoder, prompts: ClassPrompts) -> torch.Tensor:
    """Normalised class embeddings (C x D, float32) from `encode_text(input_ids, mask)`.

    Gradients flow when the caller has them enabled; the result is float32 whatever the
    model's dtype, so a bf16 or autocast model is averaged in full precision."""
    rows = prompts.input_ids.shape[0]
    chunks = [
        features(
            encode_text(
                prompts.input_ids[start : start + PROMPT_CHUNK],
                prompts.attention_mask[start : start + PROMPT_CHUNK],
            )
        )
        for start in range(0, rows, PROMPT_CHUNK)
    ]
    per_prompt = F.normalize(torch.cat(chunks).float(), dim=-1)
    per_template = per_prompt.view(prompts.num_templates, prompts.num_classes, -1)
    return F.normalize(per_template.mean(dim=0), dim=-1)
