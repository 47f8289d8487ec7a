"""Epoch checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds `state-epoch<N>.safetensors` (trained tensors, best-epoch tensors,
optimizer tensors) and `state.json` (scalars, the optimizer/scheduler structure, RNG states)
naming that file. state.json is written last, so an interruption at any point leaves the
previous complete checkpoint in place.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from clipgauge.cache import atomic_save_tensors, atomic_write_bytes
from clipgauge.errors import ClipgaugeError

STATE_JSON = "state.json"


class CheckpointError(ClipgaugeError):
    """A checkpoint is missing, incomplete or does not match the run."""


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of a nested state dict; tensors move to `tensors` under path keys."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True)
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        # Optimizer state is keyed by int parameter ids; JSON would turn them into strings.
        return {"__items__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def _bytes_b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _b64_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def rng_states() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states as JSON values."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _bytes_b64(torch.get_rng_state()),
        "cuda": [_bytes_b64(s) for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }


def set_rng_states(states: dict) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_b64_bytes(states["torch"]))
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_b64_bytes(s) for s in states["cuda"]])


def save_checkpoint(
    folder: Path,
    *,
    epoch: int,
    trained: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor],
    optimizer: dict | None,
    scheduler: dict | None,
    scalars: dict,
) -> Path:
    """Write the checkpoint of a finished epoch; older state files are removed afterwards."""
    tensors: dict[str, torch.Tensor] = {}
    structure = {
        "trained": flatten(trained, "trained", tensors),
        "best": flatten(best, "best", tensors),
        "optimizer": flatten(optimizer, "optimizer", tensors),
        "scheduler": flatten(scheduler, "scheduler", tensors),
    }
    name = f"state-epoch{epoch}.safetensors"
    atomic_save_tensors(folder / name, tensors, {"epoch": epoch})
    record = {
        "epoch": epoch,
        "tensors": name,
        "scalars": scalars,
        "structure": structure,
        "rng": rng_states(),
    }
    atomic_write_bytes(folder / STATE_JSON, json.dumps(record).encode())
    for old in folder.glob("state-epoch*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder


def load_checkpoint(folder: Path) -> dict:
    """{"epoch", "scalars", "rng", "trained", "best", "optimizer", "scheduler"}."""
    path = folder / STATE_JSON
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint to resume in {folder} (state.json is missing); the run stopped "
            "before its first epoch ended: start it again without --resume"
        )
    try:
        record = json.loads(path.read_text())
        name = record["tensors"]
        # A bare file name in this folder: state.json cannot point a load elsewhere.
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"tensors {name!r} is not a file name inside the checkpoint folder")
        tensors = load_file(str(folder / name))
        out = {k: record[k] for k in ("epoch", "scalars", "rng")}
        out.update({k: unflatten(v, tensors) for k, v in record["structure"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as err:
        raise CheckpointError(
            f"checkpoint in {folder} is unreadable ({err}); start the run again without "
            "--resume (into a new --out)"
        ) from None
    return out
