"""A fine-tuning run folder on disk: its files, and reading them back safely.

A run folder holds
  config.json          everything that decided the run (method and its options, training
                       options, data and split, templates, preprocessing, seed, base model)
  metrics.jsonl        one line per epoch
  trained.safetensors  ONLY the tensors the method trained (best epoch)
  result.json          best epoch, its validation accuracy, digest of the trained tensors
  checkpoint/          while training: the last finished epoch, for `--resume`
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from clipgauge.cache import atomic_write_bytes
from clipgauge.errors import ClipgaugeError

CONFIG_FILE = "config.json"


TRAINED_FILE = "trained.safetensors"


RESULT_FILE = "result.json"

RESUME_KEYS = ("method", "train", "data", "templates", "base_model.fingerprint")


LOAD_KEYS = (
    "base_model.path",
    "base_model.name",
    "base_model.dtype",
    "base_model.fingerprint",
    "method.name",
    "method.config",
    "data.split",
    "data.split_seed",
    "data.test_fraction",
    "data.train_domains",
    "data.class_names",
    "templates",
)


class RunError(ClipgaugeError):
    """A run folder is missing, unfinished, or does not match what is asked of it."""


def trained_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of trained tensors."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path} does not exist; is {path.parent} a clipgauge run folder?") from None
    except (OSError, ValueError) as err:
        raise RunError(f"{path} is unreadable ({err})") from err


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())


def _has(config: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return False
        config = config[part]
    return True


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, checked to hold everything loading the run reads."""
    path = run_dir / CONFIG_FILE
    config = read_json(path)
    missing = [key for key in LOAD_KEYS if not _has(config, key)]
    if missing:
        raise RunError(
            f"{path} lacks {', '.join(missing)}: it is damaged or was not written by "
            "`clipgauge finetune`; train the run again into a new --out"
        )
    return config


def read_trained_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's trained tensors, read only as safetensors."""
    path = run_dir / TRAINED_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise RunError(
            f"{path} is not a readable safetensors file ({err}); the run's weights are damaged "
            "or were replaced: train the run again into a new --out"
        ) from None


def lookup(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config
