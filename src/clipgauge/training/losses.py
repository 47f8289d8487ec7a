"""Training losses over class logits (B x C): the study's cross-entropy, or SigLIP's sigmoid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("cross-entropy", "sigmoid")


def class_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str, reduction: str = "mean"):
    """`loss` of class logits against class indices.

    cross-entropy: softmax over the class prompts (the study's loss, for CLIP and SigLIP alike).
    sigmoid: SigLIP's pairwise loss with the class prompts as the texts, -sum_c log
    sigmoid(z_ic * logit_ic) with z = +1 for the true class and -1 otherwise, per image; the
    logits carry SigLIP's logit_bias, which this loss (unlike cross-entropy) depends on.
    """
    if loss == "cross-entropy":
        return F.cross_entropy(logits, labels, reduction=reduction)
    if loss == "sigmoid":
        targets = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        per_image = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
        return per_image.mean() if reduction == "mean" else per_image.sum()
    raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
