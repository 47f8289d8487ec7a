"""Machine-dependent settings: loader workers, pinning and mixed precision per device and cores
(what a run records of them: tests/test_training.py)."""

from types import SimpleNamespace

import pytest
import torch

from clipgauge.embeddings import embedding_loader, embedding_precision
from clipgauge.runtime import (
    RUNS_PER_MACHINE_ENV,
    LoaderSettings,
    resolve_loader_settings,
    resolve_mixed_precision,
    runs_per_machine,
)
from clipgauge.training import TrainConfig
from clipgauge.training.engine import resolve_runtime


@pytest.mark.parametrize(
    ("cores", "runs", "workers"),
    [(16, 1, 8), (16, 2, 7), (16, 4, 3), (16, 8, 1), (16, 32, 1), (4, 1, 3), (2, 1, 1), (1, 1, 1)],
)
def test_auto_workers_on_a_gpu_share_the_cores_among_runs(cores, runs, workers):
    settings = resolve_loader_settings(None, "cuda", cores, runs)
    assert settings == LoaderSettings(workers, True, True, 4)


def test_auto_on_the_cpu_decodes_in_the_main_process():
    assert resolve_loader_settings(None, "cpu", 64) == LoaderSettings(0, False, False, None)


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_workers_given_are_used_as_is(device_type):
    on_gpu = device_type == "cuda"
    assert resolve_loader_settings(3, device_type, 64, 1) == LoaderSettings(
        3, on_gpu, True, 4 if on_gpu else None
    )
    assert resolve_loader_settings(0, device_type, 64, 1) == LoaderSettings(0, on_gpu, False, None)


def test_loader_kwargs_leave_out_what_needs_workers():
    assert LoaderSettings(0, True, False, None).loader_kwargs() == {
        "num_workers": 0,
        "pin_memory": True,
    }
    kwargs = LoaderSettings(4, True, True, 4).loader_kwargs()
    assert kwargs == {
        "num_workers": 4,
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": 4,
    }
    assert LoaderSettings(4, True, True, 4).loader_kwargs(single_pass=True)[
        "persistent_workers"
    ] is (False)


@pytest.mark.parametrize(
    ("environ", "accelerators", "runs"),
    [
        ({}, 0, 1),
        ({}, 8, 8),
        ({"LOCAL_WORLD_SIZE": "4"}, 8, 4),
        ({RUNS_PER_MACHINE_ENV: "3", "LOCAL_WORLD_SIZE": "4"}, 8, 3),
        ({RUNS_PER_MACHINE_ENV: "zero", "LOCAL_WORLD_SIZE": "0"}, 2, 2),
    ],
)
def test_runs_per_machine(environ, accelerators, runs):
    assert runs_per_machine(environ, accelerators) == runs


@pytest.mark.parametrize(
    ("requested", "device_type", "bf16", "resolved"),
    [
        ("auto", "cuda", True, "bf16"),
        ("auto", "cuda", False, "no"),
        ("auto", "cpu", True, "no"),
        ("auto", "mps", True, "no"),
        ("no", "cuda", True, "no"),
        ("fp16", "cuda", True, "fp16"),
        ("bf16", "cpu", False, "bf16"),
    ],
)
def test_mixed_precision_resolution(requested, device_type, bf16, resolved):
    assert resolve_mixed_precision(requested, device_type, bf16) == resolved


def test_defaults_are_auto_and_resolve_to_fp32_without_workers_on_the_cpu():
    config = TrainConfig()
    assert (config.mixed_precision, config.num_workers) == ("auto", None)
    assert resolve_runtime(config, cpu=True) == {
        "device_type": "cpu",
        "mixed_precision": "no",
        "loader": {
            "num_workers": 0,
            "pin_memory": False,
            "persistent_workers": False,
            "prefetch_factor": None,
        },
    }


def test_embedding_autocast_only_for_fp32_weights(monkeypatch):
    import clipgauge.runtime

    monkeypatch.setattr(clipgauge.runtime.torch.cuda, "is_bf16_supported", lambda: True)
    gpu = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
    assert embedding_precision("auto", gpu) == "bf16"
    assert embedding_precision("no", gpu) == "no"
    assert embedding_precision(
        "auto", SimpleNamespace(**{**vars(gpu), "dtype": torch.float16})
    ) == ("no")
    cpu = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    assert embedding_precision("auto", cpu) == "no"


def test_embedding_loader_skips_workers_for_few_images():
    assert embedding_loader(100, None, torch.device("cuda")).num_workers == 0
    assert embedding_loader(100, 2, torch.device("cuda")).num_workers == 2
    assert embedding_loader(10_000, None, torch.device("cpu")).num_workers == 0
