"""Load `open_clip:<arch>:<weights>` and `open_clip:<folder>` models as transformers CLIPModels.

`<arch>` is an open_clip model config name that clipgauge ships (`supported_architectures()`);
`<weights>` is a local `.safetensors` file or one of the arch's pretrained tags, looked up in
the local Hugging Face cache (downloaded only when the hub answers). `open_clip:<folder>` reads
`open_clip_config.json` and `open_clip_model.safetensors` from a folder, as `clipgauge convert
--to open_clip` writes them and as open_clip's hub repositories hold them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

try:  # transformers 5
    from transformers.initialization import no_init_weights
except ImportError:  # transformers 4
    from transformers.modeling_utils import no_init_weights

from clipgauge.errors import ModelError
from clipgauge.models import hub
from clipgauge.models import open_clip_format as ocf
from clipgauge.models.bundle import (
    ClipBundle,
    digest_file,
    quiet_transformers,
    resolve_device,
    resolve_dtype,
)
from clipgauge.models.open_clip_tokenizer import BPE_FILE, VOCAB_SIZE, open_clip_tokenizer

PREFIX = "open_clip:"
UNSAFE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
HUB_FILES = (ocf.WEIGHTS_FILE, "open_clip_pytorch_model.bin")
DEFAULT_PREPROCESS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
RESAMPLE = {"bicubic": 3, "bilinear": 2}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
CONVERT_HINT = (
    "clipgauge loads weights only through safetensors. Convert it once, safely: python -c "
    "\"import torch, safetensors.torch as st; sd = torch.load('IN', map_location='cpu', "
    "weights_only=True); sd = sd.get('state_dict', sd); st.save_file({k.removeprefix('module.'): "
    "v.contiguous() for k, v in sd.items()}, 'OUT.safetensors')\""
)


@dataclass
class OpenClipSource:
    """Where an open_clip model's weights, config and preprocessing come from."""

    spec: str
    weights: Path
    model_cfg: dict
    preprocess_cfg: dict = field(default_factory=lambda: dict(DEFAULT_PREPROCESS))
    extra: dict = field(default_factory=dict)  # clipgauge's own block of open_clip_config.json
    arch: str | None = None  # given in the spec, else the config sits next to the weights
    tag: str | None = None  # a pretrained tag, found in the Hugging Face cache

    def absolute_spec(self) -> str:
        """The spec with an absolute weights path (a run reloads its base model with it)."""
        if self.arch:
            return f"{PREFIX}{self.arch}:{self.tag or self.weights}"
        return f"{PREFIX}{self.weights}"


def is_open_clip(name: str) -> bool:
    return str(name).startswith(PREFIX)


def resolve(spec: str) -> OpenClipSource:
    """Parse an `open_clip:` model spec into weights and configs (nothing is loaded yet)."""
    rest = spec[len(PREFIX) :]
    arch, sep, weights = rest.partition(":")
    if sep and arch in ocf.supported_architectures():
        return _from_arch(spec, arch, weights)
    path = Path(rest).expanduser()
    if not path.exists():
        raise ModelError(
            f"--model {spec}: give open_clip:<arch>:<weights.safetensors or pretrained tag> "
            f"(arch one of {', '.join(ocf.supported_architectures())}) or open_clip:<folder> "
            f"with {ocf.CONFIG_FILE}"
        )
    folder = path if path.is_dir() else path.parent
    weights_path = path / ocf.WEIGHTS_FILE if path.is_dir() else path
    settings = _read_config(folder / ocf.CONFIG_FILE, spec)
    return OpenClipSource(
        spec,
        _check_weights(weights_path, spec),
        settings["model_cfg"],
        {**DEFAULT_PREPROCESS, **settings.get("preprocess_cfg", {})},
        settings.get("clipgauge", {}),
    )


def _from_arch(spec: str, arch: str, weights: str) -> OpenClipSource:
    model_cfg = ocf.architecture_config(arch)
    path = Path(weights).expanduser()
    if path.suffix or path.exists() or "/" in weights:
        return OpenClipSource(spec, _check_weights(path, spec), model_cfg, arch=arch)
    tags = ocf.pretrained_tags().get(arch, {})
    tag = weights.lower().replace("-", "_")
    if tag not in tags:
        raise ModelError(
            f"--model {spec}: {weights!r} is neither a local .safetensors file nor a pretrained "
            f"tag of {arch} (tags: {', '.join(tags) or 'none'})"
        )
    entry = tags[tag]
    if entry.get("quick_gelu"):  # as open_clip does for these weights
        model_cfg = {**model_cfg, "quick_gelu": True}
    found = hub.cached_file(entry["hf_hub"], HUB_FILES, f"open_clip weights {arch}:{tag}")
    preprocess = {k: entry[k] for k in DEFAULT_PREPROCESS if k in entry}
    preprocess = {**DEFAULT_PREPROCESS, **preprocess}
    weights_path = _check_weights(found, spec)
    return OpenClipSource(spec, weights_path, model_cfg, preprocess, arch=arch, tag=tag)


