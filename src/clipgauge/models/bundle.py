"""A loaded model with its tokenizer and image processor: the one object the rest of clipgauge
embeds with, whatever format the checkpoint came in."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from clipgauge.errors import ModelError
from clipgauge.models import backbone

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ClipBundle:
    """A CLIP-style model with everything needed to embed images and texts, and its origin.

    `model` is a transformers CLIPModel or SiglipModel (open_clip checkpoints are converted to a
    CLIPModel on load); `clipgauge.models.backbone` holds what differs between families.
    `source` is the checkpoint format it was loaded from: "hf" or "open_clip".
    """

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    device: torch.device
    dtype: torch.dtype
    name: str
    path: Path
    fingerprint: str
    info: dict = field(default_factory=dict)
    source: str = "hf"

    @property
    def family(self) -> str:
        return backbone.family(self.model)

    @property
    def context_length(self) -> int:
        return backbone.context_length(self.model)

    def tokenize(self, texts) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask, padded as this model family requires."""
        return backbone.tokenize(self.model, self.tokenizer, texts)

    @property
    def spec(self) -> str:
        """A --model value that loads this model again from anywhere on this machine."""
        return self.info.get("spec", str(self.path))

    def provenance(self) -> dict:
        """What identifies this model in stored results."""
        return {
            "spec": self.spec,
            "name": self.name,
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "family": self.family,
            "format": self.source,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }


def digest_file(path: Path, h) -> None:
    """Feed a file's bytes to the hashlib object `h` in 4 MiB chunks (checkpoint fingerprints)."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)


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


@contextmanager
def quiet_transformers():
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
