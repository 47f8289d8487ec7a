"""What every fine-tuning method shares: the tuned-model wrapper, the hook interface, options.

A method is a config dataclass plus a `Method` subclass with a few hooks the training engine
calls (`prepare`, `trained_state`, `load_trained`, `merge`, `trains_text_tower`) and a few
class attributes that say what it is (`trains_nothing`, `changes_base_weights`). Nothing
outside `clipgauge.methods` asks which method it runs; it only calls these hooks.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel

from clipgauge.encoding import ClassPrompts, encode_class_prompts, features
from clipgauge.errors import ClipgaugeError
from clipgauge.models import backbone
from clipgauge.models.backbone import ParamRole

TOWERS = ("both", "image", "text")
TOWER_PREFIXES = {tower: module + "." for tower, module in backbone.TOWERS.items()}
# Parameters that only shape text features: the engine recomputes class prompts when any trains.
# A task-specific class encoder (a head, learned prompt context) counts as text side too.
TEXT_SIDE_PREFIXES = (
    "clip.text_model.",
    "clip.text_projection.",
    "text_adapter.",
    "class_encoder.",
)
# Parameters of the image tower itself: while none trains, its features of an image never change.
IMAGE_TOWER_PREFIXES = ("clip.vision_model.", "clip.visual_projection.")
ADAPTER_PREFIXES = ("image_adapter.", "text_adapter.")


class MethodError(ClipgaugeError):
    """A method name, option or trained-weights file does not fit."""


class NotMergeableError(MethodError):
    """The method's trained model cannot be written as a plain CLIPModel (the reason says why)."""


class ClassEncoder(nn.Module):
    """A task-specific replacement of the class prompts: class embeddings a method learns for
    the classes of the task it was prepared for (a linear head, learned prompt context).

    `mix` is WiSE-FT's alpha for it: 1 gives the learned class embeddings, 0 exactly the
    zero-shot ones of the prompts asked for, and in between their interpolation, renormalised.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.mix = 1.0

    def learned_classes(self, tuned: TunedClip) -> torch.Tensor:
        """The learned class embeddings, C x D float32, L2-normalised."""
        raise NotImplementedError

    def forward(self, tuned: TunedClip, prompts: ClassPrompts) -> torch.Tensor:
        if prompts.num_classes != self.num_classes:
            raise MethodError(
                f"this model's class encoder was trained for {self.num_classes} classes, not "
                f"{prompts.num_classes}: embed another task's classes with the method's "
                "other_task_view (clipgauge.training.other_task_bundle)"
            )
        if self.mix == 0.0:
            return tuned.prompt_classes(prompts)
        learned = self.learned_classes(tuned)
        if self.mix == 1.0:
            return learned
        return F.normalize(torch.lerp(tuned.prompt_classes(prompts), learned, self.mix), dim=-1)


class TunedClip(nn.Module):
    """A CLIPModel plus optional adapters on its image and text embeddings, and optionally a
    task-specific `class_encoder` that replaces the class prompts (see ClassEncoder).

    It quacks like a CLIPModel for `clipgauge.embeddings` (`get_image_features`,
    `get_text_features`, `logit_scale`, `config`), but returns plain feature tensors.
    `extras` holds objects a method needs later but that must not be submodules (for LoRA,
    the peft wrapper around `clip`).
    """

    def __init__(
        self,
        clip: CLIPModel,
        image_adapter: nn.Module | None = None,
        text_adapter: nn.Module | None = None,
        class_encoder: ClassEncoder | None = None,
    ):
        super().__init__()
        self.clip = clip
        self.image_adapter = image_adapter
        self.text_adapter = text_adapter
        self.class_encoder = class_encoder
        self.extras: dict[str, Any] = {}

    @property
    def config(self):
        return self.clip.config

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Projected, un-normalised image embeddings (after the image adapter, if any)."""
        x = features(self.clip.get_image_features(pixel_values=pixel_values, **kwargs))
        return self.adapt_image(x)

    def adapt_image(self, tower_features: torch.Tensor) -> torch.Tensor:
        """What the method adds after the image tower (identity without an image adapter)."""
        return tower_features if self.image_adapter is None else self.image_adapter(tower_features)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        """Projected, un-normalised text embeddings (after the text adapter, if any)."""
        x = features(
            self.clip.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask, **kwargs
            )
        )
        return x if self.text_adapter is None else self.text_adapter(x)

    def encode_classes(self, prompts: ClassPrompts) -> torch.Tensor:
        """Normalised class embeddings (C x D): the class encoder's for its task when the
        method has one, else the prompts' by the one class-prompt encoder."""
        if self.class_encoder is not None:
            return self.class_encoder(self, prompts)
        return self.prompt_classes(prompts)

    def prompt_classes(self, prompts: ClassPrompts) -> torch.Tensor:
        """Normalised class embeddings (C x D) of the prompts through the text tower."""
        return encode_class_prompts(self.get_text_features, prompts)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        prompts: ClassPrompts | None = None,
        class_embeds: torch.Tensor | None = None,
        tower_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits, B x C: logit_scale.exp() * cos(image, class prompt) (+ SigLIP's bias).

        Give either tokenised class `prompts` (text features computed, with gradients) or
        precomputed normalised `class_embeds`; and either `pixel_values` or the frozen image
        tower's `tower_features` of them (computed once when nothing in the tower trains).
        Training goes through forward so that DistributedDataParallel sees it.
        """
        if class_embeds is None:
            if prompts is None:
                raise ValueError("forward needs class prompts or class_embeds")
            class_embeds = self.encode_classes(prompts)
        if tower_features is not None:
            image = F.normalize(self.adapt_image(tower_features), dim=-1)
        else:
            image = F.normalize(self.get_image_features(pixel_values), dim=-1)
        logits = self.logit_scale.exp() * image @ class_embeds.to(image.dtype).T
        bias = getattr(self.clip, "logit_bias", None)  # SigLIP: the same for every class
        return logits if bias is None else logits + bias


def state_key(name: str) -> str:
    """Trained-tensor key of a TunedClip parameter: CLIP names stay CLIPModel state-dict names."""
    return name.removeprefix("clip.")


def trainable_by_key(tuned: TunedClip) -> dict[str, nn.Parameter]:
    return {state_key(n): p for n, p in tuned.named_parameters() if p.requires_grad}


def train_only(model: nn.Module, predicate: Callable[[str], bool]) -> None:
    """Freeze every parameter of `model` except those whose name satisfies `predicate`."""
    for name, param in model.named_parameters():
        param.requires_grad_(predicate(name))


def train_roles(model: nn.Module, predicate: Callable[[ParamRole], bool]) -> None:
    """Freeze every parameter of a CLIPModel or SiglipModel except those whose role (tower,
    block, role: `clipgauge.models.backbone.role_of`) satisfies `predicate`."""
    train_only(model, lambda name: predicate(backbone.role_of(name)))


def chosen_towers(towers: str) -> tuple[str, ...]:
    """The towers named by a `towers` option: ("image", "text") for `both`."""
    return ("image", "text") if towers == "both" else (towers,)


def parse_blocks(spec: str, num_layers: int, tower: str) -> set[int]:
    """Block indices from `all`, `A-B` (inclusive) or a comma list of those, e.g. `0-3,8`."""
    if spec.strip() == "all":
        return set(range(num_layers))
    blocks: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise MethodError(f"blocks={spec!r}: {part!r} is not N or A-B (or use 'all')")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if first > last or last >= num_layers:
            raise MethodError(
                f"blocks={spec!r}: {part!r} is outside the {tower} tower's blocks "
                f"0-{num_layers - 1}"
            )
        blocks.update(range(first, last + 1))
    return blocks


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise MethodError(f"{option}={value!r} is not one of {', '.join(choices)}")


def _coerce(option: str, value: Any, kind: Any) -> Any:
    """Turn a CLI string (or a JSON value) into the field's type."""
    origin = typing.get_origin(kind)
    try:
        if origin is tuple:
            parts = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(p).strip() for p in parts if str(p).strip())
        if kind is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        name = getattr(kind, "__name__", str(kind))
        raise MethodError(f"option {option}={value!r} is not a valid {name}") from None


