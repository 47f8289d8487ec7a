"""Pretrain `world-clip`: a small CLIP trained from scratch on captioned world images.

The loss is transformers' CLIP loss (symmetric cross-entropy over image-text similarities in a
batch). Sample i of the caption stream depends only on (seed, i), and torch runs with a fixed
thread count, so the same config on the same machine gives the same weights.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm

from clipgauge import __version__
from clipgauge.errors import ClipgaugeError
from clipgauge.models.build import OPENAI_MEAN, OPENAI_STD, new_clip, save_clip
from clipgauge.world.captions import (
    MAX_COUNT_WITH_POSITION,
    caption_for,
    max_caption_words,
    vocabulary,
)
from clipgauge.world.render import render
from clipgauge.world.scene import ATTRIBUTES, COUNTS, WORLD_VERSION, sample_scene
from clipgauge.world.stream import pretraining_stream
from clipgauge.world.styles import get_style

_POSITION_COUNTS = tuple(c for c in COUNTS if c <= MAX_COUNT_WITH_POSITION)


@dataclass
class PretrainConfig:
    """Everything that decides the pretrained weights (stored beside them)."""

    seed: int = 0
    # In all, the primer's included: as many as fit in 30 min on 2 cores (docs/world-clip.md).
    steps: int = 2400
    batch_size: int = 128
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    # The text tower's learning rate as a fraction of `lr`. At the full rate it merges shape
    # words long before the image tower tells those shapes apart, and two merged prompts give
    # their images no gradient to part (docs/world-clip.md).
    text_lr_scale: float = 0.1
    # ... and from the primer's end it rises linearly to this fraction at the last step, so the
    # text tower catches up with what the image tower has learnt by then.
    text_lr_scale_end: float = 1.0
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    # The image tower's MLP hidden units: 2 x width, not CLIP's 4 x. The image tower is most of
    # a step, and the narrower MLP buys time for steps at a small cost (docs/world-clip.md).
    vision_mlp_width: int = 256
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    projection_dim: int = 128
    # Both towers' MLP activation. OpenAI's "quick_gelu" (x * sigmoid(1.702 x)) runs as
    # separate elementwise ops, "gelu" as one fused CPU kernel, so a step is faster.
    hidden_act: str = "gelu"
    # "sincos": start the image tower's (learned) position embeddings from a 2-D sine-cosine
    # grid, as MAE does, instead of N(0, 0.02) noise that patch content drowns out.
    position_init: str = "sincos"
    position_scale: float = 0.2  # the sine-cosine codes' amplitude (patch content is ~0.3)
    # Both cores of the 2-core reference box (the 30 min budget). Weights are reproducible for a
    # given thread count and machine; a different thread count may change the last bits.
    threads: int = 2
    # Rare domains in pretraining are where the model later shows domain shift.
    domain_weights: dict[str, float] = field(
        default_factory=lambda: {"photo": 1.0, "cartoon": 1.0, "sketch": 0.5, "painting": 0.15}
    )
    mention: dict[str, float] | None = None  # odds of naming each attribute (captions.py)
    # Share of each batch made of contrast groups (the rest: random scenes), their size, and how
    # often each attribute is the one varied within a group.
    group_fraction: float = 0.5
    group_size: int = 4
    group_attributes: dict[str, float] = field(
        default_factory=lambda: {
            "shape": 0.4,
            "count": 0.15,
            "texture": 0.25,
            "colour": 0.05,
            "position": 0.05,
            "size": 0.1,
        }
    )
    # Scene constraints for a group that varies each attribute: the attribute is only
    # contrasted where it is clearly visible. A group of three or four objects has no single
    # position; small objects in threes and fours are a patch or two wide at 64 pixels, too
    # small for their shape or texture to show, so those groups hold one or two objects, and
    # texture groups large ones (counts and sizes: any scene).
    group_fixed: dict[str, dict[str, object]] = field(
        default_factory=lambda: {
            "position": {"count": list(_POSITION_COUNTS)},
            "shape": {"count": list(_POSITION_COUNTS)},
            "texture": {"count": list(_POSITION_COUNTS), "size": "large"},
        }
    )

    # The primer: the first `primer_steps` steps lock the text tower at its random start and
    # show one or two objects whose captions always name where they are (`primer_mention`).
    # Trained together from the start, the text tower learns to ignore position words within
    # ~50 steps, long before the image tower can see position, and neither recovers (zero-shot
    # positions stay at chance). With the text fixed, the image tower has to match the
    # captions' random embeddings and starts to encode position; then both towers train on the
    # main mix, and the text tower learns position words from it (docs/world-clip.md).
    # Colour is named at its usual odds: a primer silent on colour teaches the image tower to
    # ignore it.
    primer_steps: int = 250
    primer_mention: dict[str, float] = field(
        default_factory=lambda: {
            "shape": 0.0,
            "colour": 0.8,
            "texture": 0.0,
            "count": 0.0,
            "size": 0.0,
            "position": 1.0,
        }
    )

    def context_length(self) -> int:
        # room for <bos>, <eos> and the longest caption or prompt, rounded up
        return int(math.ceil((max_caption_words() + 2) / 8) * 8)


_GROUP_TAG = 0x47525550  # keeps contrast-group seeds apart from the caption stream's


def contrast_groups(seed: int, step: int, cfg: PretrainConfig) -> tuple[np.ndarray, list[str]]:
    """Hard negatives for the contrastive loss: groups of scenes that share everything (domain
    included) except one attribute, whose value differs across the group and is always named.

    With only random scenes, colour and position alone tell most captions in a batch apart and
    shape gets little gradient; groups make every attribute necessary. Colour is never the
    varied attribute in a domain that does not show it.
    """
    rng = np.random.default_rng(np.random.SeedSequence([_GROUP_TAG, seed, step]))
    n_groups = cfg.batch_size // cfg.group_size
    names = list(cfg.domain_weights)
    domain_p = np.array([cfg.domain_weights[n] for n in names], dtype=float)
    attrs = list(cfg.group_attributes)
    attr_p = np.array([cfg.group_attributes[a] for a in attrs], dtype=float)
    images = np.empty((n_groups * cfg.group_size, cfg.image_size, cfg.image_size, 3), np.uint8)
    captions = []
    for g in range(n_groups):
        domain = names[rng.choice(len(names), p=domain_p / domain_p.sum())]
        p = attr_p * np.array(
            [not (a == "colour" and not get_style(domain).shows_colour) for a in attrs]
        )
        varied = attrs[rng.choice(len(attrs), p=p / p.sum())]
        base = sample_scene(rng, **cfg.group_fixed.get(varied, {})).attributes()
        values = list(ATTRIBUTES[varied])
        picks = rng.choice(len(values), size=cfg.group_size, replace=len(values) < cfg.group_size)
        for j, v in enumerate(picks):
            scene = sample_scene(rng, **{**base, varied: values[v]})
            images[g * cfg.group_size + j] = render(scene, domain, cfg.image_size, rng)
            captions.append(caption_for(scene, domain, rng, {**(cfg.mention or {}), varied: 1.0}))
    return images, captions


def sincos_grid(grid: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position codes, (grid * grid, dim), row-major like ViT patches: half the
    channels encode the row, half the column, each at dim / 4 frequencies (MAE's recipe)."""
    if dim % 4:
        raise ValueError(f"sine-cosine position codes need a width divisible by 4, not {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    angles = pos[:, None] * omega[None, :]  # grid x dim/4
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)  # grid x dim/2
    rows = codes[:, None, :].expand(grid, grid, dim // 2)
    cols = codes[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], dim=2).reshape(grid * grid, dim).float()


