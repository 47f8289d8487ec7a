"""Write a model as a Hugging Face checkpoint folder or as an open_clip checkpoint folder.

The open_clip folder holds `open_clip_model.safetensors` and `open_clip_config.json`
(`model_cfg`, `preprocess_cfg`, as open_clip's hub repositories do, plus a `clipgauge` block
with the token ids that make a round trip exact). A tokenizer other than OpenAI's BPE is saved
next to them in Hugging Face format, and clipgauge loads it from there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from clipgauge.errors import ModelError
from clipgauge.models import backbone
from clipgauge.models import open_clip_format as ocf
from clipgauge.models.build import save_clip
from clipgauge.models.loading import load_clip
from clipgauge.models.open_clip_tokenizer import OpenClipTokenizer

FORMATS = ("hf", "open_clip")
INTERPOLATIONS = {3: "bicubic", 2: "bilinear"}


def preprocess_config(processor) -> dict:
    """open_clip's preprocess_cfg of a CLIP image processor."""
    size = processor.size
    shortest = bool(getattr(processor, "do_center_crop", False)) and size.get("shortest_edge")
    resample = int(getattr(processor, "resample", 3))
    if resample not in INTERPOLATIONS:
        raise ModelError(f"image resampling {resample} has no open_clip equivalent")
    return {
        "mean": [float(x) for x in processor.image_mean],
        "std": [float(x) for x in processor.image_std],
        "interpolation": INTERPOLATIONS[resample],
        "resize_mode": "shortest" if shortest else "squash",
    }


def save_open_clip(model: torch.nn.Module, tokenizer, processor, out: str | Path) -> Path:
    """An open_clip folder of a CLIPModel; `open_clip:<out>` loads it back unchanged."""
    if backbone.family(model) != "clip":
        raise ModelError(
            f"a {backbone.family(model)} model cannot be written in open_clip's ViT-CLIP format; "
            "use --to hf"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = model.config.text_config
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(ocf.from_hf_state(state), out / ocf.WEIGHTS_FILE)
    token_ids = {
        "eos_token_id": text.eos_token_id,
        "bos_token_id": text.bos_token_id,
        "pad_token_id": text.pad_token_id,
    }
    settings = {
        "model_cfg": ocf.open_clip_config(model.config),
        "preprocess_cfg": preprocess_config(processor),
        "clipgauge": {"token_ids": token_ids},
    }
    (out / ocf.CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    if not isinstance(tokenizer, OpenClipTokenizer):
        tokenizer.save_pretrained(out)
    return out


def save_model(model, tokenizer, processor, out: str | Path, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise ModelError(f"--to {fmt!r}: choose one of {', '.join(FORMATS)}")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelError(f"--out {target} exists and is not an empty folder; give a new folder")
    if fmt == "open_clip":
        return save_open_clip(model, tokenizer, processor, target)
    return save_clip(target, model, tokenizer, processor)


def convert(model: str, to: str, out: str | Path) -> Path:
    """Load `model` (any --model spec) on the CPU and write it to `out` in format `to`."""
    bundle = load_clip(model, device="cpu")
    return save_model(bundle.model, bundle.tokenizer, bundle.image_processor, out, to)
