"""Zero-shot: nothing trains. The baseline every gain and drop is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPModel

from clipgauge.methods.base import Method, MethodTask, TunedClip, train_only
from clipgauge.methods.registry import register


@dataclass
class ZeroShotConfig:
    """Zero-shot has no options."""


class ZeroShot(Method):
    name = "zeroshot"
    config_class = ZeroShotConfig
    description = "no training (the pretrained model as is)"
    changes_base_weights = False
    trains_nothing = True

    def prepare(
        self, clip_model: CLIPModel, config: ZeroShotConfig, task: MethodTask | None = None
    ) -> TunedClip:
        train_only(clip_model, lambda name: False)
        return TunedClip(clip_model)


register(ZeroShot)