def init_positions(model: torch.nn.Module, how: str, scale: float = 1.0) -> None:
    """Set the vision position embeddings' starting values ("random" keeps transformers' own)."""
    if how == "random":
        return
    if how != "sincos":
        raise ValueError(f"position_init must be 'random' or 'sincos', not {how!r}")
    embeddings = model.vision_model.embeddings
    grid = embeddings.image_size // embeddings.patch_size
    weight = embeddings.position_embedding.weight
    with torch.no_grad():
        weight[0].zero_()  # the class token's slot
        weight[1:].copy_(scale * sincos_grid(grid, weight.shape[1]))


def _pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 B x H x W x 3 -> normalised float B x 3 x H x W, as CLIPImageProcessor does at the
    native size (its resize and centre crop are the identity there)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: torch.nn.Module, weight_decay: float, text_lr_scale: float) -> list[dict]:
    """No weight decay on biases, norms, embeddings and the temperature; the text tower's
    groups carry `lr_scale` (train_step multiplies the step's learning rate by it) and
    `text` (whether they hold the text tower's weights)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name
        groups.setdefault((name.startswith("text_"), skip), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if skip else weight_decay,
            "lr_scale": text_lr_scale if text else 1.0,
            "text": text,
        }
        for (text, skip), params in sorted(groups.items())
    ]


def text_lr_scale_at(step: int, cfg: PretrainConfig) -> float:
    """The text tower's learning-rate scale at `step`: `text_lr_scale` up to the primer's end,
    then a straight line to `text_lr_scale_end` at the last step."""
    start = min(cfg.primer_steps, cfg.steps)
    last = cfg.steps - 1
    if step <= start or last <= start:
        return cfg.text_lr_scale
    return cfg.text_lr_scale + (step - start) / (last - start) * (
        cfg.text_lr_scale_end - cfg.text_lr_scale
    )


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.AdamW:
    """AdamW over `_param_groups`, with CLIP's betas and eps."""
    groups = _param_groups(model, cfg.weight_decay, cfg.text_lr_scale)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def initial_model(cfg: PretrainConfig):
    """The untrained CLIP (model, tokenizer, processor) that pretraining with `cfg` starts from."""
    torch.manual_seed(cfg.seed)
    model, tokenizer, processor = new_clip(
        vocabulary(),
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_width=cfg.vision_width,
        vision_layers=cfg.vision_layers,
        vision_heads=cfg.vision_heads,
        vision_mlp_width=cfg.vision_mlp_width,
        text_width=cfg.text_width,
        text_layers=cfg.text_layers,
        text_heads=cfg.text_heads,
        projection_dim=cfg.projection_dim,
        context_length=cfg.context_length(),
        hidden_act=cfg.hidden_act,
        seed=cfg.seed,
    )
    init_positions(model, cfg.position_init, cfg.position_scale)
    return model, tokenizer, processor


