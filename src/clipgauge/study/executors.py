"""Where a study's runs execute: in this process, or in a pool of worker processes.

An executor takes the runs to do and yields each run's outcome as it finishes; the driver
(`run_study`) records outcomes and stays the database's only writer. Another engine (a
cluster scheduler) is one more class with the same `run` method.
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
from clipgauge.study.context import StudyContext
from clipgauge.study.plan import PlannedRun
from clipgauge.study.protocols import RUNS_DIR, execute
from clipgauge.study.spec import StudySpec
from clipgauge.study.store import MetricRow, PredictionRow

ERROR_LOG = "error.log"


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


# Worker processes build their own context once and return rows to the driver.
_WORKER: StudyContext | None = None


def _init_worker(spec: StudySpec, out_dir: str, threads: int) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = StudyContext(spec, Path(out_dir))


def _worker_attempt(run: PlannedRun) -> RunOutcome:
    return attempt(_WORKER, run)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ProcessExecutor:
    """`workers` runs at once in spawned worker processes, each with its share of the cores."""

    def __init__(self, spec: StudySpec, out_dir: Path, workers: int):
        self.spec, self.out_dir, self.workers = spec, out_dir, workers

    def run(self, runs, on_start):
        threads = max(1, available_cores() // self.workers)
        pending = list(reversed(runs))
        with ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.spec, str(self.out_dir), threads),
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
