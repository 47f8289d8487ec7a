"""Run a study: every (task, train domains, method, seed) once, resumably, into SQLite.

Per run (see `clipgauge.study.store` for what is stored):
  1. zero-shot measures of the base model on the task's test images, per domain (computed once
     per process; the embeddings come from the study's cache, `<out>/cache`),
  2. fine-tuning with `finetune` on the train side of the train domains (the engine holds out
     its own validation images from them); `zeroshot` trains nothing and evaluates the base
     model, so every gain has a same-seed baseline,
  3. ID, DG and the measures again with the tuned model on the task's test images, and CF:
     every other forgetting task zero-shot, base model (cached) and tuned model.

The train/test split is fixed by the spec's `split.seed` for every run: `seeds` vary the
training only (initialisation of added modules, data order), never which images are tested.

Run order is the product tasks x train_domains x methods x seeds in spec order; `--shard i/n`
runs the runs whose index (0-based, in that order) % n == i - 1, into its own database.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from tqdm.auto import tqdm

from clipgauge import __version__
from clipgauge.cache import TensorCache
from clipgauge.data.dataset import ImageDataset
from clipgauge.errors import ClipgaugeError
from clipgauge.interruption import pause_point
from clipgauge.measures import MEASURE_FIELDS, compute_measures
from clipgauge.study.spec import BASELINE_METHOD, StudySpec, load_spec
from clipgauge.study.store import (
    OVERALL,
    MetricRow,
    StudyLock,
    StudyStore,
    config_hash,
    database_name,
    database_paths,
    shard_count,
    shard_label,
)
from clipgauge.training.runs import TRAINED_FILE, finetune, load_run

RUNS_DIR = "runs"
CACHE_DIR = "cache"
ERROR_LOG = "error.log"


@dataclass
class PlannedRun:
    """One run of the study, with its resolved config and the config's hash."""

    index: int
    task: str
    train_domains: list[str]
    method: str
    seed: int
    config: dict
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.task} [{'+'.join(self.train_domains)}] {self.method} seed {self.seed}"


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


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """`"2/4"` -> (2, 4): shard i of n, 1-based; None or 1/1 means unsharded."""
    if text is None:
        return None
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i, n = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ClipgaugeError(f"--shard {text!r} must be I/N, e.g. 1/2") from None
    if not 1 <= i <= n:
        raise ClipgaugeError(f"--shard {i}/{n}: I must be between 1 and N")
    return None if n == 1 else (i, n)


def _plain(value):
    return json.loads(json.dumps(value, default=list))


def cap_per_domain(dataset: ImageDataset, cap: int | None) -> ImageDataset:
    """At most `cap` images per domain, taken round-robin over classes (deterministic)."""
    if cap is None:
        return dataset
    groups: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(dataset.items):
        groups.setdefault((item.domain, item.label), []).append(i)
    keep: list[int] = []
    for domain in sorted({d for d, _ in groups}):
        members = [groups[key] for key in sorted(groups) if key[0] == domain]
        order = [g[j] for j in range(max(map(len, members))) for g in members if j < len(g)]
        keep.extend(order[:cap])
    return dataset.subset(sorted(keep), eval_cap=cap)


