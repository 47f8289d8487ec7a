"""BitFit: only the bias vectors inside the transformer blocks of the chosen towers.

Inside a block that is the attention q/k/v and output projection biases, both LayerNorm
biases and both MLP biases. Embeddings, the pre/post/final LayerNorms and the projection
heads stay frozen, as in the study's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from clipgauge.methods.base import (
    TOWERS,
    Method,
    MethodTask,
    TunedClip,
    check_choice,
    chosen_towers,
    train_roles,
)
from clipgauge.methods.registry import register

# Roles (clipgauge.models.backbone) of the biases inside a block.
BLOCK_BIASES = frozenset(
    f"{part}_bias" for part in ("q", "k", "v", "out", "norm1", "norm2", "mlp_in", "mlp_out")
)


@dataclass
class BitFitConfig:
    towers: str = field(
        default="both", metadata={"help": "which towers' block biases train: both, image, text"}
    )

    def __post_init__(self):
        check_choice("towers", self.towers, TOWERS)


class BitFit(Method):
    name = "bitfit"
    config_class = BitFitConfig
    description = "biases inside the transformer blocks"

    def prepare(
        self, clip_model: nn.Module, config: BitFitConfig, task: MethodTask | None = None
    ) -> TunedClip:
        towers = chosen_towers(config.towers)
        train_roles(
            clip_model,
            lambda p: p.block is not None and p.tower in towers and p.role in BLOCK_BIASES,
        )
        return TunedClip(clip_model)


register(BitFit)
