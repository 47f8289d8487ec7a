"""Where a study's runs execute: in this process, or in a pool of worker processes.

An executor takes the runs to do and yields each run's outcome as it finishes; the driver
(`run_study`) records outcomes and stays the database's only writer. Another engine is one
more class with the same `run` method: `clipgauge.study.ray_executor` runs them on a Ray
cluster. On a machine with several GPUs, each worker process gets its own GPU.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol

from clipgauge.errors import ClipgaugeError
from clipgauge.runtime import RUNS_PER_MACHINE_ENV, available_cores
from clipgauge.study.context import StudyContext
from clipgauge.study.plan import PlannedRun
from clipgauge.study.protocols import RUNS_DIR, execute
from clipgauge.study.spec import StudySpec
from clipgauge.study.store import MetricRow, PredictionRow

ERROR_LOG = "error.log"
EXECUTORS = ("local", "processes", "ray")


@dataclass
class RunOutcome:
    """A run's metric and per-image prediction rows, or None and the error that stopped it;
    the seconds it took."""

    rows: list[MetricRow] | None
    error: str
    seconds: float
    predictions: list[PredictionRow] = field(default_factory=list)


class Executor(Protocol):
    def run(
        self, runs: list[PlannedRun], on_start: Callable[[PlannedRun], None]
    ) -> Iterator[tuple[PlannedRun, RunOutcome]]:
        """Do `runs`, calling `on_start(run)` as each begins; yield (run, outcome) as each
        ends. Ctrl-C propagates, with work that was not started cancelled."""
        ...


def error_text(err: BaseException) -> str:
    return str(err) if isinstance(err, ClipgaugeError) else f"{type(err).__name__}: {err}"


def attempt(context: StudyContext, run: PlannedRun) -> RunOutcome:
    """Execute one run; an error becomes the outcome and its traceback goes to a log."""
    started = time.perf_counter()
    try:
        rows, predictions = execute(context, run)
        return RunOutcome(rows, "", time.perf_counter() - started, predictions)
    except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the study goes on
        log = context.out_dir / RUNS_DIR / run.run_id / ERROR_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        return RunOutcome(None, error_text(err), time.perf_counter() - started)


class LocalExecutor:
    """One run after another in this process."""

    def __init__(self, context: StudyContext):
        self.context = context

    def run(self, runs, on_start):
        for run in runs:
            on_start(run)
            yield run, attempt(self.context, run)


def check_executor_options(
    name: str | None, workers: int, ray_address: str | None = None, storage=None
) -> None:
    """A clear error for options that do not go together (before anything is loaded)."""
    if name is not None and name not in EXECUTORS:
        raise ClipgaugeError(f"--executor {name!r} is not one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ClipgaugeError(f"--workers {workers} must be at least 1")
    if workers > 1 and name == "local":
        raise ClipgaugeError(
            f"--workers {workers} runs worker processes: use --executor processes, not local"
        )
    if workers > 1 and name == "ray":
        raise ClipgaugeError(
            f"--workers {workers} does not go with --executor ray: Ray runs as many runs at "
            "once as the cluster has resources for (`resources` in the spec)"
        )
    if name != "ray":
        for option, value in (("--ray-address", ray_address), ("--storage", storage)):
            if value is not None:
                raise ClipgaugeError(
                    f"{option} goes with --executor ray; the other executors write run "
                    "folders into the study folder"
                )


def choose_executor(name: str | None, workers: int, runs_to_do: int) -> str:
    """The executor a study uses: `name` if given; else worker processes when `workers` > 1
    and more than one run is left to do, else this process."""
    check_executor_options(name, workers)
    if name is not None:
        return name
    return "processes" if workers > 1 and runs_to_do > 1 else "local"


def visible_gpus(environ=os.environ, device_count: Callable[[], int] | None = None) -> list[str]:
    """The GPUs worker processes may use, as CUDA_VISIBLE_DEVICES entries: those the variable
    already lists, else every GPU torch counts (without initialising CUDA here)."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for entry in (part.strip() for part in listed.split(",")):
            if not entry or entry.startswith("-"):  # CUDA ignores everything from here on
                break
            gpus.append(entry)
        return gpus
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count  # asks NVML where it can: no CUDA context
    return [str(i) for i in range(device_count())]


def worker_gpu(worker_index: int, gpus: list[str]) -> str | None:
    """The GPU of worker `worker_index` (0-based): GPUs in turn, shared when workers
    outnumber them; None without GPUs."""
    return gpus[worker_index % len(gpus)] if gpus else None


def take_gpu(counter, gpus: list[str]) -> str | None:
    """Number this worker process with the shared `counter` and show it only its GPU; run
    before anything initialises CUDA in the process."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    gpu = worker_gpu(index, gpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


# Worker processes build their own context once and return rows to the driver.
_WORKER: StudyContext | None = None


def _init_worker(
    spec: StudySpec, out_dir: str, threads: int, gpus: list[str], counter, runs: int
) -> None:
    take_gpu(counter, gpus)
    os.environ[RUNS_PER_MACHINE_ENV] = str(runs)  # each run's loaders take their share of cores
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = StudyContext(spec, Path(out_dir))


def _worker_attempt(run: PlannedRun) -> RunOutcome:
    return attempt(_WORKER, run)


class ProcessExecutor:
    """`workers` runs at once in spawned worker processes, each with its share of the cores
    and, on a machine with GPUs, its own GPU (worker i gets GPU i mod the number of GPUs)."""

    def __init__(self, spec: StudySpec, out_dir: Path, workers: int):
        self.spec, self.out_dir, self.workers = spec, out_dir, workers

    def run(self, runs, on_start):
        threads = max(1, available_cores() // self.workers)
        pending = list(reversed(runs))
        context = get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(
                self.spec,
                str(self.out_dir),
                threads,
                visible_gpus(),
                context.Value("i", 0),
                self.workers,
            ),
        ) as pool:
            running = {}
            try:
                while pending or running:
                    while pending and len(running) < self.workers:
                        run = pending.pop()
                        on_start(run)
                        running[pool.submit(_worker_attempt, run)] = run
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        run = running.pop(future)
                        try:
                            outcome = future.result()
                        except Exception as err:  # noqa: BLE001 - a worker died: record, go on
                            outcome = RunOutcome(None, error_text(err), 0.0)
                        yield run, outcome
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