def primer_stream(cfg: PretrainConfig):
    """The primer's batches: one or two objects, captions named by `cfg.primer_mention`."""
    return pretraining_stream(
        cfg.seed,
        cfg.batch_size,
        cfg.image_size,
        cfg.domain_weights,
        cfg.primer_mention,
        fixed={"count": _POSITION_COUNTS},
    )


def train_step(model, tokenizer, optimizer, images: np.ndarray, captions: list[str], lr: float):
    """One contrastive step at learning rate `lr` (clipped gradients, temperature kept <= 100);
    returns the loss."""
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    out = model(
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
        pixel_values=_pixels(images),
        return_loss=True,
    )
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(out.loss.detach())


def pretrain(cfg: PretrainConfig, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Train a CLIP from scratch on the world's caption stream and save an HF folder."""
    if cfg.primer_steps < 0:
        raise ClipgaugeError(
            f"primer_steps (--primer-steps) must be >= 0 (0: no primer), not {cfg.primer_steps}"
        )
    if min(cfg.text_lr_scale, cfg.text_lr_scale_end) < 0:
        raise ClipgaugeError(
            "text_lr_scale and text_lr_scale_end must be >= 0, not "
            f"{cfg.text_lr_scale} and {cfg.text_lr_scale_end}"
        )
    if cfg.vision_mlp_width < 1:
        raise ClipgaugeError(
            f"vision_mlp_width (--vision-mlp-width) must be >= 1, not {cfg.vision_mlp_width}"
        )
    torch.set_num_threads(cfg.threads)
    model, tokenizer, processor = initial_model(cfg)
    model.train()
    optimizer = make_optimizer(model, cfg)
    n_grouped = int(round(cfg.batch_size * cfg.group_fraction / cfg.group_size)) * cfg.group_size
    n_grouped = min(n_grouped, cfg.batch_size - 1)  # at least one random scene per batch
    n_grouped -= n_grouped % cfg.group_size
    group_cfg = replace(cfg, batch_size=n_grouped)
    primer_steps = min(cfg.primer_steps, cfg.steps)
    primer = primer_stream(cfg)
    # The main stream goes on where the primer's samples end: no scene is drawn twice.
    stream = pretraining_stream(
        cfg.seed,
        cfg.batch_size - n_grouped,
        cfg.image_size,
        cfg.domain_weights,
        cfg.mention,
        start=primer_steps * cfg.batch_size,
    )
    text_params = [p for n, p in model.named_parameters() if n.startswith("text_")]
    log = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress)
    for step in bar:
        in_primer = step < primer_steps
        for p in text_params:
            p.requires_grad_(not in_primer)
        text_scale = text_lr_scale_at(step, cfg)
        for group in optimizer.param_groups:
            if group["text"]:
                group["lr_scale"] = text_scale
        if in_primer:
            images, captions = next(primer)
        else:
            images, captions = next(stream)
        if n_grouped and not in_primer:
            grouped, grouped_captions = contrast_groups(cfg.seed, step, group_cfg)
            images = np.concatenate([images, grouped])
            captions = captions + grouped_captions
        loss = train_step(model, tokenizer, optimizer, images, captions, _lr_at(step, cfg))
        if not math.isfinite(loss):
            raise RuntimeError(f"pretraining diverged at step {step} (loss {loss})")
        bar.set_postfix(loss=f"{loss:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        if step % 50 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": loss, "seconds": time.perf_counter() - start})
    seconds = time.perf_counter() - start
    model.eval()
    return _save(cfg, out_dir, model, tokenizer, processor, log, seconds)


def _save(cfg, out_dir, model, tokenizer, processor, log, seconds) -> Path:
    """Write to a temporary sibling folder, then swap it in: no half-written checkpoint."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_clip(tmp, model, tokenizer, processor)
    record = {
        "config": asdict(cfg),
        "context_length": cfg.context_length(),
        "world_version": WORLD_VERSION,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(seconds, 1),
        "final_loss": log[-1]["loss"] if log else None,
        "clipgauge_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "machine": platform.machine(),
        "log": log,
    }
    (tmp / "pretraining.json").write_text(json.dumps(record, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
