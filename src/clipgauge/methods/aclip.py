"""A-CLIP: only the query, key and value projection WEIGHTS of the attention blocks.

No biases, output projections, MLPs, LayerNorms or logit scale train. Which towers, which
blocks and which of q/k/v are options; the defaults are the study's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from clipgauge.methods.base import (
    TOWERS,
    Method,
    MethodError,
    MethodTask,
    TunedClip,
    check_choice,
    chosen_towers,
    parse_blocks,
    train_roles,
)
from clipgauge.methods.registry import register
from clipgauge.models.backbone import num_blocks

PROJECTIONS = ("q", "k", "v")


@dataclass
class AClipConfig:
    towers: str = field(default="both", metadata={"help": "towers that train: both, image, text"})
    blocks: str = field(
        default="all",
        metadata={"help": "blocks that train: all, A-B (inclusive) or a comma list, e.g. 6-11"},
    )
    projections: tuple[str, ...] = field(
        default=PROJECTIONS, metadata={"help": "which attention projections train: any of q,k,v"}
    )

    def __post_init__(self):
        check_choice("towers", self.towers, TOWERS)
        self.projections = tuple(self.projections)
        bad = [p for p in self.projections if p not in PROJECTIONS]
        if bad or not self.projections:
            raise MethodError(f"projections={','.join(self.projections)}: choose from q,k,v")


class AClip(Method):
    name = "aclip"
    config_class = AClipConfig
    description = "attention q/k/v projection weights"

    def prepare(
        self, clip_model: nn.Module, config: AClipConfig, task: MethodTask | None = None
    ) -> TunedClip:
        chosen = {
            tower: parse_blocks(config.blocks, num_blocks(clip_model, tower), tower)
            for tower in chosen_towers(config.towers)
        }
        wanted = {f"{p}_weight" for p in config.projections}
        train_roles(
            clip_model,
            lambda p: (
                p.block is not None and p.block in chosen.get(p.tower, ()) and p.role in wanted
            ),
        )
        return TunedClip(clip_model)


register(AClip)
