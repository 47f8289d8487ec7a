"""BitFit: only the bias vectors inside the transformer blocks of the chosen towers.

Inside a block that is the attention q/k/v and output projection biases, both LayerNorm
biases and both MLP biases. Embeddings, the pre/post/final LayerNorms and the projection
heads stay frozen, as in the study's configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from transformers import CLIPModel

from clipgauge.methods.base import (
    BLOCK_PARAM,
    TOWERS,
    Method,
    MethodTask,
    TunedClip,
    check_choice,
    tower_prefixes,
    train_only,
)
from clipgauge.methods.registry import register

BLOCK_BIASES = re.compile(
    r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|layer_norm1|layer_norm2|mlp\.fc1|mlp\.fc2)\.bias"
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
        self, clip_model: CLIPModel, config: BitFitConfig, task: MethodTask | None = None
    ) -> TunedClip:
        prefixes = tower_prefixes(config.towers)

        def selected(name: str) -> bool:
            match = BLOCK_PARAM.match(name)
            return (
                match is not None
                and name.startswith(prefixes)
                and BLOCK_BIASES.fullmatch(match[3]) is not None
            )

        train_only(clip_model, selected)
        return TunedClip(clip_model)


register(BitFit)
