"""File permissions that hold even for root, so permission-denied paths are really exercised.

Root reads any file because of two Linux capabilities, CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH. `enforced_permissions` drops them from the calling thread's effective set
(capabilities are per thread; they stay in the permitted set) and raises them again afterwards,
so inside it the kernel refuses a `chmod 000` file to root as to anyone. For other users it does
nothing: the permission bits already apply. Code under test must run in the calling thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

import pytest

_CAPABILITY_VERSION_3 = 0x20080522
_FILE_ACCESS_CAPABILITIES = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _set_effective(libc, data, effective: int) -> bool:
    data[0].effective = effective
    return libc.capset(ctypes.byref(_Header(_CAPABILITY_VERSION_3, 0)), data) == 0


@contextlib.contextmanager
def enforced_permissions() -> Iterator[None]:
    """Within the block, this thread is refused files its permission bits do not allow."""
    if os.geteuid() != 0:
        yield
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.capget, libc.capset  # noqa: B018 - both must exist (Linux)
    except (OSError, AttributeError):
        pytest.skip("running as root without Linux capget/capset to drop file access")
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(_Header(_CAPABILITY_VERSION_3, 0)), data) != 0:
        pytest.skip("cannot read this thread's capabilities")
    saved = data[0].effective
    if not _set_effective(libc, data, saved & ~_FILE_ACCESS_CAPABILITIES):
        pytest.skip("cannot drop root's file-access capabilities")
    try:
        yield
    finally:
        assert _set_effective(libc, data, saved), "could not restore this thread's capabilities"
