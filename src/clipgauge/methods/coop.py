"""CoOp: learned prompt context in the text tower's input embedding space.

Zhou, Yang, Loy and Liu (2022, "Learning to Prompt for Vision-Language Models", IJCV) replace
the hand-written template by M learnable context vectors shared by all classes (the unified
context; M = 16 by default, initialised from N(0, 0.02), or from the word embeddings of
"a photo of a" with M = 4), with the class name at the end: the prompt of class c is
[SOS][ctx_1..ctx_M][tokens of c][.][EOS]. Both CLIP towers stay frozen; only the context
trains (16 x 512 = 8,192 parameters on ViT-B/32). The paper trains with SGD at lr 0.002,
batch 32, cosine decay, 50 to 200 epochs by shot count: that is the run's TrainConfig.

The task's prompt templates play no part in the learned prompts (only its class names do);
they give the zero-shot class embeddings that WiSE-FT interpolates with (see ClassEncoder).
Prompts are tokenised with M placeholder words in the context positions, and a forward hook
on the text tower's token embedding puts the context vectors there, so the tokens the tower
pools at (CLIP: the end token; SigLIP: the last position) stay where the tokenizer put them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from clipgauge.encoding import features
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

PLACEHOLDER = "X"  # the word tokenised where the context vectors go (as in CoOp's code)


@dataclass
class CoopConfig:
    n_ctx: int = field(default=16, metadata={"help": "number of learned context vectors M"})
    init: str = field(
        default="",
        metadata={
            "help": "words whose token embeddings initialise the context (e.g. 'a photo of a' "
            "with n_ctx=4); empty: N(0, init_std)"
        },
    )
    init_std: float = field(default=0.02, metadata={"help": "std of the random context init"})

    def __post_init__(self):
        if self.n_ctx < 1:
            raise MethodError(f"n_ctx={self.n_ctx} must be at least 1")


class PromptContext(ClassEncoder):
    """Context vectors (M x width) and the tokenised prompts of the task's class names."""

    def __init__(self, context: torch.Tensor, input_ids=None, attention_mask=None, start=1):
        super().__init__(num_classes=0 if input_ids is None else len(input_ids))
        self.context = nn.Parameter(context)
        self.register_buffer("input_ids", input_ids, persistent=False)
        self.register_buffer("attention_mask", attention_mask, persistent=False)
        self.start = start  # position of the first context vector (after SOS, if any)

    def _insert(self, module, args, output: torch.Tensor) -> torch.Tensor:
        context = self.context.to(output.dtype).expand(output.shape[0], -1, -1)
        end = self.start + self.context.shape[0]
        return torch.cat([output[:, : self.start], context, output[:, end:]], dim=1)

    def learned_classes(self, tuned: TunedClip) -> torch.Tensor:
        if self.input_ids is None:
            raise MethodError("coop was prepared without a task: it has no class prompts")
        token_embedding = tuned.clip.text_model.embeddings.token_embedding
        hook = token_embedding.register_forward_hook(self._insert)
        try:
            out = tuned.get_text_features(self.input_ids, self.attention_mask)
        finally:
            hook.remove()
        return F.normalize(features(out).float(), dim=-1)


def context_prompts(clip_model, tokenizer, class_names, n_ctx: int):
    """(input_ids, attention_mask, start) of 'X X ... X <class>.' for every class name, with
    `start` the position of the first of the n_ctx placeholders."""
    texts = [" ".join([PLACEHOLDER] * n_ctx) + f" {name}." for name in class_names]
    length = backbone.context_length(clip_model)
    longest = max(len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"])
    if longest > length:
        raise MethodError(
            f"n_ctx={n_ctx} context vectors and the longest class name take {longest} tokens, "
            f"more than the text tower's {length} positions; lower n_ctx"
        )
    tokens = backbone.tokenize(clip_model, tokenizer, texts)
    ids = tokens["input_ids"]
    start = int(tokenizer.bos_token_id is not None and bool(ids[0, 0] == tokenizer.bos_token_id))
    placeholders = ids[:, start : start + n_ctx]
    if placeholders.shape[1] != n_ctx or not bool((placeholders == placeholders[0, 0]).all()):
        raise MethodError(
            f"the tokenizer does not give one token per context placeholder {PLACEHOLDER!r}"
        )
    return ids, tokens["attention_mask"], start


def initial_context(clip_model, config: CoopConfig, tokenizer) -> torch.Tensor:
    token_embedding = clip_model.text_model.embeddings.token_embedding
    width = token_embedding.weight.shape[1]
    if not config.init:
        return torch.empty(config.n_ctx, width, device=token_embedding.weight.device).normal_(
            0.0, config.init_std
        )
    if tokenizer is None:
        raise MethodError("coop init from words needs the task's tokenizer")
    ids = tokenizer(config.init, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if len(ids) != config.n_ctx:
        raise MethodError(
            f"init={config.init!r} is {len(ids)} tokens; set n_ctx={len(ids)} to start from it"
        )
    with torch.no_grad():
        return token_embedding(ids.to(token_embedding.weight.device)).detach().clone()


class Coop(Method):
    name = "coop"
    config_class = CoopConfig
    description = "learned prompt context (16 vectors), towers frozen"
    changes_base_weights = False

    def prepare(
        self, clip_model: CLIPModel, config: CoopConfig, task: MethodTask | None = None
    ) -> TunedClip:
        train_only(clip_model, lambda name: False)
        tokenizer = task.tokenizer if task is not None else None
        context = initial_context(clip_model, config, tokenizer)
        if tokenizer is None:  # counting parameters: the context alone
            return TunedClip(clip_model, class_encoder=PromptContext(context))
        ids, mask, start = context_prompts(clip_model, tokenizer, task.class_names, config.n_ctx)
        device = context.device
        encoder = PromptContext(context, ids.to(device), mask.to(device), start)
        return TunedClip(clip_model, class_encoder=encoder)

    def interpolate(self, tuned, zero_shot, trained_keys, alpha: float) -> None:
        """WiSE-FT for learned context: class embeddings (1 - alpha) * zero-shot (the task's
        templates) + alpha * learned-prompt embeddings, renormalised (alpha 0: exactly
        zero-shot, 1: exactly the learned prompts)."""
        tuned.class_encoder.mix = alpha


register(Coop)
