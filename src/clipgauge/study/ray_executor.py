"""A study's runs as Ray tasks, on this machine or a cluster (`--executor ray`).

Each run is one Ray task asking for the spec's `resources`. A worker builds its StudyContext
once per process (a task with GPUs gets a fresh process each time, so once per run there),
executes the run and returns its outcome, metric rows and packed per-image flags; the driver
records it and stays the database's only writer. Run folders go to `storage`, a folder every
node can write; before any run is scheduled one small task checks that a worker can.

Faults: a worker process or node that dies mid-run is retried by Ray (`max_retries`) and the
retry resumes the run folder; the driver records each run once, whatever the attempts. A run
that raises is its outcome (failed), not retried. Ctrl-C cancels the tasks in flight; their
runs stay 'running' and the next `run_study` redoes them.

Ray is an optional dependency (`pip install 'clipgauge[ray]'`), imported when a study uses it.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from clipgauge.errors import ClipgaugeError
from clipgauge.study.context import StudyContext
from clipgauge.study.executors import RunOutcome, attempt, error_text
from clipgauge.study.plan import PlannedRun
from clipgauge.study.protocols import RUNS_DIR
from clipgauge.study.schema import RunResources
from clipgauge.study.spec import StudySpec
from clipgauge.study.store import pack_correct, unpack_correct
from clipgauge.training.run_folder import TRAINED_FILE

RAY_MISSING = "--executor ray needs Ray, an optional dependency: pip install 'clipgauge[ray]'"
POLL_SECONDS = 1.0  # how often the driver wakes while waiting (Ctrl-C, a grown cluster)
STORAGE_CHECK_SECONDS = 300.0


def import_ray():
    """The ray module, or a ClipgaugeError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClipgaugeError(RAY_MISSING) from None
    return ray


# Sizing runs to the cluster (pure functions of `ray.nodes()`) -----------------------------------


@dataclass(frozen=True)
class TaskResources:
    """What one run's Ray task asks for."""

    cpus: int
    gpus: float


def _alive(nodes: list[dict]) -> list[dict]:
    return [node.get("Resources", {}) for node in nodes if node.get("Alive")]


def fit_resources(wanted: RunResources, nodes: list[dict]) -> tuple[TaskResources, list[str]]:
    """The spec's per-run resources, cut to what the largest node has (a task no node can
    hold would wait forever), and a note for each cut."""
    alive = _alive(nodes)
    notes = []
    gpus = wanted.gpus_per_run
    most_gpus = max((node.get("GPU", 0.0) for node in alive), default=0.0)
    if gpus > most_gpus:
        if most_gpus == 0:
            notes.append(
                f"the Ray cluster has no GPUs: runs go on CPUs (resources.gpus_per_run {gpus} -> 0)"
            )
        else:
            notes.append(
                f"no Ray node has {gpus} GPUs: each run asks for {most_gpus:g}, the most one "
                "node has (resources.gpus_per_run)"
            )
        gpus = most_gpus
    hosts = [node for node in alive if node.get("GPU", 0.0) >= gpus]
    most_cpus = int(max((node.get("CPU", 0.0) for node in hosts), default=0.0))
    if most_cpus < 1:
        raise ClipgaugeError("the Ray cluster has no node with a CPU to run on")
    cpus = wanted.cpus_per_run
    if cpus > most_cpus:
        notes.append(
            f"no Ray node has {cpus} CPUs: each run asks for {most_cpus}, the most one node "
            "has (resources.cpus_per_run)"
        )
        cpus = most_cpus
    return TaskResources(cpus=cpus, gpus=gpus), notes


def runs_at_once(task: TaskResources, nodes: list[dict]) -> int:
    """How many such tasks the cluster's nodes hold at once (at least 1)."""
    total = 0
    for node in _alive(nodes):
        fits = math.floor(node.get("CPU", 0.0) / task.cpus + 1e-9)
        if task.gpus > 0:
            fits = min(fits, math.floor(node.get("GPU", 0.0) / task.gpus + 1e-9))
        total += fits
    return max(1, total)


# What a worker does ----------------------------------------------------------------------------

# One study's context per worker process, built by its first run: (study key, context).
_CONTEXT: tuple[str, StudyContext] | None = None


def _context(key: str, spec: StudySpec, storage: str) -> StudyContext:
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT[0] != key:
        _CONTEXT = None  # free the last study's model before loading this one
        _CONTEXT = (key, StudyContext(spec, Path(storage)))
    return _CONTEXT[1]


def pack_outcome(outcome: RunOutcome) -> RunOutcome:
    """The outcome with each per-image flag array as (n, packed bytes): 8 images a byte."""
    packed = [(p, t, d, (len(c), pack_correct(c))) for p, t, d, c in outcome.predictions]
    return replace(outcome, predictions=packed)


def unpack_outcome(outcome: RunOutcome) -> RunOutcome:
    flags = [(p, t, d, unpack_correct(blob, n)) for p, t, d, (n, blob) in outcome.predictions]
    return replace(outcome, predictions=flags)


