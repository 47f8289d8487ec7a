"""Training hyperparameters (one dataclass) and named presets from presets.yaml."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from clipgauge.errors import ClipgaugeError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
LOSSES = ("cross-entropy", "sigmoid")
TRACKERS = ("tensorboard", "wandb", "mlflow", "all")
AUTO_PRESET = "auto"


class TrainConfigError(ClipgaugeError):
    """A training option or preset is invalid."""


@dataclass
class TrainConfig:
    """Everything that decides how a method trains (stored in every run's config.json).

    Each field's metadata is its documentation: `help`, and where they apply `choices` and
    extra CLI `aliases`; `clipgauge finetune` and the study spec's `training` keys are built
    from these fields, so a new field is an option everywhere at once."""

    optimizer: str = field(
        default="adamw", metadata={"help": "adamw or sgd (with momentum)", "choices": OPTIMIZERS}
    )
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    loss: str = field(
        default="cross-entropy",
        metadata={
            "help": "cross-entropy over the class prompts (the study's, also for SigLIP), or "
            "sigmoid: SigLIP's pairwise sigmoid loss over image x class-prompt pairs",
            "choices": LOSSES,
        },
    )
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=0.01, metadata={"help": "decoupled (AdamW) or L2 (SGD)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup, in optimizer steps"})
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "linear warmup as a fraction of all steps"}
    )
    schedule: str = field(
        default="cosine",
        metadata={"help": "after warmup: cosine or constant", "choices": SCHEDULES},
    )
    epochs: int = field(default=5, metadata={"help": "passes over the training images"})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimizer steps (overrides epochs)"}
    )
    batch_size: int = field(default=32, metadata={"help": "images per batch and process"})
    grad_accum: int = field(default=1, metadata={"help": "batches per optimizer step"})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 on a GPU that supports it, else no), no, bf16 or fp16 (GPU "
            "only); weights stay fp32",
            "choices": MIXED_PRECISION,
        },
    )
    seed: int = field(default=0, metadata={"help": "seeds initialisation and data order"})
    val_fraction: float = field(
        default=0.1, metadata={"help": "share of the training images held out for validation"}
    )
    val_max: int = field(default=5000, metadata={"help": "at most this many validation images"})
    num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader workers decoding images; none: auto (on a GPU, this machine's "
            "cores shared among its runs, at most 8; on the CPU, 0)",
            "aliases": ("--workers",),
        },
    )
    log_with: str | None = field(
        default=None,
        metadata={
            "help": "accelerate tracker: tensorboard, wandb, mlflow or all",
            "choices": TRACKERS,
        },
    )

    def __post_init__(self):
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise TrainConfigError(message)

        check(self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r}: use adamw or sgd")
        check(self.loss in LOSSES, f"loss {self.loss!r}: use cross-entropy or sigmoid")
        check(self.schedule in SCHEDULES, f"schedule {self.schedule!r}: use cosine or constant")
        check(
            self.mixed_precision in MIXED_PRECISION,
            f"mixed_precision {self.mixed_precision!r}: use auto, no, bf16 or fp16",
        )
        check(
            self.log_with is None or self.log_with in TRACKERS,
            f"log_with {self.log_with!r}: use one of {', '.join(TRACKERS)}",
        )
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(
            0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"
        )
        check(
            not (self.warmup_steps and self.warmup_ratio),
            "give warmup_steps or warmup_ratio, not both",
        )
        check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        check(
            self.max_steps is None or self.max_steps >= 1,
            f"max_steps must be at least 1, got {self.max_steps}",
        )
        check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        check(
            0 <= self.val_fraction < 1,
            f"val_fraction must be in [0, 1) (0 = no validation), got {self.val_fraction}",
        )
        check(self.val_max >= 1, f"val_max must be at least 1, got {self.val_max}")
        check(
            self.num_workers is None or self.num_workers >= 0,
            f"num_workers must be >= 0, got {self.num_workers}",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], origin: str = "training options") -> TrainConfig:
        """Build from a mapping (YAML, JSON or CLI values), converting types and naming
        unknown keys."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise TrainConfigError(
                f"{origin}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{k: _convert(k, v, hints[k], origin) for k, v in values.items()})


def _convert(name: str, value: Any, kind: Any, origin: str) -> Any:
    optional = type(None) in typing.get_args(kind)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise TrainConfigError(f"{origin}: {name} cannot be empty")
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if base is str and value is False:
        value = "no"  # YAML 1.1 reads a bare `no` (mixed_precision: no) as false
    try:
        if base is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise TrainConfigError(
            f"{origin}: {name}={value!r} is not a valid {base.__name__}"
        ) from None


def load_presets() -> dict[str, dict]:
    """The packaged presets: name -> {"description", "defaults", "methods": {method: {...}}}."""
    text = resources.files("clipgauge.training").joinpath("presets.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def resolve_train_config(
    method: str,
    overrides: Mapping[str, Any] | None = None,
    preset: str | None = AUTO_PRESET,
    model_name: str | None = None,
) -> tuple[TrainConfig, str | None]:
    """TrainConfig defaults < preset defaults < preset's per-method values < `overrides`.

    `preset="auto"` uses the preset named like the model when there is one (`world-clip`),
    else none. Returns the config and the preset actually applied.
    """
    presets = load_presets()
    if preset == "none":
        preset = None
    if preset == AUTO_PRESET:
        preset = model_name if model_name in presets else None
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise TrainConfigError(f"unknown preset {preset!r}; available: {', '.join(presets)}")
        entry = presets[preset]
        values.update(entry.get("defaults") or {})
        values.update((entry.get("methods") or {}).get(method) or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(
        values, f"preset {preset}" if preset else "training options"
    ), preset
