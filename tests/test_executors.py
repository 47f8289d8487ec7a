"""Choosing where a study's runs execute, without running one: executor options, one GPU per
worker process, sizing Ray tasks to a cluster, the `resources` spec key, and Ray staying an
optional import."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from multiprocessing import get_context

import numpy as np
import pytest

from clipgauge.cli import main
from clipgauge.errors import ClipgaugeError
from clipgauge.study import runner
from clipgauge.study.executors import (
    RunOutcome,
    check_executor_options,
    choose_executor,
    take_gpu,
    visible_gpus,
    worker_gpu,
)
from clipgauge.study.ray_executor import (
    RayExecutor,
    TaskResources,
    fit_resources,
    pack_outcome,
    runs_at_once,
    unpack_outcome,
)
from clipgauge.study.schema import RunResources
from clipgauge.study.spec import SpecError, parse_spec

MINIMAL = {"tasks": {"sizes": {"train_domains": [["photo"]]}}}


def test_the_executor_defaults_to_workers_when_asked_for_several():
    assert choose_executor(None, 1, 10) == "local"
    assert choose_executor(None, 4, 10) == "processes"
    assert choose_executor(None, 4, 1) == "local"  # one run left: no pool to start
    assert choose_executor("processes", 1, 10) == "processes"
    assert choose_executor("ray", 1, 1) == "ray"
    assert choose_executor("local", 1, 10) == "local"


@pytest.mark.parametrize(
    "name, workers, options, message",
    [
        ("gpu", 1, {}, "--executor 'gpu' is not one of local, processes, ray"),
        (None, 0, {}, "--workers 0 must be at least 1"),
        ("local", 2, {}, "use --executor processes, not local"),
        ("ray", 2, {}, "does not go with --executor ray"),
        (None, 1, {"ray_address": "auto"}, "--ray-address goes with --executor ray"),
        ("processes", 2, {"storage": "/shared"}, "--storage goes with --executor ray"),
    ],
)
def test_options_that_do_not_go_together_are_clear_errors(name, workers, options, message):
    with pytest.raises(ClipgaugeError, match=message):
        check_executor_options(name, workers, **options)


def test_the_cli_passes_executor_options_to_run_study(monkeypatch, capsys):
    seen = {}

    def fake_run_study(spec, out, **kwargs):
        seen.update(kwargs, spec=spec, out=out)
        raise ClipgaugeError("stop here")

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    argv = ["study", "s.yaml", "--out", "o", "--executor", "ray", "--ray-address", "auto"]
    assert main([*argv, "--storage", "/shared/runs"]) == 2
    assert seen["executor"] == "ray" and seen["ray_address"] == "auto"
    assert seen["storage"] == "/shared/runs" and seen["workers"] == 1
    assert main(["study", "s.yaml", "--workers", "3"]) == 2
    assert (seen["executor"], seen["workers"], seen["storage"]) == (None, 3, None)
    capsys.readouterr()


def test_a_bad_combination_fails_before_the_spec_is_read(capsys):
    code = main(["study", "no-such-spec.yaml", "--executor", "local", "--workers", "2"])
    assert code == 2
    assert "use --executor processes" in capsys.readouterr().err


# one GPU per worker process


def test_visible_gpus_read_cuda_visible_devices_else_count():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": " 1 , 0 "}) == ["1", "0"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == ["0"]  # CUDA stops at -1
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5a1b,GPU-77c0"}) == ["GPU-5a1b", "GPU-77c0"]
    assert visible_gpus({}, device_count=lambda: 3) == ["0", "1", "2"]
    assert visible_gpus({}, device_count=lambda: 0) == []


def test_workers_take_gpus_in_turn():
    assert [worker_gpu(i, ["0", "1", "2"]) for i in range(7)] == list("0120120")
    assert [worker_gpu(i, ["5", "7"]) for i in range(3)] == ["5", "7", "5"]
    assert worker_gpu(0, []) is None and worker_gpu(3, []) is None


def test_each_worker_process_sees_only_its_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    counter = get_context("spawn").Value("i", 0)  # what ProcessExecutor hands its workers
    assert take_gpu(counter, ["0", "1"]) == "0"
    assert take_gpu(counter, ["0", "1"]) == "1"
    assert take_gpu(counter, ["0", "1"]) == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert take_gpu(counter, []) is None and "CUDA_VISIBLE_DEVICES" not in os.environ


# sizing Ray tasks to the cluster


def node(cpus: float, gpus: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": cpus, "memory": 1e9} | ({"GPU": gpus} if gpus else {})
    return {"Alive": alive, "Resources": resources}


def test_a_cluster_without_gpus_runs_on_cpus_and_says_so():
    task, notes = fit_resources(RunResources(gpus_per_run=1, cpus_per_run=1), [node(2)])
    assert task == TaskResources(cpus=1, gpus=0)
    assert notes == ["the Ray cluster has no GPUs: runs go on CPUs (resources.gpus_per_run 1 -> 0)"]
    assert runs_at_once(task, [node(2)]) == 2


def test_requests_are_cut_to_the_largest_node():
    task, notes = fit_resources(RunResources(gpus_per_run=2, cpus_per_run=32), [node(8, 1)])
    assert task == TaskResources(cpus=8, gpus=1)
    assert len(notes) == 2 and "no Ray node has 2 GPUs" in notes[0]
    assert "no Ray node has 32 CPUs: each run asks for 8" in notes[1]
    # the CPUs that count are those of nodes with enough GPUs; dead nodes do not count
    nodes = [node(64), node(8, 4), node(128, 8, alive=False)]
    task, notes = fit_resources(RunResources(gpus_per_run=1, cpus_per_run=16), nodes)
    assert task == TaskResources(cpus=8, gpus=1) and len(notes) == 1
    with pytest.raises(ClipgaugeError, match="no node with a CPU"):
        fit_resources(RunResources(), [node(0), node(4, alive=False)])


def test_a_gpu_cluster_keeps_the_spec_and_fills_every_gpu():
    head, workers = node(8), [node(16, 4), node(16, 4)]
    task, notes = fit_resources(RunResources(), [head, *workers])
    assert task == TaskResources(cpus=4, gpus=1) and notes == []
    assert runs_at_once(task, [head, *workers]) == 8  # the head has no GPU
    assert runs_at_once(TaskResources(cpus=4, gpus=0.5), [node(16, 1)]) == 2  # CPUs limit
    assert runs_at_once(TaskResources(cpus=1, gpus=0.25), [node(16, 1)]) == 4
    assert runs_at_once(TaskResources(cpus=4, gpus=1), [node(2)]) == 1  # never 0


def test_outcomes_travel_with_packed_flags():
    flags = np.array([True, False, True, True, False, False, True, False, True])
    outcome = RunOutcome([("id", "sizes", "photo", "acs", 0.5)], "", 1.5, [("id", "s", "p", flags)])
    packed = pack_outcome(outcome)
    assert packed.predictions == [("id", "s", "p", (9, np.packbits(flags).tobytes()))]
    back = unpack_outcome(packed)
    assert back.rows == outcome.rows and back.seconds == 1.5
    assert back.predictions[0][:3] == ("id", "s", "p")
    assert np.array_equal(back.predictions[0][3], flags) and back.predictions[0][3].dtype == bool


# the resources spec key


def test_resources_default_to_one_gpu_and_four_cpus_per_run():
    assert parse_spec(MINIMAL).resources == RunResources(gpus_per_run=1, cpus_per_run=4)
    spec = parse_spec({**MINIMAL, "resources": {"gpus_per_run": 0.5, "cpus_per_run": 8}})
    assert spec.resources == RunResources(gpus_per_run=0.5, cpus_per_run=8)
    assert spec.to_dict()["resources"] == {"gpus_per_run": 0.5, "cpus_per_run": 8}
    assert parse_spec({**MINIMAL, "resources": {"gpus_per_run": 0}}).resources.gpus_per_run == 0


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"gpus_per_run": -1}, "resources.gpus_per_run must be a whole number >= 0"),
        ({"gpus_per_run": 1.5}, "or a fraction below 1"),
        ({"gpus_per_run": "one"}, "resources.gpus_per_run"),
        ({"gpus_per_run": True}, "resources.gpus_per_run"),
        ({"gpus_per_run": float("nan")}, "resources.gpus_per_run"),
        ({"cpus_per_run": 0}, "resources.cpus_per_run must be an integer >= 1"),
        ({"cpus_per_run": 2.5}, "resources.cpus_per_run must be an integer >= 1"),
        ({"gpus": 1}, r"unknown key 'gpus' in resources \(allowed: gpus_per_run, cpus_per_run\)"),
        ([1, 4], "resources must be a mapping"),
    ],
)
def test_bad_resources_are_spec_errors(resources, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**MINIMAL, "resources": resources})


# Ray is optional


def test_importing_clipgauge_does_not_import_ray():
    code = (
        "import sys, clipgauge, clipgauge.cli, clipgauge.study.runner, "
        "clipgauge.study.ray_executor; assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ClipgaugeError, match=r"pip install 'clipgauge\[ray\]'"):
        runner.run_study("no-such-spec.yaml", executor="ray")  # before the spec is read


def test_a_cluster_that_cannot_be_reached_is_a_clear_error(monkeypatch, tmp_path):
    def init(address=None):
        raise ConnectionError("Could not find any running Ray instance.")

    fake_ray = types.SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    spec = parse_spec(MINIMAL)
    runs = RayExecutor(spec, tmp_path, address="auto").run(["a run"], on_start=print)
    with pytest.raises(ClipgaugeError, match="cannot reach the Ray cluster at --ray-address auto"):
        next(runs)
