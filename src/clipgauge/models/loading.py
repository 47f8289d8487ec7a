"""Load any Hugging Face CLIP checkpoint (hub id, local folder or a named embedded model)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
from transformers.utils import logging as hf_logging

from clipgauge import DEFAULT_MODEL
from clipgauge.errors import ModelError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_SUFFIXES = (".safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.json")
CONFIG_FILES = ("config.json", "preprocessor_config.json")


def named_models() -> dict[str, Path]:
    """Models shipped inside the package, by name (for example `world-clip`)."""
    assets = Path(__file__).resolve().parent.parent / "assets"
    return {p.name: p for p in sorted(assets.glob("*")) if (p / "config.json").is_file()}


@dataclass
class ClipBundle:
    """A CLIP model with everything needed to embed images and texts, and where it came from."""

    model: CLIPModel
    tokenizer: object
    image_processor: CLIPImageProcessor
    device: torch.device
    dtype: torch.dtype
    name: str
    path: Path
    fingerprint: str
    info: dict = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def provenance(self) -> dict:
        """What identifies this model in stored results."""
        return {
            "name": self.name,
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ModelError(
            f"--device {device!r} is not a torch device ({err}); use cpu, cuda or cuda:N"
        ) from err


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise ModelError(f"--dtype {dtype!r} is not supported; choose one of {sorted(DTYPES)}")
    if dtype == "fp16" and device.type == "cpu":
        raise ModelError("--dtype fp16 needs a GPU; on CPU use fp32 (default) or bf16")
    return DTYPES[dtype]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host accepts a TCP connection within `timeout` (DNS included)."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    result = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _check_folder(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(
            f"{path} is not a CLIP checkpoint: it has no config.json. Expected a Hugging Face "
            "folder with config.json (model_type 'clip'), model.safetensors, tokenizer files and "
            "preprocessor_config.json"
        )
    try:
        settings = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{config} is not readable JSON ({err})") from err
    if not isinstance(settings, dict):
        raise ModelError(f"{config} must hold a JSON object with model_type 'clip'")
    model_type = settings.get("model_type")
    if model_type != "clip":
        raise ModelError(
            f"{path} holds a '{model_type}' model, not a CLIP checkpoint (config.json model_type "
            "must be 'clip')"
        )
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
            raise ModelError(f"{path} is a file; give the checkpoint FOLDER that holds config.json")
        _check_folder(path)
        return path.resolve(), name_or_path
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ModelError(
            f"model folder {path} does not exist; give a CLIP checkpoint folder, a hub id or "
            "world-clip with --model"
        )
    return _from_hub(name_or_path), name_or_path


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except HFValidationError as err:
        raise ModelError(f"{repo_id!r} is neither an existing folder nor a hub model id") from err
    except Exception:  # noqa: BLE001 - not cached: fall through to a download attempt
        pass
    if _offline() or not _hub_reachable():
        raise ModelError(
            f"model {repo_id!r} is not a local folder nor in the Hugging Face cache, and the hub "
            "cannot be reached. Give a local checkpoint folder, `world-clip`, or download it first "
            f"where there is network (`hf download {repo_id}`)"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear message
        raise ModelError(f"could not download model {repo_id!r} from the hub: {err}") from err


def _digest_file(path: Path, h: hashlib._Hash) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)


def checkpoint_fingerprint(path: Path) -> str:
    """sha256 over the config, preprocessing, tokenizer and weight files of a checkpoint folder."""
    h = hashlib.sha256()
    names = [n for n in CONFIG_FILES + TOKENIZER_FILES if (path / n).is_file()]
    names += sorted(p.name for p in path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    for name in names:
        h.update(name.encode() + b"\0")
        _digest_file(path / name, h)
    return h.hexdigest()[:16]


@contextmanager
def _quiet_transformers():
    """Hide per-load weight progress bars and the expected 'no torchvision, using the PIL image
    processor' notice; real errors still raise."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_clip(
    name_or_path: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str = "fp32"
) -> ClipBundle:
    """Load a CLIP checkpoint with its tokenizer and image processor onto a device.

    `name_or_path` is a packaged model name (`world-clip`), a local HF folder or a hub id; a hub
    id is used from the local cache when present and downloaded only when the hub is reachable.
    """
    path, name = _locate(name_or_path)
    _check_folder(path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        with _quiet_transformers():
            model = CLIPModel.from_pretrained(path, dtype=torch_dtype, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(path)
            processor = CLIPImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelError(f"could not load the CLIP checkpoint in {path}: {err}") from err
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
