"""The Hugging Face hub, used from the local cache first and reached only when it answers."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from clipgauge.errors import ModelError

SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def hub_reachable(timeout: float = 3.0) -> bool:
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


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _unreachable(what: str, repo_id: str) -> ModelError:
    return ModelError(
        f"{what} is not a local folder nor in the Hugging Face cache, and the hub cannot be "
        "reached. Give a local checkpoint folder, `world-clip`, or download it first where there "
        f"is network (`hf download {repo_id}`)"
    )


def snapshot(repo_id: str) -> Path:
    """A hub model's folder: from the cache, else downloaded when the hub is reachable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=SNAPSHOT_PATTERNS, local_files_only=True)
        )
    except HFValidationError as err:
        raise ModelError(f"{repo_id!r} is neither an existing folder nor a hub model id") from err
    except Exception:  # noqa: BLE001 - not cached: fall through to a download attempt
        pass
    if offline() or not hub_reachable():
        raise _unreachable(f"model {repo_id!r}", repo_id)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=SNAPSHOT_PATTERNS))
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear message
        raise ModelError(f"could not download model {repo_id!r} from the hub: {err}") from err


def cached_file(repo_id: str, filenames: tuple[str, ...], what: str) -> Path:
    """The first of `filenames` in a hub repo, from the cache, else downloaded when reachable."""
    from huggingface_hub import hf_hub_download

    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached
            continue
    if offline() or not hub_reachable():
        raise _unreachable(what, repo_id)
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except Exception as err:  # noqa: BLE001
            errors.append(f"{filename}: {err}")
    raise ModelError(f"could not download {what} from {repo_id!r}: {'; '.join(errors)}")
