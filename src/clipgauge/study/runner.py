"""Run a study: every planned run once, resumably, into SQLite.

`run_study` plans the runs (`clipgauge.study.plan`), skips those already finished, hands the
rest to an executor (`clipgauge.study.executors`: this process or worker processes;
`clipgauge.study.ray_executor`: a Ray cluster), and records each outcome as it arrives; it is
the database's only writer. What each run evaluates is in `clipgauge.study.protocols`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from clipgauge import __version__
from clipgauge.errors import ClipgaugeError
from clipgauge.study.context import StudyContext
from clipgauge.study.executors import (
    LocalExecutor,
    ProcessExecutor,
    RunOutcome,
    check_executor_options,
    choose_executor,
)
from clipgauge.study.plan import PlannedRun, in_shard, parse_shard, plan_runs
from clipgauge.study.protocols import RUNS_DIR
from clipgauge.study.spec import StudySpec, load_spec
from clipgauge.study.store import (
    StudyLock,
    StudyStore,
    database_name,
    database_paths,
    shard_count,
    shard_label,
)
from clipgauge.training.run_folder import TRAINED_FILE


@dataclass
class StudyResult:
    """What `run_study` did: runs of this shard, how many ran now, were skipped or failed."""

    out_dir: Path
    database: Path
    planned: int
    finished: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run label, error)
    pruned: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_folder(out_dir: Path, shard: tuple[int, int] | None) -> None:
    """Refuse to mix databases of differently sharded runs of the study in one folder."""
    mine = shard[1] if shard else 1
    for path in database_paths(out_dir):
        theirs = shard_count(path.name)
        if theirs is not None and theirs != mine:
            raise ClipgaugeError(
                f"{out_dir} already holds {path.name}, written with --shard .../{theirs}, but "
                f"this run uses {shard_label(shard)}; shard a study the same way every time, "
                "or use another --out"
            )


def default_out_dir(spec: StudySpec) -> Path:
    return Path("studies") / spec.name


def run_study(
    spec_or_path: StudySpec | str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    shard: str | tuple[int, int] | None = None,
    workers: int = 1,
    progress: bool = True,
    prune: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    storage: str | os.PathLike | None = None,
) -> StudyResult:
    """Run (or continue) a study into `out_dir` (default `studies/<spec name>`).

    Finished runs are skipped; unfinished ('running') and failed runs are redone. A run that
    fails is recorded with its error and the study goes on. Runs stored in the database that
    the spec no longer plans (the spec changed) stop the study unless `prune` deletes them.
    `executor` says where runs execute: "local" (this process), "processes" (`workers` worker
    processes, each with its share of the CPU threads and its own GPU where there are GPUs)
    or "ray" (Ray tasks with the spec's `resources`, on the cluster at `ray_address`, run
    folders in `storage`, default `out_dir`, which every node must be able to write). None
    picks worker processes when `workers` > 1, else this process. Ctrl-C leaves the current
    runs unfinished, closes the database and re-raises.
    """
    check_executor_options(executor, workers, ray_address, storage)
    if executor == "ray":
        from clipgauge.study.ray_executor import import_ray

        import_ray()  # a missing Ray is a clear error before anything loads
    spec = spec_or_path if isinstance(spec_or_path, StudySpec) else load_spec(spec_or_path)
    shard = parse_shard(shard)
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    began = time.perf_counter()
    with StudyLock(out, shard):
        db_path = out / database_name(shard)
        _check_folder(out, shard)
        context = StudyContext(spec, out)
        records = {name: context.task_record(name) for name in spec.tasks}
        plan = in_shard(plan_runs(spec, context.bundle, records), shard)
        store = StudyStore(db_path)
        try:
            result = StudyResult(out_dir=out, database=db_path, planned=len(plan))
            stored = store.runs()
            result.pruned = _drop_stale(store, stored, plan, db_path, prune)
            store.set_info(
                {
                    "spec": json.dumps(spec.to_dict(), sort_keys=True),
                    "spec_path": str(Path(spec.path).resolve()) if spec.path else "",
                    "shard": shard_label(shard),
                    "clipgauge_version": __version__,
                }
            )
            todo = [
                r for r in plan if r.run_id not in stored or stored[r.run_id].status != "finished"
            ]
            result.skipped = len(plan) - len(todo)
            kind = choose_executor(executor, workers, len(todo))
            engine = _make_executor(kind, context, workers, ray_address, storage)
            _run_all(engine, store, spec, todo, result, progress)
        finally:
            _add_wall_time(store, time.perf_counter() - began)
            store.close()
    result.seconds = time.perf_counter() - began
    return result


def _make_executor(kind: str, context: StudyContext, workers, ray_address, storage):
    if kind == "local":
        return LocalExecutor(context)
    if kind == "processes":
        return ProcessExecutor(context.spec, context.out_dir, workers)
    from clipgauge.study.ray_executor import RayExecutor

    return RayExecutor(context.spec, storage or context.out_dir, address=ray_address)


def _add_wall_time(store: StudyStore, seconds: float) -> None:
    """Count this invocation's time into the study's `wall_seconds` (summed over resumes)."""
    before = float(store.info().get("wall_seconds", 0.0))
    store.set_info({"wall_seconds": f"{before + seconds:.1f}"})


def _drop_stale(store: StudyStore, stored: dict, plan: list[PlannedRun], db_path, prune) -> int:
    """Delete stored runs the plan no longer has when `prune`, else refuse to mix them in."""
    stale = sorted(set(stored) - {r.run_id for r in plan})
    if stale and not prune:
        example = stored[stale[0]]
        raise ClipgaugeError(
            f"{db_path} holds {len(stale)} run(s) this spec no longer plans (the spec "
            f"or the data changed), e.g. {example.task} {example.train_domains} "
            f"{example.method} seed {example.seed}; they would mix with the new "
            "results. Rerun with --prune to delete them, or use another --out"
        )
    if stale:
        store.delete_runs(stale)
    return len(stale)


def _record(store, spec: StudySpec, out: Path, run, outcome: RunOutcome, result, bar) -> None:
    if outcome.rows is None:
        store.fail_run(run.run_id, outcome.error, outcome.seconds)
        result.failed.append((run.label, outcome.error))
        bar.write(f"run failed: {run.label}: {outcome.error}", file=sys.stderr)
    else:
        store.finish_run(run.run_id, outcome.rows, outcome.seconds, outcome.predictions)
        result.finished += 1
        weights = out / RUNS_DIR / run.run_id / TRAINED_FILE
        if not spec.keep_weights:
            weights.unlink(missing_ok=True)
    bar.update(1)


def _run_all(executor, store, spec: StudySpec, todo, result, progress: bool) -> None:
    bar = tqdm(
        total=result.planned,
        initial=result.skipped,
        desc="study",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    running: dict[str, PlannedRun] = {}

    def on_start(run: PlannedRun) -> None:
        store.start_run(run.run_id, run.task, run.train_domains, run.method, run.seed, run.config)
        running[run.run_id] = run
        bar.set_postfix_str(", ".join(r.label for r in running.values()))

    try:
        # closing: an executor's clean-up (cancelling its work) runs whatever stops the loop
        with closing(executor.run(todo, on_start)) as outcomes:
            for run, outcome in outcomes:
                running.pop(run.run_id, None)
                _record(store, spec, result.out_dir, run, outcome, result, bar)
    except KeyboardInterrupt:
        labels = ", ".join(r.label for r in running.values())
        what = f" during {labels}" if labels else ""
        bar.write(
            f"interrupted{what}: unfinished runs stay 'running' and are redone next time",
            file=sys.stderr,
        )
        raise
    finally:
        bar.close()