@dataclass(frozen=True)
class MethodTask:
    """What a method may know of the task it is prepared for: the class names, the prompt
    templates (class prompts are template-major) and the model's tokenizer. Methods that
    build class-aware parts (a zero-shot-initialised head, learned prompt context) use it."""

    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    tokenizer: Any = None

    @classmethod
    def of(cls, class_names, templates, tokenizer=None) -> MethodTask:
        return cls(tuple(class_names), tuple(templates), tokenizer)


class Method:
    """Base of every fine-tuning method. Subclasses set the class attributes and `prepare`.

    The default hooks treat "what trains" as exactly the parameters left with
    `requires_grad=True` by `prepare`, so most methods only select parameters.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    description: ClassVar[str] = ""
    # Whether training changes CLIP's own weights (what WiSE-FT interpolates).
    changes_base_weights: ClassVar[bool] = True
    # Whether the method trains nothing at all: the zero-shot baseline every gain is measured
    # against. A study evaluates such a method without a training run.
    trains_nothing: ClassVar[bool] = False

    def make_config(self, options: Mapping[str, Any] | None = None):
        """The method's config with `options` (CLI strings or typed values) applied."""
        options = dict(options or {})
        hints = typing.get_type_hints(self.config_class)
        fields = {f.name: f for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise MethodError(
                f"method {self.name} has no option(s) {', '.join(unknown)}; "
                f"options: {self.describe_options() or 'none'}"
            )
        values = {k: _coerce(k, v, hints[k]) for k, v in options.items()}
        return self.config_class(**values)

    def describe_options(self) -> str:
        """`name=default (help)` for each option, for error messages and help texts."""
        parts = []
        for f in dataclasses.fields(self.config_class):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = ",".join(default) if isinstance(default, tuple) else default
            parts.append(f"{f.name}={shown} ({f.metadata.get('help', '')})")
        return "; ".join(parts)

    def prepare(self, clip_model: CLIPModel, config, task: MethodTask | None = None) -> TunedClip:
        """Freeze, select trainable parameters and add modules; modifies `clip_model`.

        The engine always passes the `task`; counting parameters passes None, so a method
        whose parts depend on the task builds them with its own default task there."""
        raise NotImplementedError

    def trained_parameters(self, tuned: TunedClip) -> dict[str, nn.Parameter]:
        """The parameters training changes, by state key: those `prepare` left trainable."""
        return trainable_by_key(tuned)

    def trained_state(self, tuned: TunedClip) -> dict[str, torch.Tensor]:
        """Copies (on CPU) of exactly the tensors training changed, by state key."""
        params = self.trained_parameters(tuned)
        return {k: p.detach().to("cpu", copy=True) for k, p in params.items()}

    def load_trained(self, tuned: TunedClip, tensors: Mapping[str, torch.Tensor]) -> None:
        """Put tensors from `trained_state` back into a freshly prepared model."""
        params = self.trained_parameters(tuned)
        missing = sorted(set(params) - set(tensors))
        unexpected = sorted(set(tensors) - set(params))
        if missing or unexpected:
            raise MethodError(
                f"trained weights do not fit method {self.name} as configured: "
                f"{len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        with torch.no_grad():
            for key, param in params.items():
                tensor = tensors[key]
                if tensor.shape != param.shape:
                    raise MethodError(
                        f"trained tensor {key} has shape {tuple(tensor.shape)}, the model "
                        f"expects {tuple(param.shape)}"
                    )
                param.copy_(tensor.to(param.device, param.dtype))

    def interpolate(
        self,
        tuned: TunedClip,
        zero_shot: Mapping[str, torch.Tensor],
        trained_keys: Iterable[str],
        alpha: float,
    ) -> None:
        """WiSE-FT in place: move a trained model `alpha` of the way from the zero-shot model
        (alpha 0 gives exactly the zero-shot model, alpha 1 exactly the trained one).

        The default interpolates every trained tensor with its zero-shot value,
        (1 - alpha) * zero-shot + alpha * trained, which is WiSE-FT for methods that train
        CLIP's own weights. A method that adds modules overrides this and scales what it adds.
        `zero_shot` is the base model's state dict; `trained_keys` the run's trained tensors.
        """
        params = {state_key(n): p for n, p in tuned.named_parameters()}
        keys = list(trained_keys)
        added = [k for k in keys if k not in zero_shot]
        if added:
            raise MethodError(
                f"method {self.name} trains tensors the zero-shot model has not "
                f"({', '.join(added[:3])}); it must define how to interpolate them"
            )
        with torch.no_grad():
            for key in keys:
                param = params[key]
                param.copy_(torch.lerp(zero_shot[key].to(param), param, alpha))

    def merge(self, tuned: TunedClip) -> CLIPModel:
        """A plain CLIPModel with the same outputs; may consume `tuned`."""
        if tuned.image_adapter is not None or tuned.text_adapter is not None:
            raise NotMergeableError(f"method {self.name} adds modules outside CLIPModel")
        if tuned.class_encoder is not None:
            raise NotMergeableError(
                f"method {self.name} classifies with class embeddings it learned for its own "
                "task's classes (a head or learned prompt context), which no CLIPModel "
                "produces from class prompts. Use the run directly (`clipgauge evaluate --run`, "
                "or clipgauge.training.load_run in Python)"
            )
        return tuned.clip

    def other_task_view(self, tuned: TunedClip) -> TunedClip:
        """The model that embeds OTHER tasks' classes (forgetting; evaluating a run on another
        dataset): the tuned model without its task-specific class encoder, so other tasks
        are classified by their own prompts through the (possibly tuned) towers. Shares
        every module with `tuned`."""
        if tuned.class_encoder is None:
            return tuned
        return TunedClip(tuned.clip, tuned.image_adapter, tuned.text_adapter)

    def on_epoch_start(self, tuned: TunedClip, epoch: int, epochs: int) -> float:
        """Called by the engine before each training epoch (1-based, of `epochs`): a method
        with phases sets which of its trained parameters train in this epoch
        (requires_grad) and returns the epoch's learning-rate multiplier. It must depend
        on (epoch, epochs) only, so a resumed run repeats it. Default: 1.0, no change."""
        return 1.0

    def trains_image_tower(self, tuned: TunedClip) -> bool:
        """Whether anything inside the image tower trains (else its features are computed once
        per image and training runs on them)."""
        return any(
            p.requires_grad and n.startswith(IMAGE_TOWER_PREFIXES)
            for n, p in tuned.named_parameters()
        )

    def trains_text_tower(self, tuned: TunedClip) -> bool:
        """Whether anything that shapes text features trains (else they are computed once)."""
        return any(
            p.requires_grad and n.startswith(TEXT_SIDE_PREFIXES)
            for n, p in tuned.named_parameters()
        )


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
