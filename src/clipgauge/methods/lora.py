"""LoRA through Hugging Face peft: low-rank updates on chosen projections of every block.

Defaults follow the study's follow-up code: query and value projections of both towers,
rank 16, A ~ N(0, 0.02), B = 0 (so training starts from the pretrained model) and a fixed
scale alpha / rank = 0.2.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import torch
from transformers import CLIPModel

from clipgauge.methods.base import (
    TOWER_PREFIXES,
    TOWERS,
    Method,
    MethodError,
    MethodTask,
    TunedClip,
    check_choice,
)
from clipgauge.methods.registry import register

PEFT_MODEL = "peft_model"


@dataclass
class LoraOptions:
    rank: int = field(default=16, metadata={"help": "rank r of each low-rank update"})
    alpha: float = field(
        default=3.2,
        metadata={"help": "LoRA alpha; the update is scaled by alpha/rank (3.2/16 = 0.2)"},
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"),
        metadata={"help": "module names inside each block to adapt, e.g. q_proj,k_proj,v_proj"},
    )
    towers: str = field(default="both", metadata={"help": "towers adapted: both, image, text"})
    init_std: float = field(default=0.02, metadata={"help": "std of the normal init of A"})

    def __post_init__(self):
        check_choice("towers", self.towers, TOWERS)
        self.target_modules = tuple(self.target_modules)
        if self.rank < 1:
            raise MethodError(f"rank={self.rank} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise MethodError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.target_modules:
            raise MethodError("target_modules is empty; name at least one module, e.g. q_proj")


class Lora(Method):
    name = "lora"
    config_class = LoraOptions
    description = "low-rank updates (peft) on q/v projections"

    def prepare(
        self, clip_model: CLIPModel, config: LoraOptions, task: MethodTask | None = None
    ) -> TunedClip:
        from peft import LoraConfig, get_peft_model

        towers = [
            TOWER_PREFIXES[t].rstrip(".") for t in ("image", "text") if config.towers in ("both", t)
        ]
        targets = "|".join(re.escape(m) for m in config.target_modules)
        # peft full-matches a string target against module names: this pins the blocks.
        pattern = rf"({'|'.join(towers)})\.encoder\.layers\.\d+\.(.+\.)?({targets})"
        lora_config = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=pattern,
            bias="none",
        )
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                peft_model = get_peft_model(clip_model, lora_config)
        except ValueError as err:
            targets = ",".join(config.target_modules)
            raise MethodError(f"lora target_modules={targets}: {err}") from err
        with torch.no_grad():
            for name, param in clip_model.named_parameters():
                if ".lora_A." in name:
                    param.normal_(0.0, config.init_std)
        tuned = TunedClip(clip_model)
        tuned.extras[PEFT_MODEL] = peft_model
        return tuned

    def interpolate(self, tuned, zero_shot, trained_keys, alpha: float) -> None:
        """WiSE-FT: scale each update B @ A by alpha (B *= alpha), which is exactly the
        interpolation of the merged weights with the zero-shot ones."""
        with torch.no_grad():
            for name, param in tuned.named_parameters():
                if ".lora_B." in name:
                    param.mul_(alpha)

    def merge(self, tuned: TunedClip) -> CLIPModel:
        """Fold B @ A * scale into the base weights (peft merge_and_unload)."""
        return tuned.extras.pop(PEFT_MODEL).merge_and_unload()


register(Lora)
