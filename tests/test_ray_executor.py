"""Studies on a local Ray cluster (`--executor ray`): same numbers as in this process, a worker
killed mid-run is retried without duplicates, Ctrl-C cancels the runs in flight and a rerun
finishes the study, and storage the workers cannot write stops the study before any run.

One local Ray (2 CPUs, no dashboard, no token file in the home folder) serves every test.
Faults are planted in the workers by a setup hook: a training run that reaches a pause point
dies (SIGKILL) or hangs there while a switch file exists.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from test_study_runner import query, world_model, write_spec  # noqa: F401 - a fixture too

from clipgauge.errors import ClipgaugeError
from clipgauge.study.runner import run_study

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'clipgauge[ray]'")

TIMEOUT_S = 120  # every wait on Ray ends; a task asking for what no node has waits forever
ONE_CPU = "resources: {cpus_per_run: 1}\n"  # two runs at once; gpus_per_run stays 1: no GPUs
METRICS = (
    "SELECT run_id, protocol, eval_task, domain, name, value FROM metrics ORDER BY 1, 2, 3, 4, 5"
)
PREDICTIONS = (
    "SELECT run_id, protocol, eval_task, domain, n, correct FROM predictions ORDER BY 1, 2, 3, 4"
)
RUNS = "SELECT run_id, task, train_domains, method, seed, config, status, error FROM runs"


def plant_faults(kill_switch: str, hang_switch: str, fail_switch: str):
    """A worker setup hook: at `run-trained` a worker kills itself if it takes `kill_switch`
    (one worker can); at `train-start` training hangs while `hang_switch` exists and raises
    while `fail_switch` exists."""

    def install() -> None:
        from clipgauge.study import protocols
        from clipgauge.training import engine

        def run_trained(point: str) -> None:
            try:
                os.rename(kill_switch, kill_switch + ".taken")
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

        def train_start(point: str) -> None:
            if point == "train-start" and os.path.exists(fail_switch):
                raise RuntimeError("a planted failure")
            while point == "train-start" and os.path.exists(hang_switch):
                time.sleep(0.1)

        protocols.pause_point = run_trained
        engine.pause_point = train_start

    return install


@pytest.fixture(scope="module")
def switches(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("faults")
    return {name: folder / f"{name}-switch" for name in ("kill", "hang", "fail")}


@pytest.fixture(scope="module")
def ray_cluster(switches):
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # else Ray 2.60 writes a token in the home folder
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "worker_process_setup_hook": plant_faults(
                *(str(switches[name]) for name in ("kill", "hang", "fail"))
            )
        },
    )
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture(scope="module")
def local_study(tmp_path_factory, world_model):  # noqa: F811 - the imported fixture
    """The tiny study of test_study_runner, one CPU per run (two at once on Ray), run in
    this process."""
    base = tmp_path_factory.mktemp("study")
    spec = write_spec(base, world_model, extra=ONE_CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray run has: cpus_per_run 1
    try:
        assert run_study(spec, base / "out", progress=False).ok
    finally:
        torch.set_num_threads(threads)
    return spec, base / "out" / "study.sqlite"


def count_runs(db: Path, where: str = "1") -> int:
    return query(db, f"SELECT count(*) FROM runs WHERE {where}")[0][0]


def same_results(db: Path, reference: Path, run_ids=None) -> None:
    """Metrics and per-image predictions bit-identical to the reference study's (for
    `run_ids`, default all)."""
    for sql in (METRICS, PREDICTIONS):
        theirs = query(reference, sql)
        if run_ids is not None:
            theirs = [row for row in theirs if row[0] in run_ids]
        assert query(db, sql) == theirs


def test_ray_study_equals_the_local_study(ray_cluster, local_study, tmp_path, capsys):
    spec, local_db = local_study
    result = run_study(spec, tmp_path / "out", executor="ray", progress=False)
    planned = count_runs(local_db)
    assert result.ok and (result.planned, result.finished) == (planned, planned)
    db = tmp_path / "out" / "study.sqlite"
    assert query(db, RUNS) == query(local_db, RUNS)
    same_results(db, local_db)
    assert query(db, "SELECT DISTINCT attempts FROM runs") == [(1,)]
    err = capsys.readouterr().err
    assert err.count("the Ray cluster has no GPUs: runs go on CPUs") == 1
    assert not list((tmp_path / "out").glob("runs/*/trained.safetensors"))  # keep_weights: false


def test_a_worker_killed_mid_run_is_retried_and_recorded_once(
    ray_cluster, local_study, switches, tmp_path
):
    spec, local_db = local_study
    fewer = tmp_path / "study.yaml"
    fewer.write_text(spec.read_text().replace("  clip-adapter: {}\n", ""))
    storage = tmp_path / "shared"
    switches["kill"].touch()
    result = run_study(fewer, tmp_path / "out", executor="ray", storage=storage, progress=False)
    assert not switches["kill"].exists(), "no worker reached the kill switch"
    planned = count_runs(local_db, "method != 'clip-adapter'")
    assert result.ok and (result.planned, result.finished) == (planned, planned)
    db = tmp_path / "out" / "study.sqlite"
    assert query(db, "SELECT status, attempts, count(*) FROM runs GROUP BY 1, 2") == [
        ("finished", 1, planned)
    ]
    run_ids = {run_id for (run_id,) in query(db, "SELECT run_id FROM runs")}
    same_results(db, local_db, run_ids)  # nothing lost, nothing twice
    # run folders went to the storage, and their weights went once recorded
    assert len(list(storage.glob("runs/*/result.json"))) == count_runs(db, "method = 'bitfit'")
    assert not (tmp_path / "out" / "runs").exists()
    assert not list(storage.glob("runs/*/trained.safetensors"))


def test_a_run_that_raises_is_recorded_as_failed(ray_cluster, local_study, switches, tmp_path):
    spec, local_db = local_study
    fewer = tmp_path / "study.yaml"
    fewer.write_text(spec.read_text().replace("  clip-adapter: {}\n", ""))
    switches["fail"].touch()
    try:
        result = run_study(fewer, tmp_path / "out", executor="ray", progress=False)
    finally:
        switches["fail"].unlink()
    bitfit = count_runs(local_db, "method = 'bitfit'")
    others = count_runs(local_db, "method NOT IN ('bitfit', 'clip-adapter')")
    assert (result.finished, len(result.failed)) == (others, bitfit)
    db = tmp_path / "out" / "study.sqlite"
    failed = query(db, "SELECT run_id, method, error, attempts FROM runs WHERE status = 'failed'")
    assert {(m, e, a) for _, m, e, a in failed} == {
        ("bitfit", "RuntimeError: a planted failure", 1)
    }
    log = tmp_path / "out" / "runs" / failed[0][0] / "error.log"
    assert "a planted failure" in log.read_text()


def interrupt_when_training_starts(storage: Path) -> threading.Thread:
    """Ctrl-C this process once a run folder's config.json shows training has begun."""

    def watch() -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and not list(storage.glob("runs/*/config.json")):
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_cancels_the_runs_in_flight_and_a_rerun_finishes(
    ray_cluster, local_study, switches, tmp_path
):
    spec, local_db = local_study
    out = tmp_path / "out"
    switches["hang"].touch()  # every training run waits at train-start
    try:
        watcher = interrupt_when_training_starts(out)
        with pytest.raises(KeyboardInterrupt):
            run_study(spec, out, executor="ray", progress=False)
        watcher.join(TIMEOUT_S)
        # the hanging runs were cancelled: both CPUs come back
        deadline = time.monotonic() + TIMEOUT_S
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 2
    finally:
        switches["hang"].unlink(missing_ok=True)
    db = out / "study.sqlite"
    unfinished = query(db, "SELECT method FROM runs WHERE status = 'running'")
    assert ("bitfit",) in unfinished  # the first training run, cancelled while it hung
    finished_before = count_runs(db, "status = 'finished'")
    result = run_study(spec, out, executor="ray", progress=False)
    planned = count_runs(local_db)
    assert result.ok and (result.skipped, result.finished) == (
        finished_before,
        planned - finished_before,
    )
    assert count_runs(db, "status = 'finished'") == planned
    same_results(db, local_db)


def test_storage_the_workers_cannot_write_stops_the_study_before_any_run(
    ray_cluster, local_study, tmp_path
):
    spec, _ = local_study
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    storage = blocker / "runs"
    with pytest.raises(ClipgaugeError) as info:
        run_study(spec, tmp_path / "out", executor="ray", storage=storage, progress=False)
    message = str(info.value)
    assert f"cannot write the run storage {storage}" in message and "--storage" in message
    assert count_runs(tmp_path / "out" / "study.sqlite") == 0
