"""The study database: one SQLite file per study folder (or per shard), and the folder lock.

Files in a study folder `<out>`:
  study.sqlite                  an unsharded study
  study-shard-<i>-of-<n>.sqlite  what `--shard i/n` ran (readers union every *.sqlite file)
  .lock-all, .lock-<i>-of-<n>   held (fcntl.flock) by the one process writing that database
  cache/                        the base model's embeddings, shared by every run (tuned
                                models' embeddings are used once and not cached)
  runs/<run_id>/                fine-tuning run folders (config.json, metrics.jsonl, result.json;
                                trained.safetensors only with `keep_weights: true`)

Schema (a reader needs nothing else):

  study(key, value)   'spec' (the resolved spec as JSON), 'spec_path', 'shard' ("i/n"; "1/1"
                      unsharded), 'clipgauge_version', 'created' (ISO 8601, UTC),
                      'wall_seconds' (time spent running this database's study, summed over
                      every invocation that resumed it)
  runs                one row per (task, train_domains, method, seed); run_id = sha256[:16] of
                      `config`, the run config as canonical JSON (`config_json`): model name,
                      fingerprint and dtype; preprocessing; task (data as the spec writes it,
                      domains, class names, image counts, templates); train_domains; method
                      name and resolved config; train config with the seed (null for
                      zeroshot) and preset; seed; split; eval cap; and the same task record
                      for each other forgetting task. Image contents are not hashed: a
                      changed file under the same path keeps the run_id. status is 'running'
                      while a run is in progress or was interrupted, then 'finished' or
                      'failed' (`error` = the message; the traceback is in
                      runs/<run_id>/error.log). started/finished are Unix times, seconds the
                      attempt's duration, attempts counts starts.
  metrics             (run_id, protocol, eval_task, domain, name) -> value, for finished runs.
  predictions         (run_id, protocol, eval_task, domain) -> n, correct: whether each test
                      image of that domain was classified correctly (protocols id, dg,
                      cf_before, cf_after; real domains only, never 'overall'). `correct` is
                      numpy.packbits of the n booleans (big-endian bit order), images in the
                      order of the study's fixed test set, so every run of a study is scored
                      on the same images in the same order: differences between runs pair
                      image by image (`unpack_correct` reads it back).

Protocols (every row holds all MEASURE_FIELDS of `clipgauge.measures` as `name`):
  measure_before  eval_task = the run's task, every domain + 'overall'; the base model
  measure_after   the same with the run's tuned model (equal to measure_before for zeroshot)
  id              the run's task, each train domain + 'overall' pooled over them; tuned model
  dg              the run's task, each other domain + 'overall' pooled over them; tuned model
                  (no rows when the task has no other domain)
  cf_before       eval_task = each OTHER task of the forgetting suite, every domain +
                  'overall'; the base model
  cf_after        the same with the tuned model; forgetting = cf_before - cf_after
  id@A, dg@A, cf_after@A   with `eval.wise_alphas`: id, dg and cf_after of the model moved A
                  of the way from zero-shot (0) to fine-tuned (1) (WiSE-FT), e.g. dg@0.5;
                  also in predictions
Accuracy is stored under the name `zero_shot_accuracy` for the tuned model too: it is the
accuracy of classifying by cosine similarity to the class prompts, whatever the weights.
Every evaluation uses the test side of the study's fixed train/test split. NaN is NULL.

A run's metrics and its 'finished' status are written in one transaction (which first deletes
any metrics of that run), so a reader never sees a finished run without its metrics.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from clipgauge.errors import ClipgaugeError
from clipgauge.wise_protocols import (  # noqa: F401 - part of the store's vocabulary
    WISE_PROTOCOLS,
    parse_wise_protocol,
    wise_protocol,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT);  -- 'spec' (resolved JSON), 'spec_path', 'shard' ("i/n"), 'clipgauge_version', 'created'
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,          -- sha256[:16] of the resolved run config JSON (config hash)
  task TEXT NOT NULL, train_domains TEXT NOT NULL,  -- JSON list, sorted
  method TEXT NOT NULL, seed INTEGER NOT NULL,
  config TEXT NOT NULL,             -- resolved JSON: model name+fingerprint, data source, templates, preprocessing, method config, train config, seed
  status TEXT NOT NULL,             -- 'running' | 'finished' | 'failed'
  error TEXT, started REAL, finished REAL, seconds REAL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, protocol TEXT NOT NULL,   -- 'measure_before' | 'measure_after' | 'id' | 'dg' | 'cf_before' | 'cf_after'
  eval_task TEXT NOT NULL, domain TEXT NOT NULL,  -- domain name, or 'overall'
  name TEXT NOT NULL, value REAL,                 -- a MEASURE_FIELDS name (e.g. zero_shot_accuracy, silhouette_modality); NaN stored as NULL
  PRIMARY KEY (run_id, protocol, eval_task, domain, name));
CREATE TABLE IF NOT EXISTS predictions (
  run_id TEXT NOT NULL, protocol TEXT NOT NULL,   -- 'id' | 'dg' | 'cf_before' | 'cf_after'
  eval_task TEXT NOT NULL, domain TEXT NOT NULL,  -- a domain name (never 'overall')
  n INTEGER NOT NULL,                             -- test images of that domain
  correct BLOB NOT NULL,                          -- numpy.packbits of n booleans, test-set order
  PRIMARY KEY (run_id, protocol, eval_task, domain));
"""  # noqa: E501 - kept verbatim: the analysis side is written against this text