class StudyContext:
    """What one process needs to run studies' runs: the base model, data and caches."""

    def __init__(self, spec: StudySpec, out_dir: Path):
        from clipgauge.models.loading import load_clip

        self.spec = spec
        self.out_dir = out_dir
        self.cache = TensorCache(out_dir / CACHE_DIR)
        try:
            self.bundle = load_clip(spec.model_source)
        except ClipgaugeError as err:
            raise spec.error("model", str(err)) from None
        self._datasets: dict[str, ImageDataset] = {}
        self._tests: dict[str, ImageDataset] = {}
        self._domains: dict[str, list[str]] = {}
        self._base_rows: dict[str, dict[str, dict]] = {}

    # data
    def dataset(self, task: str) -> ImageDataset:
        """Every image of a task's domains (opened once; errors point at the spec line)."""
        if task not in self._datasets:
            from clipgauge.data.open import open_dataset

            entry = self.spec.tasks[task]
            try:
                dataset = open_dataset(entry.source, domains=entry.domains)
            except ClipgaugeError as err:
                raise self.spec.error(f"tasks.{task}.data", str(err)) from None
            known = self.domains_of(dataset, task)
            for i, chosen in enumerate(entry.train_domains):
                unknown = [d for d in chosen if d not in known]
                if unknown:
                    raise self.spec.error(
                        f"tasks.{task}.train_domains",
                        f"[{i}]: unknown domain(s) {unknown}; {entry.data} has {', '.join(known)}",
                    )
            self._datasets[task] = dataset
        return self._datasets[task]

    def domains_of(self, dataset: ImageDataset, task: str) -> list[str]:
        entry = self.spec.tasks[task]
        present = {dataset.domain_names[d] for d in dataset.domains}
        return [d for d in (entry.domains or dataset.domain_names) if d in present]

    def task_domains(self, task: str) -> list[str]:
        """The task's domains that have images, in spec (else dataset) order."""
        if task not in self._domains:
            self._domains[task] = self.domains_of(self.dataset(task), task)
        return self._domains[task]

    def test_set(self, task: str) -> ImageDataset:
        """The test side of the study's fixed split, capped per domain if the spec says so."""
        if task not in self._tests:
            from clipgauge.data.splits import split_train_test

            _, test = split_train_test(
                self.dataset(task), self.spec.test_fraction, self.spec.split_seed
            )
            self._tests[task] = cap_per_domain(test, self.spec.max_images_per_domain)
        return self._tests[task]

    def task_record(self, task: str) -> dict:
        entry, dataset = self.spec.tasks[task], self.dataset(task)
        return {
            "name": task,
            "data": entry.data,
            "kind": dataset.source.get("kind"),
            "domains": self.task_domains(task),
            "class_names": list(dataset.class_names),
            "n_images": len(dataset),
            "n_test_images": len(self.test_set(task)),
            "templates": entry.templates,
        }

    # the plan
    def plan(self) -> list[PlannedRun]:
        """Every run of the spec in order (tasks x train_domains x methods x seeds)."""
        from clipgauge.embeddings import preprocessing_config
        from clipgauge.methods import get_method
        from clipgauge.training.config import resolve_train_config

        spec, bundle = self.spec, self.bundle
        common = {
            "model": {
                "name": spec.model,
                "fingerprint": bundle.fingerprint,
                "dtype": str(bundle.dtype).removeprefix("torch."),
            },
            "preprocessing": preprocessing_config(bundle.image_processor),
            "split": {"test_fraction": spec.test_fraction, "seed": spec.split_seed},
            "eval": {"max_images_per_domain": spec.max_images_per_domain},
        }
        records = {name: self.task_record(name) for name in spec.tasks}
        runs: list[PlannedRun] = []
        for task, entry in spec.tasks.items():
            forgetting = [records[t] for t in spec.forgetting if t != task]
            for train_domains in entry.train_domains:
                for method, options in spec.methods.items():
                    method_config = _plain(
                        dataclasses.asdict(get_method(method).make_config(options))
                    )
                    for seed in spec.seeds:
                        train, preset = None, None
                        if method != BASELINE_METHOD:
                            train_config, preset = resolve_train_config(
                                method, spec.train_overrides(method), spec.preset, bundle.name
                            )
                            train = {**train_config.to_dict(), "seed": seed}
                        config = {
                            **common,
                            "task": records[task],
                            "train_domains": sorted(train_domains),
                            "method": {"name": method, "config": method_config},
                            "train": train,
                            "preset": preset,
                            "seed": seed,
                            "forgetting": forgetting,
                        }
                        runs.append(
                            PlannedRun(
                                index=len(runs),
                                task=task,
                                train_domains=sorted(train_domains),
                                method=method,
                                seed=seed,
                                config=config,
                                run_id=config_hash(config),
                            )
                        )
        return runs

    # evaluation
    def embeddings(self, bundle, task: str, cached: bool):
        from clipgauge.embeddings import embed_dataset

        return embed_dataset(
            bundle,
            self.test_set(task),
            self.spec.tasks[task].templates,
            cache=self.cache if cached else None,
            progress=False,
        )

    def rows(self, embeddings, domains: Sequence[str]) -> dict[str, dict]:
        """Measures per domain (those with test images) and pooled over them as 'overall'."""
        import torch

        out, pooled = {}, torch.zeros(len(embeddings.labels), dtype=torch.bool)
        for name in domains:
            mask = embeddings.domains == embeddings.domain_names.index(name)
            if bool(mask.any()):
                out[name] = compute_measures(
                    embeddings.image_embeds[mask], embeddings.text_embeds, embeddings.labels[mask]
                )
                pooled |= mask
        if bool(pooled.any()):
            out[OVERALL] = compute_measures(
                embeddings.image_embeds[pooled], embeddings.text_embeds, embeddings.labels[pooled]
            )
        return out

    def base_rows(self, task: str) -> dict[str, dict]:
        """The base model's measures on a task, every domain and overall (once per process)."""
        if task not in self._base_rows:
            embeddings = self.embeddings(self.bundle, task, cached=True)
            self._base_rows[task] = self.rows(embeddings, self.task_domains(task))
        return self._base_rows[task]

    def execute(self, run: PlannedRun) -> list[MetricRow]:
        """Train (unless zeroshot) and evaluate one run; returns its metric rows."""
        spec = self.spec
        others = [t for t in spec.forgetting if t != run.task]
        rows = _metric_rows("measure_before", run.task, self.base_rows(run.task))
        for other in others:
            rows += _metric_rows("cf_before", other, self.base_rows(other))
        if run.method == BASELINE_METHOD:
            tuned, cached = self.bundle, True
        else:
            tuned, cached = load_run(self.train(run)), False
            pause_point("run-trained")
        domains = self.task_domains(run.task)
        after = self.embeddings(tuned, run.task, cached)
        held_out = [d for d in domains if d not in run.train_domains]
        rows += _metric_rows("measure_after", run.task, self.rows(after, domains))
        rows += _metric_rows("id", run.task, self.rows(after, run.train_domains))
        if held_out:
            rows += _metric_rows("dg", run.task, self.rows(after, held_out))
        for other in others:
            other_after = self.embeddings(tuned, other, cached)
            rows += _metric_rows(
                "cf_after", other, self.rows(other_after, self.task_domains(other))
            )
        return rows

    def train(self, run: PlannedRun) -> Path:
        """Fine-tune into `<out>/runs/<run_id>`, resuming an interrupted attempt if it can."""
        from clipgauge.training.checkpoint import CheckpointError
        from clipgauge.training.config import TrainConfig
        from clipgauge.training.runs import CONFIG_FILE, RESULT_FILE, RunError

        run_dir = self.out_dir / RUNS_DIR / run.run_id
        entry = self.spec.tasks[run.task]
        kwargs = dict(
            model=self.bundle,
            data=self.dataset(run.task),
            train_domains=run.train_domains,
            method=run.method,
            method_options=run.config["method"]["config"],
            train_config=TrainConfig.from_dict(run.config["train"]),
            out_dir=run_dir,
            templates=entry.templates,
            split="train",
            test_fraction=self.spec.test_fraction,
            split_seed=self.spec.split_seed,
            progress=False,
        )
        # An attempt that got as far as its result but lost its weights cannot be resumed.
        lost = (run_dir / RESULT_FILE).is_file() and not (run_dir / TRAINED_FILE).is_file()
        if (run_dir / CONFIG_FILE).is_file() and not lost:
            try:
                finetune(**kwargs, resume=True)
                return run_dir
            except (RunError, CheckpointError):
                pass  # not resumable (options or data changed, no complete epoch): start over
        shutil.rmtree(run_dir, ignore_errors=True)
        finetune(**kwargs)
        return run_dir


