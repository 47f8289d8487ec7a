"""Settings that depend on the machine a run lands on: DataLoader workers and pinning, and
mixed precision. "auto" values are resolved here, at run time, by pure functions of the
device type and core counts, so every choice can be tested without the hardware.

On an accelerator the model waits for images: decoding and preprocessing one image costs
milliseconds of CPU, a ViT-B/32 step on a GPU a fraction of that per image, so loaders use
worker processes, pinned memory, workers that live across epochs and a deeper prefetch. On the
CPU the model and the decoders compete for the same cores, and the main process is best
(measured in benchmarks/bench_datapath.py and docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

AUTO = "auto"
# Tells each run how many runs share this machine's cores (set by the study's worker pool).
RUNS_PER_MACHINE_ENV = "CLIPGAUGE_RUNS_PER_MACHINE"
MAX_AUTO_WORKERS = 8
ACCELERATOR_PREFETCH = 4  # batches each worker keeps ready (DataLoader's own default is 2)


@dataclass(frozen=True)
class LoaderSettings:
    """How a DataLoader feeds the model; recorded with every run."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None  # None: DataLoader's default (no workers: none applies)

    def loader_kwargs(self, single_pass: bool = False) -> dict:
        """DataLoader keyword arguments; `single_pass` loaders (one pass over the data) do
        not keep their workers alive."""
        kwargs = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers > 0:
            kwargs["persistent_workers"] = self.persistent_workers and not single_pass
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs

    def to_dict(self) -> dict:
        return asdict(self)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def runs_per_machine(
    environ: Mapping[str, str] | None = None, accelerators: int | None = None
) -> int:
    """How many runs share this machine's cores: the study's hint, else accelerate's local
    process count, else one run per accelerator (`accelerators`, default CUDA's count)."""
    environ = os.environ if environ is None else environ
    for name in (RUNS_PER_MACHINE_ENV, "LOCAL_WORLD_SIZE"):
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    if accelerators is None:
        accelerators = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return max(1, accelerators)


def resolve_loader_settings(
    num_workers: int | None, device_type: str, cores: int, runs: int = 1
) -> LoaderSettings:
    """Loader settings for a model on `device_type` ("cpu", "cuda", ...) with `cores` cores
    shared by `runs` runs. `num_workers` None is auto: on an accelerator one core per run is
    left to the main process and the rest decode (at most 8); on the CPU, none. A number
    given is used as is."""
    on_accelerator = device_type != "cpu"
    if num_workers is None:
        share = max(1, cores // max(1, runs))
        num_workers = min(MAX_AUTO_WORKERS, max(1, share - 1)) if on_accelerator else 0
    return LoaderSettings(
        num_workers=num_workers,
        pin_memory=on_accelerator,
        persistent_workers=num_workers > 0,
        prefetch_factor=ACCELERATOR_PREFETCH if on_accelerator and num_workers > 0 else None,
    )


def loader_settings(num_workers: int | None, device_type: str) -> LoaderSettings:
    """`resolve_loader_settings` for this machine's cores and runs."""
    runs = runs_per_machine() if device_type != "cpu" else 1
    return resolve_loader_settings(num_workers, device_type, available_cores(), runs)


def resolve_mixed_precision(requested: str, device_type: str, bf16_supported: bool) -> str:
    """ "auto" is bf16 on a CUDA GPU that supports it (weights stay fp32; matmuls run in
    bf16), else "no". Any other value is used as asked."""
    if requested != AUTO:
        return requested
    return "bf16" if device_type == "cuda" and bf16_supported else "no"


def mixed_precision(requested: str, device_type: str) -> str:
    """`resolve_mixed_precision` for this machine's GPU."""
    supported = device_type == "cuda" and torch.cuda.is_bf16_supported()
    return resolve_mixed_precision(requested, device_type, supported)


def accelerator_type(cpu: bool = False) -> str:
    """The device type accelerate trains on: "cpu" when forced or when there is no GPU."""
    if cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def autocast(device: torch.device | str, precision: str):
    """A context that runs the block in `precision` ("bf16", "fp16" or "no") on `device`."""
    device_type = torch.device(device).type
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return torch.autocast(device_type, dtype=dtypes.get(precision), enabled=precision in dtypes)
