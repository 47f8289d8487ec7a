"""Linear probe: a linear head on the frozen image embeddings, initialised as the zero-shot
classifier.

Radford et al. (2021, "Learning Transferable Visual Models From Natural Language Supervision")
and Kumar et al. (2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution") fit a logistic-regression head on frozen image features; following
WiSE-FT and LP-FT practice for CLIP, the head here starts as the zero-shot head: row c is the
normalised class-c embedding of the task's prompt templates, so before training the model is
exactly zero-shot CLIP. Logits are exp(logit_scale) * cos(image, W_c): the rows are
renormalised like every class embedding in clipgauge, because evaluation scores classes by
cosine with L2-normalised class embeddings and training must optimise that same rule; the
frozen logit scale (100 for OpenAI CLIP) sets the temperature. Everything else stays frozen,
so the engine embeds each image once and an epoch is one matrix product per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from clipgauge.encoding import tokenize_class_prompts
from clipgauge.methods.base import (
    ClassEncoder,
    Method,
    MethodError,
    MethodTask,
    TunedClip,
    train_only,
)
from clipgauge.methods.registry import register
from clipgauge.models import backbone

# Classes a head is counted for when no task is given (`clipgauge methods`): ImageNet-1k,
# the main benchmark of both papers.
COUNTED_CLASSES = 1000


class LinearHead(ClassEncoder):
    """Class weights W (C x D); the class embeddings are its rows, L2-normalised."""

    def __init__(self, weight: torch.Tensor):
        super().__init__(num_classes=weight.shape[0])
        self.weight = nn.Parameter(weight)

    def learned_classes(self, tuned: TunedClip) -> torch.Tensor:
        return F.normalize(self.weight.float(), dim=-1)


def zero_shot_head(tuned: TunedClip, task: MethodTask | None) -> LinearHead:
    """A head whose rows are the task's zero-shot class embeddings (float32); without a task
    (counting parameters), a zero head for COUNTED_CLASSES classes."""
    device = tuned.logit_scale.device
    if task is None:
        return LinearHead(torch.zeros(COUNTED_CLASSES, backbone.embed_dim(tuned), device=device))
    if task.tokenizer is None:
        raise MethodError("a linear head needs the task's tokenizer to embed its class prompts")
    tokenize = partial(backbone.tokenize, tuned.clip, task.tokenizer)
    prompts = tokenize_class_prompts(tokenize, task.class_names, task.templates).to(device)
    with torch.no_grad():
        return LinearHead(tuned.prompt_classes(prompts).detach().clone())


@dataclass
class LinearProbeConfig:
    """The linear probe has no options."""


class LinearProbe(Method):
    name = "linear-probe"
    config_class = LinearProbeConfig
    description = "linear head on frozen image embeddings (zero-shot init)"
    changes_base_weights = False

    def prepare(
        self, clip_model: CLIPModel, config: LinearProbeConfig, task: MethodTask | None = None
    ) -> TunedClip:
        train_only(clip_model, lambda name: False)
        tuned = TunedClip(clip_model)
        tuned.class_encoder = zero_shot_head(tuned, task)
        return tuned

    def interpolate(self, tuned, zero_shot, trained_keys, alpha: float) -> None:
        """WiSE-FT for a head: class embeddings (1 - alpha) * zero-shot + alpha * head rows,
        renormalised (alpha 0: exactly the prompts' zero-shot embeddings)."""
        tuned.class_encoder.mix = alpha


register(LinearProbe)
