"""LP-FT: linear probing, then full fine-tuning from the probed head.

Kumar et al. (2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR) train a linear head on frozen features first and then fine-tune
the whole image encoder together with that head: a good head from the start keeps early
fine-tuning gradients from distorting the pretrained features, which improves
out-of-distribution accuracy. The paper fits the head to convergence (logistic regression on
frozen features) before fine-tuning, and the fine-tuning stage runs at a small learning rate.

Here both phases are one training run (one engine loop, one checkpoint, one trained-tensor
file): the first `lp_fraction` of the epochs (at least one; all of them if the run has only
one) train only the head, initialised as the zero-shot head (see `linear_probe`); the
remaining epochs train the image tower, its projection and the head at `ft_lr_scale` times
the run's learning rate (0.1 by default: our choice of "smaller", not a number from the
paper). The text tower and logit scale stay frozen: with a head, class prompts play no part.
During the head-only epochs the image tower runs without gradients on every batch (it trains
later, so its features are not cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers import CLIPModel

from clipgauge.methods.base import (
    IMAGE_TOWER_PREFIXES,
    MethodError,
    MethodTask,
    TunedClip,
    state_key,
    train_only,
)
from clipgauge.methods.linear_probe import LinearProbe, zero_shot_head
from clipgauge.methods.registry import register

HEAD_PREFIX = "class_encoder."


@dataclass
class LpFtConfig:
    lp_fraction: float = field(
        default=0.5,
        metadata={"help": "share of the epochs that train only the head, before fine-tuning"},
    )
    ft_lr_scale: float = field(
        default=0.1,
        metadata={"help": "learning-rate multiplier of the fine-tuning epochs"},
    )

    def __post_init__(self):
        if not 0 < self.lp_fraction < 1:
            raise MethodError(f"lp_fraction={self.lp_fraction} must be in (0, 1)")
        if self.ft_lr_scale <= 0:
            raise MethodError(f"ft_lr_scale={self.ft_lr_scale} must be positive")


def probe_epochs(lp_fraction: float, epochs: int) -> int:
    """Head-only epochs of a run of `epochs`: at least one, and one fine-tuning epoch left
    when the run has two or more."""
    return min(max(1, round(lp_fraction * epochs)), max(1, epochs - 1))


class LpFt(LinearProbe):
    name = "lp-ft"
    config_class = LpFtConfig
    description = "linear probe, then image tower + head fine-tuned"
    changes_base_weights = True

    def prepare(
        self, clip_model: CLIPModel, config: LpFtConfig, task: MethodTask | None = None
    ) -> TunedClip:
        train_only(clip_model, lambda name: ("clip." + name).startswith(IMAGE_TOWER_PREFIXES))
        tuned = TunedClip(clip_model)
        tuned.class_encoder = zero_shot_head(tuned, task)
        tuned.extras["config"] = config
        # Everything that trains in some phase: what is saved, loaded and optimised.
        tuned.extras["trained"] = {
            state_key(n): p for n, p in tuned.named_parameters() if p.requires_grad
        }
        return tuned

    def trained_parameters(self, tuned: TunedClip) -> dict[str, nn.Parameter]:
        return dict(tuned.extras["trained"])

    def on_epoch_start(self, tuned: TunedClip, epoch: int, epochs: int) -> float:
        """Head only for the probe epochs, then everything trained at ft_lr_scale."""
        config = tuned.extras["config"]
        probing = epoch <= probe_epochs(config.lp_fraction, epochs)
        for key, param in tuned.extras["trained"].items():
            param.requires_grad_(not probing or key.startswith(HEAD_PREFIX))
        return 1.0 if probing else config.ft_lr_scale

    def interpolate(self, tuned, zero_shot, trained_keys, alpha: float) -> None:
        """WiSE-FT: the image tower's weights interpolated with the zero-shot ones, and the
        head's class embeddings with the zero-shot class embeddings (see linear-probe)."""
        keys = [k for k in trained_keys if not k.startswith(HEAD_PREFIX)]
        super(LinearProbe, self).interpolate(tuned, zero_shot, keys, alpha)
        tuned.class_encoder.mix = alpha


register(LpFt)
