"""Full fine-tuning: every parameter of both towers, the projections and the logit scale."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPModel

from clipgauge.methods.base import Method, MethodTask, TunedClip, train_only
from clipgauge.methods.registry import register


@dataclass
class FullConfig:
    """Full fine-tuning has no options."""


class Full(Method):
    name = "full"
    config_class = FullConfig
    description = "every parameter"

    def prepare(
        self, clip_model: CLIPModel, config: FullConfig, task: MethodTask | None = None
    ) -> TunedClip:
        train_only(clip_model, lambda name: True)
        return TunedClip(clip_model)


register(Full)
