"""Trainable and total parameter counts of every method for a CLIP or SigLIP architecture."""

from __future__ import annotations

import torch
from transformers import CLIPModel, PretrainedConfig, SiglipModel

from clipgauge.methods.base import count_parameters
from clipgauge.methods.registry import get_method, method_names


def parameter_counts(
    clip_config: PretrainedConfig, names: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """{method: {"trainable": n, "total": n}} with each method's default options.

    Models are built on the meta device: only shapes are needed, so this is instant and
    allocates nothing even for large models.
    """
    counts = {}
    for name in names or method_names():
        method = get_method(name)
        with torch.device("meta"):
            model_class = SiglipModel if clip_config.model_type == "siglip" else CLIPModel
            tuned = method.prepare(model_class(clip_config), method.make_config())
        trainable, total = count_parameters(tuned)
        counts[name] = {"trainable": trainable, "total": total}
    return counts
