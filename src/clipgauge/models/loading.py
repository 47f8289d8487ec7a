"""Load a model by name: a Hugging Face CLIP or SigLIP checkpoint (hub id, local folder or a
named embedded model) or an open_clip checkpoint (`open_clip:...`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPModel,
    SiglipImageProcessor,
    SiglipModel,
)

from clipgauge import DEFAULT_MODEL
from clipgauge.errors import ModelError
from clipgauge.models import hub, open_clip_source
from clipgauge.models.bundle import (
    DTYPES,
    ClipBundle,
    digest_file,
    quiet_transformers,
    resolve_device,
    resolve_dtype,
)

__all__ = ["DTYPES", "ClipBundle", "load_clip", "named_models", "checkpoint_fingerprint"]

MODEL_CLASSES = {"clip": CLIPModel, "siglip": SiglipModel}
PROCESSOR_CLASSES = {"clip": CLIPImageProcessor, "siglip": SiglipImageProcessor}
WEIGHT_SUFFIXES = (".safetensors",)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
)
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.json")
CONFIG_FILES = ("config.json", "preprocessor_config.json")


def named_models() -> dict[str, Path]:
    """Models shipped inside the package, by name (for example `world-clip`)."""
    assets = Path(__file__).resolve().parent.parent / "assets"
    return {p.name: p for p in sorted(assets.glob("*")) if (p / "config.json").is_file()}


def _model_type(path: Path) -> str:
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(
            f"{path} is not a CLIP checkpoint: it has no config.json. Expected a Hugging Face "
            "folder with config.json (model_type 'clip' or 'siglip'), model.safetensors, "
            "tokenizer files and preprocessor_config.json; for open_clip weights use "
            "--model open_clip:<arch>:<weights.safetensors>"
        )
    try:
        settings = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{config} is not readable JSON ({err})") from err
    if not isinstance(settings, dict):
        raise ModelError(f"{config} must hold a JSON object with model_type 'clip' or 'siglip'")
    model_type = settings.get("model_type")
    if model_type == "siglip2":
        raise ModelError(
            f"{path} is a SigLIP 2 NaFlex model (model_type 'siglip2'), which needs patch masks "
            "clipgauge does not build; use a FixRes SigLIP 2 checkpoint (model_type 'siglip')"
        )
    if model_type not in MODEL_CLASSES:
        raise ModelError(
            f"{path} holds a '{model_type}' model, not a CLIP or SigLIP checkpoint (config.json "
            "model_type must be 'clip' or 'siglip')"
        )
    return model_type


def _check_folder(path: Path) -> str:
    model_type = _model_type(path)
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise ModelError(
            f"{path} has no .safetensors weights; clipgauge loads weights only through "
            "safetensors. Convert the checkpoint with save_pretrained(..., safe_serialization=True)"
        )
    # Without them transformers quietly builds an empty tokenizer: every prompt would be <unk>.
    if not any((path / name).is_file() for name in TOKENIZER_VOCAB_FILES) and not any(
        path.glob("*.model")
    ):
        raise ModelError(
            f"{path} has no tokenizer files ({' or '.join(TOKENIZER_VOCAB_FILES)}); save the "
            "checkpoint's tokenizer into the folder with tokenizer.save_pretrained(...)"
        )
    return model_type


def _locate(name_or_path: str) -> tuple[Path, str]:
    """Map a name, folder or hub id to a local checkpoint folder, downloading only if allowed."""
    named = named_models()
    if name_or_path in named:
        return named[name_or_path], name_or_path
    if name_or_path == DEFAULT_MODEL:
        raise ModelError(
            "the embedded model 'world-clip' is not in this installation; build it with "
            "`clipgauge world pretrain --out src/clipgauge/assets/world-clip`"
        )
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{path} is a file; give the checkpoint FOLDER that holds config.json (or "
                f"open_clip:<arch>:{path} for open_clip weights)"
            )
        _check_folder(path)
        return path.resolve(), name_or_path
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ModelError(
            f"model folder {path} does not exist; give a CLIP checkpoint folder, a hub id or "
            "world-clip with --model"
        )
    return hub.snapshot(name_or_path), name_or_path


def checkpoint_fingerprint(path: Path) -> str:
    """sha256 over the config, preprocessing, tokenizer and weight files of a checkpoint folder."""
    h = hashlib.sha256()
    names = [n for n in CONFIG_FILES + TOKENIZER_FILES if (path / n).is_file()]
    names += sorted(p.name for p in path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    for name in names:
        h.update(name.encode() + b"\0")
        digest_file(path / name, h)
    return h.hexdigest()[:16]


def load_clip(
    name_or_path: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str = "fp32"
) -> ClipBundle:
    """Load a model with its tokenizer and image processor onto a device.

    `name_or_path` is a packaged model name (`world-clip`), a local Hugging Face folder or hub id
    of a CLIP or SigLIP (FixRes SigLIP 2 included) checkpoint, or `open_clip:<arch>:<weights>` /
    `open_clip:<folder>` (see `clipgauge.models.open_clip_source`). A hub id is used from the
    local cache when present and downloaded only when the hub is reachable.
    """
    if open_clip_source.is_open_clip(name_or_path):
        return open_clip_source.load_open_clip(name_or_path, device=device, dtype=dtype)
    path, name = _locate(name_or_path)
    model_type = _check_folder(path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        with quiet_transformers():
            model = MODEL_CLASSES[model_type].from_pretrained(
                path, dtype=torch_dtype, use_safetensors=True
            )
            tokenizer = AutoTokenizer.from_pretrained(path)
            processor = PROCESSOR_CLASSES[model_type].from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelError(f"could not load the checkpoint in {path}: {err}") from err
    except (SafetensorError, RuntimeError) as err:  # a damaged file, or shapes unlike config.json
        raise ModelError(
            f"the weights in {path} cannot be loaded ({err}); the .safetensors file is damaged or "
            "does not match config.json: download or save the checkpoint again"
        ) from err
    model.to(dev).eval()
    return ClipBundle(
        model=model,
        tokenizer=tokenizer,
        image_processor=processor,
        device=dev,
        dtype=torch_dtype,
        name=name,
        path=path,
        fingerprint=checkpoint_fingerprint(path),
    )