PROTOCOLS = ("measure_before", "measure_after", "id", "dg", "cf_before", "cf_after")
STATUSES = ("running", "finished", "failed")
UNSHARDED = "study.sqlite"

# (protocol, eval_task, domain, name, value)
MetricRow = tuple[str, str, str, str, float | None]
# (protocol, eval_task, domain, per-image correct flags)
PredictionRow = tuple[str, str, str, np.ndarray]
PREDICTION_PROTOCOLS = ("id", "dg", "cf_before", "cf_after")


def pack_correct(correct: np.ndarray) -> bytes:
    """The stored form of per-image correct flags (see `predictions` in the schema)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes()


def unpack_correct(blob: bytes, n: int) -> np.ndarray:
    """Per-image correct flags (bool, n) from their stored form."""
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=n).astype(bool)


def database_name(shard: tuple[int, int] | None) -> str:
    """`study.sqlite`, or `study-shard-<i>-of-<n>.sqlite` for shard i of n (1-based)."""
    if shard is None:
        return UNSHARDED
    return f"study-shard-{shard[0]}-of-{shard[1]}.sqlite"


def shard_count(name: str) -> int | None:
    """N of a database file written with --shard I/N (1 for study.sqlite; None: not ours)."""
    if name == UNSHARDED:
        return 1
    match = re.fullmatch(r"study-shard-(\d+)-of-(\d+)\.sqlite", name)
    return int(match[2]) if match else None


def shard_label(shard: tuple[int, int] | None) -> str:
    return "1/1" if shard is None else f"{shard[0]}/{shard[1]}"


def database_paths(out_dir: str | Path) -> list[Path]:
    """Every study database in a folder, sorted by name."""
    return sorted(p for p in Path(out_dir).glob("*.sqlite") if p.is_file())


def open_all(out_dir: str | Path) -> Iterator[sqlite3.Connection]:
    """Connections to every study database in `out_dir`, each closed when the next is asked for.

    The same run_id can appear in two databases only if a study was resharded; prefer the
    'finished' copy.
    """
    for path in database_paths(out_dir):
        connection = sqlite3.connect(path, timeout=30)
        try:
            yield connection
        finally:
            connection.close()


def config_json(config: dict) -> str:
    """The canonical JSON of a run config: what `config` stores and `run_id` hashes."""
    return json.dumps(config, sort_keys=True)


def config_hash(config: dict) -> str:
    """run_id: sha256[:16] of `config_json(config)`."""
    return hashlib.sha256(config_json(config).encode()).hexdigest()[:16]


def sql_value(value) -> float | None:
    """A metric as stored: float, with NaN and None as NULL."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass
class RunRow:
    run_id: str
    task: str
    train_domains: list[str]
    method: str
    seed: int
    status: str
    error: str | None
    started: float | None
    finished: float | None
    seconds: float | None
    attempts: int


