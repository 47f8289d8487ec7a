"""A-CLIP: only the query, key and value projection WEIGHTS of the attention blocks.

No biases, output projections, MLPs, LayerNorms or logit scale train. Which towers, which
blocks and which of q/k/v are options; the defaults are the study's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import CLIPModel

from clipgauge.methods.base import (
    BLOCK_PARAM,
    TOWER_PREFIXES,
    TOWERS,
    Method,
    MethodError,
    MethodTask,
    TunedClip,
    check_choice,
    parse_blocks,
    train_only,
)
from clipgauge.methods.registry import register

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
        self, clip_model: CLIPModel, config: AClipConfig, task: MethodTask | None = None
    ) -> TunedClip:
        layers = {
            "vision_model": clip_model.config.vision_config.num_hidden_layers,
            "text_model": clip_model.config.text_config.num_hidden_layers,
        }
        chosen = {}
        for tower in ("image", "text"):
            if config.towers in ("both", tower):
                tower_module = TOWER_PREFIXES[tower].rstrip(".")
                chosen[tower_module] = parse_blocks(config.blocks, layers[tower_module], tower)
        wanted = {f"self_attn.{p}_proj.weight" for p in config.projections}

        def selected(name: str) -> bool:
            match = BLOCK_PARAM.match(name)
            return (
                match is not None
                and match[1] in chosen
                and int(match[2]) in chosen[match[1]]
                and match[3] in wanted
            )

        train_only(clip_model, selected)
        return TunedClip(clip_model)


register(AClip)