def _metric_rows(protocol: str, task: str, rows: dict[str, dict]) -> list[MetricRow]:
    return [
        (protocol, task, domain, name, values[name])
        for domain, values in rows.items()
        for name in MEASURE_FIELDS
    ]


def _error_text(err: BaseException) -> str:
    return str(err) if isinstance(err, ClipgaugeError) else f"{type(err).__name__}: {err}"


def _attempt(context: StudyContext, run: PlannedRun) -> tuple[list[MetricRow] | None, str, float]:
    """(rows, "", seconds) or (None, error message, seconds); the traceback goes to a log."""
    started = time.perf_counter()
    try:
        rows = context.execute(run)
        return rows, "", time.perf_counter() - started
    except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the study goes on
        log = context.out_dir / RUNS_DIR / run.run_id / ERROR_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        return None, _error_text(err), time.perf_counter() - started


# Worker processes (--workers N): each builds its own context once and returns rows to the
# main process, the database's only writer.
_WORKER: StudyContext | None = None


def _init_worker(spec: StudySpec, out_dir: str, threads: int) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = StudyContext(spec, Path(out_dir))


def _worker_attempt(run: PlannedRun):
    return _attempt(_WORKER, run)


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
) -> StudyResult:
    """Run (or continue) a study into `out_dir` (default `studies/<spec name>`).

    Finished runs are skipped; unfinished ('running') and failed runs are redone. A run that
    fails is recorded with its error and the study goes on. Runs stored in the database that
    the spec no longer plans (the spec changed) stop the study unless `prune` deletes them.
    `workers` > 1 runs that many runs at once in worker processes, each with its share of the
    CPU threads. Ctrl-C leaves the current run unfinished, closes the database and re-raises.
    """
    spec = spec_or_path if isinstance(spec_or_path, StudySpec) else load_spec(spec_or_path)
    shard = parse_shard(shard)
    if workers < 1:
        raise ClipgaugeError(f"--workers {workers} must be at least 1")
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    began = time.perf_counter()
    with StudyLock(out, shard):
        db_path = out / database_name(shard)
        _check_folder(out, shard)
        context = StudyContext(spec, out)
        plan = context.plan()
        if shard is not None:
            plan = [r for r in plan if r.index % shard[1] == shard[0] - 1]
        store = StudyStore(db_path)
        try:
            result = StudyResult(out_dir=out, database=db_path, planned=len(plan))
            stored = store.runs()
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
                result.pruned = len(stale)
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
            _run_all(context, store, todo, result, workers, progress)
        finally:
            store.close()
    result.seconds = time.perf_counter() - began
    return result


