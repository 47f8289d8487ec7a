"""An on-disk tensor cache: safetensors files named by a content key, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipgauge.errors import CacheError

CACHE_VERSION = "1"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def default_cache_dir() -> Path:
    """`$CLIPGAUGE_CACHE`, else `$XDG_CACHE_HOME/clipgauge`, else `~/.cache/clipgauge`."""
    if os.environ.get("CLIPGAUGE_CACHE"):
        return Path(os.environ["CLIPGAUGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clipgauge"


def cache_key(**parts) -> str:
    """A stable hex key for a JSON-serialisable description of what was computed."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """mkstemp files are private (0600); give the result the permissions of a normal file."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """save_file to a temporary name beside `path`, then rename. Metadata values become JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        meta = {k: json.dumps(v) for k, v in metadata.items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


class TensorCache:
    """Tensors plus JSON metadata stored as `<dir>/<kind>/<key>.safetensors`."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, kind: str, key: str) -> Path:
        """`<dir>/<kind>/<key>.safetensors`; both must be plain names, so no entry leaves `dir`."""
        for part in (kind, key):
            if not _PLAIN_NAME.fullmatch(part):
                raise CacheError(f"cache kinds and keys are letters, digits, - and _; not {part!r}")
        return self.directory / kind / f"{key}.safetensors"

    def get(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The cached entry, or None if absent or unreadable (a damaged entry is removed)."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            meta = read_metadata(path)
            if meta.get("key") != key:
                raise ValueError("key mismatch")
            return load_file(str(path)), meta
        except (SafetensorError, OSError, ValueError):
            path.unlink(missing_ok=True)
            return None

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
        path = self.path(kind, key)
        atomic_save_tensors(path, tensors, {**metadata, "key": key})
        return path