def _check_weights(path: Path, spec: str) -> Path:
    if path.suffix in UNSAFE_SUFFIXES:
        raise ModelError(f"--model {spec}: {path} is a pickle-based checkpoint. {CONVERT_HINT}")
    if not path.is_file():
        raise ModelError(f"--model {spec}: weights file {path} does not exist")
    if path.suffix != ".safetensors":
        raise ModelError(f"--model {spec}: {path} is not a .safetensors file. {CONVERT_HINT}")
    return path.resolve()


def _read_config(path: Path, spec: str) -> dict:
    if not path.is_file():
        raise ModelError(
            f"--model {spec}: {path} is missing; name the architecture instead, "
            "open_clip:<arch>:<weights.safetensors>"
        )
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{path} is not readable JSON ({err})") from err
    if not isinstance(settings, dict) or not isinstance(settings.get("model_cfg"), dict):
        raise ModelError(f"{path} must hold a JSON object with a 'model_cfg' object")
    return settings


def _tokenizer(source: OpenClipSource):
    """open_clip's BPE, or the Hugging Face tokenizer saved next to the weights."""
    folder = source.weights.parent
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(folder)
    text = source.model_cfg["text_cfg"]
    if text.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
        raise ModelError(
            f"--model {source.spec}: a text vocabulary of {text['vocab_size']} tokens is not "
            "OpenAI's BPE; save its Hugging Face tokenizer files next to the weights"
        )
    return open_clip_tokenizer(text.get("context_length", 77))


def _token_ids(source: OpenClipSource, tokenizer) -> dict[str, int]:
    """bos/eos/pad ids for the CLIPConfig, so that pooling matches open_clip's pool_type."""
    saved = source.extra.get("token_ids")
    if saved:
        return saved
    text = source.model_cfg["text_cfg"]
    eos = tokenizer.eos_token_id
    if text.get("pool_type", "argmax") == "eos":
        eos = text["eos_id"]
    elif eos != text.get("vocab_size", VOCAB_SIZE) - 1:
        eos = 2  # transformers' legacy rule: pool at the argmax token id, as open_clip does
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {"eos_token_id": eos, "bos_token_id": tokenizer.bos_token_id or 0, "pad_token_id": pad}


def image_processor(preprocess: dict, image_size: int) -> CLIPImageProcessor:
    """open_clip's eval transform as a CLIPImageProcessor (shortest-edge resize + centre crop,
    or a squash to the square)."""
    interpolation = preprocess.get("interpolation", "bicubic")
    if interpolation not in RESAMPLE or preprocess.get("resize_mode") not in ("shortest", "squash"):
        raise ModelError(
            f"open_clip preprocessing {interpolation!r}/{preprocess.get('resize_mode')!r} is not "
            "supported (bicubic or bilinear; shortest or squash)"
        )
    square = {"height": image_size, "width": image_size}
    squash = preprocess["resize_mode"] == "squash"
    return CLIPImageProcessor(
        size=square if squash else {"shortest_edge": image_size},
        crop_size=square,
        do_center_crop=not squash,
        resample=RESAMPLE[interpolation],
        image_mean=list(preprocess["mean"]),
        image_std=list(preprocess["std"]),
        do_convert_rgb=True,
    )


def fingerprint(source: OpenClipSource) -> str:
    """sha256 over the weights, the configs and the tokenizer data."""
    h = hashlib.sha256()
    settings = {
        "model_cfg": source.model_cfg,
        "preprocess_cfg": source.preprocess_cfg,
        **source.extra,
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    folder = source.weights.parent
    tokenizer_files = [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
    for path in [source.weights, *(tokenizer_files or [BPE_FILE])]:
        h.update(path.name.encode() + b"\0")
        digest_file(path, h)
    return h.hexdigest()[:16]


def build_model(source: OpenClipSource, tokenizer) -> CLIPModel:
    """The CLIPModel of a source whose config `load_open_clip` has checked."""
    try:
        state = load_file(source.weights)
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{source.weights} cannot be read as safetensors ({err})") from err
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    converted = ocf.to_hf_state(state, str(source.weights))
    config = ocf.hf_config(source.model_cfg, **_token_ids(source, tokenizer))
    # Every parameter is overwritten by the strict load below: skip the random initialisation
    # (2.4 s of a 4.7 s ViT-B/32 load here).
    with quiet_transformers(), no_init_weights():
        model = CLIPModel(config)
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as err:
        raise ModelError(
            f"the weights in {source.weights} do not match the open_clip config of "
            f"{source.spec} ({str(err).splitlines()[-1].strip()})"
        ) from err
    return model


def load_open_clip(spec: str, *, device: str | None = None, dtype: str = "fp32") -> ClipBundle:
    """An open_clip checkpoint as a ClipBundle around an equivalent transformers CLIPModel."""
    source = resolve(spec)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    ocf.check_representable(source.model_cfg, f"--model {spec}")
    tokenizer = _tokenizer(source)
    model = build_model(source, tokenizer)
    model.to(dev, torch_dtype).eval()
    image_size = source.model_cfg["vision_cfg"].get("image_size", 224)
    return ClipBundle(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor(source.preprocess_cfg, image_size),
        device=dev,
        dtype=torch_dtype,
        name=spec,
        path=source.weights,
        fingerprint=fingerprint(source),
        info={
            "open_clip": {"model_cfg": source.model_cfg, "preprocess_cfg": source.preprocess_cfg},
            "spec": source.absolute_spec(),
        },
        source="open_clip",
    )
