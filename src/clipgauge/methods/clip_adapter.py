"""CLIP-Adapter: residual bottleneck adapters on the image and text embeddings.

Each adapter is Linear(d, d/reduction, no bias) - ReLU - Linear(d/reduction, d, no bias) -
ReLU, mixed as ratio * adapter(x) + (1 - ratio) * x; the CLIP backbone stays frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import CLIPModel

from clipgauge.methods.base import (
    TOWERS,
    Method,
    MethodError,
    MethodTask,
    NotMergeableError,
    TunedClip,
    check_choice,
    train_only,
)
from clipgauge.methods.registry import register
from clipgauge.models.backbone import embed_dim


@dataclass
class ClipAdapterConfig:
    reduction: int = field(default=4, metadata={"help": "bottleneck width is d / reduction"})
    ratio: float = field(
        default=0.2, metadata={"help": "residual mix: ratio * adapter(x) + (1 - ratio) * x"}
    )
    towers: str = field(
        default="both", metadata={"help": "embeddings that get an adapter: both, image, text"}
    )

    def __post_init__(self):
        check_choice("towers", self.towers, TOWERS)
        if self.reduction < 1:
            raise MethodError(f"reduction={self.reduction} must be at least 1")
        if not 0 <= self.ratio <= 1:
            raise MethodError(f"ratio={self.ratio} must be in [0, 1]")


class Adapter(nn.Module):
    """ratio * relu(up(relu(down(x)))) + (1 - ratio) * x."""

    def __init__(self, dim: int, reduction: int, ratio: float, device=None, dtype=None):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.down = nn.Linear(dim, hidden, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(hidden, dim, bias=False, device=device, dtype=dtype)
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapted = torch.relu(self.up(torch.relu(self.down(x))))
        return self.ratio * adapted + (1.0 - self.ratio) * x


class ClipAdapter(Method):
    name = "clip-adapter"
    config_class = ClipAdapterConfig
    description = "bottleneck adapters on the embeddings"
    changes_base_weights = False

    def prepare(
        self, clip_model: CLIPModel, config: ClipAdapterConfig, task: MethodTask | None = None
    ) -> TunedClip:
        train_only(clip_model, lambda name: False)
        dim = embed_dim(clip_model)
        where = {"device": clip_model.logit_scale.device, "dtype": clip_model.logit_scale.dtype}

        def adapter(tower: str) -> Adapter | None:
            if config.towers not in ("both", tower):
                return None
            return Adapter(dim, config.reduction, config.ratio, **where)

        return TunedClip(clip_model, image_adapter=adapter("image"), text_adapter=adapter("text"))

    def interpolate(self, tuned, zero_shot, trained_keys, alpha: float) -> None:
        """WiSE-FT for adapters: scale what they add, x + alpha * (adapter(x) - x), i.e. the
        residual ratio times alpha (alpha 0: no adapter, the zero-shot model)."""
        for adapter in (tuned.image_adapter, tuned.text_adapter):
            if adapter is not None:
                adapter.ratio *= alpha

    def merge(self, tuned: TunedClip) -> CLIPModel:
        raise NotMergeableError(
            "clip-adapter cannot be merged into a plain CLIPModel: its adapters are a non-linear "
            "residual (ReLU bottleneck) applied after the projection heads, which no change to "
            "CLIP's linear weights reproduces. Use the run directly (`clipgauge evaluate --run`, "
            "or clipgauge.training.load_run in Python)"
        )


register(ClipAdapter)