def _record(store, spec: StudySpec, out: Path, run, outcome, result, bar) -> None:
    rows, error, seconds = outcome
    if rows is None:
        store.fail_run(run.run_id, error, seconds)
        result.failed.append((run.label, error))
        bar.write(f"run failed: {run.label}: {error}", file=sys.stderr)
    else:
        store.finish_run(run.run_id, rows, seconds)
        result.finished += 1
        weights = out / RUNS_DIR / run.run_id / TRAINED_FILE
        if not spec.keep_weights:
            weights.unlink(missing_ok=True)
    bar.update(1)


def _start(store, run: PlannedRun) -> None:
    store.start_run(run.run_id, run.task, run.train_domains, run.method, run.seed, run.config)


def _run_all(context, store, todo, result, workers: int, progress: bool) -> None:
    bar = tqdm(
        total=result.planned,
        initial=result.skipped,
        desc="study",
        unit="run",
        disable=not progress,
        dynamic_ncols=True,
    )
    current = None
    try:
        if workers == 1 or len(todo) <= 1:
            for run in todo:
                current = run
                bar.set_postfix_str(run.label)
                _start(store, run)
                outcome = _attempt(context, run)
                _record(store, context.spec, context.out_dir, run, outcome, result, bar)
                current = None
        else:
            _run_pool(context, store, todo, result, workers, bar)
    except KeyboardInterrupt:
        what = f" during {current.label}" if current else ""
        bar.write(
            f"interrupted{what}: unfinished runs stay 'running' and are redone next time",
            file=sys.stderr,
        )
        raise
    finally:
        bar.close()


def _run_pool(context, store, todo, result, workers: int, bar) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // workers)
    pending = list(reversed(todo))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(context.spec, str(context.out_dir), threads),
    ) as pool:
        running = {}
        try:
            while pending or running:
                while pending and len(running) < workers:
                    run = pending.pop()
                    _start(store, run)
                    running[pool.submit(_worker_attempt, run)] = run
                bar.set_postfix_str(", ".join(r.label for r in running.values()))
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    run = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as err:  # noqa: BLE001 - a worker died: record, go on
                        outcome = (None, _error_text(err), 0.0)
                    _record(store, context.spec, context.out_dir, run, outcome, result, bar)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