class StudyStore:
    """The one writer of a study database (single-process: workers send results through it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: every transaction below is an explicit BEGIN IMMEDIATE.
            self.connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ClipgaugeError(
                f"{self.path} is not a usable study database ({err}); move it away or use "
                "another --out"
            ) from err

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    # study table
    def info(self) -> dict[str, str]:
        return dict(self.connection.execute("SELECT key, value FROM study").fetchall())

    def set_info(self, values: dict[str, str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO study (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )
            db.execute(
                "INSERT OR IGNORE INTO study (key, value) VALUES ('created', ?)",
                (datetime.now(timezone.utc).isoformat(timespec="seconds"),),
            )

    # runs
    def runs(self) -> dict[str, RunRow]:
        rows = self.connection.execute(
            "SELECT run_id, task, train_domains, method, seed, status, error, started, "
            "finished, seconds, attempts FROM runs"
        ).fetchall()
        out = {}
        for row in rows:
            out[row[0]] = RunRow(row[0], row[1], json.loads(row[2]), *row[3:])
        return out

    def start_run(
        self,
        run_id: str,
        task: str,
        train_domains: list[str],
        method: str,
        seed: int,
        config: dict,
    ) -> None:
        """Mark a run 'running' (inserting it, or counting one more attempt)."""
        with self.transaction() as db:
            _delete_results(db, [(run_id,)])
            db.execute(
                "INSERT INTO runs (run_id, task, train_domains, method, seed, config, status, "
                "started, attempts) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, 1) "
                "ON CONFLICT(run_id) DO UPDATE SET status = 'running', error = NULL, "
                "started = excluded.started, finished = NULL, seconds = NULL, "
                "attempts = runs.attempts + 1",
                (
                    run_id,
                    task,
                    json.dumps(sorted(train_domains)),
                    method,
                    int(seed),
                    config_json(config),
                    time.time(),
                ),
            )

    def finish_run(
        self,
        run_id: str,
        rows: Iterable[MetricRow],
        seconds: float,
        predictions: Iterable[PredictionRow] = (),
    ) -> None:
        """Write a run's metrics and per-image predictions and mark it finished, in one
        transaction."""
        with self.transaction() as db:
            _delete_results(db, [(run_id,)])
            db.executemany(
                "INSERT INTO metrics (run_id, protocol, eval_task, domain, name, value) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, p, t, d, n, sql_value(v)) for p, t, d, n, v in rows],
            )
            db.executemany(
                "INSERT INTO predictions (run_id, protocol, eval_task, domain, n, correct) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, p, t, d, len(c), pack_correct(c)) for p, t, d, c in predictions],
            )
            db.execute(
                "UPDATE runs SET status = 'finished', error = NULL, finished = ?, seconds = ? "
                "WHERE run_id = ?",
                (time.time(), seconds, run_id),
            )

    def fail_run(self, run_id: str, error: str, seconds: float) -> None:
        with self.transaction() as db:
            _delete_results(db, [(run_id,)])
            db.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished = ?, seconds = ? "
                "WHERE run_id = ?",
                (error, time.time(), seconds, run_id),
            )

    def delete_runs(self, run_ids: Iterable[str]) -> None:
        ids = [(r,) for r in run_ids]
        with self.transaction() as db:
            _delete_results(db, ids)
            db.executemany("DELETE FROM runs WHERE run_id = ?", ids)


def _delete_results(db: sqlite3.Connection, ids: list[tuple[str]]) -> None:
    db.executemany("DELETE FROM metrics WHERE run_id = ?", ids)
    db.executemany("DELETE FROM predictions WHERE run_id = ?", ids)


class StudyLock:
    """An exclusive lock on `<out>/.lock-<shard>` for as long as one process writes that
    database. flock locks vanish with the process, so a killed run never leaves a stale lock."""

    def __init__(self, out_dir: str | Path, shard: tuple[int, int] | None):
        self.out_dir = Path(out_dir)
        label = "all" if shard is None else f"{shard[0]}-of-{shard[1]}"
        self.path = self.out_dir / f".lock-{label}"
        self._file = None

    def acquire(self) -> StudyLock:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ClipgaugeError(
                f"study folder {self.out_dir} is in use by another clipgauge process "
                f"(pid {holder}); wait for it to finish or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