def run_on_worker(
    key: str, spec: StudySpec, storage: str, threads: int, run: PlannedRun
) -> RunOutcome:
    """One run in a Ray worker: its outcome, ready to go back to the driver."""
    import torch

    torch.set_num_threads(threads)
    outcome = attempt(_context(key, spec, storage), run)
    if outcome.rows is not None and not spec.keep_weights:
        # Only workers are sure to reach `storage`: the weights go here, not in the driver.
        (Path(storage) / RUNS_DIR / run.run_id / TRAINED_FILE).unlink(missing_ok=True)
    return pack_outcome(outcome)


def check_storage(storage: str) -> str:
    """'' when this worker can create `storage` and write, read and delete a file in it; else
    what went wrong, naming the host."""
    host = socket.gethostname()
    probe = Path(storage) / f".clipgauge-write-check-{host}-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(host)
        readable = probe.read_text() == host
        probe.unlink()
    except OSError as err:
        return f"on {host}: {err}"
    return "" if readable else f"on {host}: a file written there read back differently"


# The driver ------------------------------------------------------------------------------------


class RayExecutor:
    """Every run as a Ray task on the cluster at `address` (None: the one `ray.init()`
    finds or starts; an already initialised Ray is used as it is).

    `storage` is where workers write run folders and the embedding cache: a folder every
    node can write, e.g. on a shared file system. `max_retries` counts retries after a
    worker or node died.
    """

    def __init__(
        self,
        spec: StudySpec,
        storage: str | os.PathLike,
        address: str | None = None,
        max_retries: int = 3,
    ):
        self.spec = spec
        self.storage = Path(storage).expanduser().absolute()
        self.address = address
        self.max_retries = max_retries

    def run(self, runs, on_start):
        if not runs:
            return
        ray = import_ray()
        owns_ray = not ray.is_initialized()
        if owns_ray:
            try:
                ray.init(address=self.address)
            except ConnectionError as err:
                raise ClipgaugeError(
                    f"cannot reach the Ray cluster at --ray-address {self.address} ({err}); "
                    "is `ray start` running there?"
                ) from None
        try:
            task = self._task_resources(ray)
            self._check_storage(ray, task)
            yield from self._schedule(ray, task, runs, on_start)
        finally:
            if owns_ray:
                ray.shutdown()

    def _task_resources(self, ray) -> TaskResources:
        task, notes = fit_resources(self.spec.resources, ray.nodes())
        for note in notes:
            _say(note)
        return task

    def _check_storage(self, ray, task: TaskResources) -> None:
        check = ray.remote(check_storage).options(
            num_cpus=task.cpus, num_gpus=task.gpus, max_retries=self.max_retries
        )
        ref = check.remote(str(self.storage))
        ready, _ = ray.wait([ref], timeout=STORAGE_CHECK_SECONDS)
        if not ready:
            ray.cancel(ref, force=True)
            raise ClipgaugeError(
                f"no Ray worker with {task.cpus} CPUs and {task.gpus:g} GPUs checked the run "
                f"storage {self.storage} within {STORAGE_CHECK_SECONDS:.0f} s: is the cluster "
                "busy? (`ray status` shows it)"
            )
        problem = ray.get(ref)
        if problem:
            raise ClipgaugeError(
                f"a Ray worker cannot write the run storage {self.storage} ({problem}); give "
                "--storage a folder every node of the cluster can write, e.g. on a shared "
                "file system"
            )

    def _schedule(self, ray, task: TaskResources, runs: list[PlannedRun], on_start):
        remote = ray.remote(run_on_worker).options(
            num_cpus=task.cpus, num_gpus=task.gpus, max_retries=self.max_retries
        )
        key, spec_ref, storage = uuid.uuid4().hex, ray.put(self.spec), str(self.storage)
        waiting, in_flight = list(reversed(runs)), {}
        try:
            while waiting or in_flight:
                if waiting:
                    room = runs_at_once(task, ray.nodes()) - len(in_flight)
                    for _ in range(min(room, len(waiting))):
                        run = waiting.pop()
                        on_start(run)
                        ref = remote.remote(key, spec_ref, storage, task.cpus, run)
                        in_flight[ref] = run
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
                for ref in done:
                    yield in_flight.pop(ref), self._outcome(ray, ref)
        finally:  # Ctrl-C or the driver stopped listening: leave nothing running
            for ref in in_flight:
                ray.cancel(ref)

    def _outcome(self, ray, ref) -> RunOutcome:
        try:
            return unpack_outcome(ray.get(ref))
        except ray.exceptions.RayTaskError as err:  # e.g. the worker could not load the model
            cause = getattr(err, "cause", None)
            return RunOutcome(None, error_text(cause) if cause else str(err), 0.0)
        except ray.exceptions.RayError as err:  # the worker or node died on every attempt
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            return RunOutcome(
                None,
                f"Ray gave up after {self.max_retries} retries: {type(err).__name__}: {reason}",
                0.0,
            )


def _say(note: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"clipgauge study: {note}", file=sys.stderr)
