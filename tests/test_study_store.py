"""The study store on a temporary SQLite file: schema, run status transitions, results,
per-image flags against hand-written bit patterns, file names and the folder lock. Fast: no
model, no study; tests/test_study_runner.py drives the store end to end."""

import fcntl
import hashlib
import os
import re
import sqlite3
import time

import numpy as np
import pytest

from clipgauge.errors import ClipgaugeError
from clipgauge.study.store import (
    StudyLock,
    StudyStore,
    config_hash,
    config_json,
    database_name,
    database_paths,
    open_all,
    pack_correct,
    parse_wise_protocol,
    shard_count,
    shard_label,
    sql_value,
    unpack_correct,
    wise_protocol,
)

CONFIG = {"method": {"name": "bitfit"}, "seed": 1, "a": [2, 1]}


@pytest.fixture
def store(tmp_path):
    store = StudyStore(tmp_path / "two" / "levels" / "study.sqlite")
    yield store
    store.close()


def read(store: StudyStore, sql: str, *args) -> list[tuple]:
    """What another process would read: a connection of its own."""
    connection = sqlite3.connect(store.path)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def run_row(store: StudyStore, run_id: str) -> dict:
    connection = sqlite3.connect(store.path)
    connection.row_factory = sqlite3.Row
    try:
        row = connection.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row) if row is not None else {}
    finally:
        connection.close()


def results(store: StudyStore, run_id: str) -> tuple[list[tuple], list[tuple]]:
    metrics = read(
        store,
        "SELECT protocol, eval_task, domain, name, value FROM metrics WHERE run_id = ? "
        "ORDER BY protocol, domain, name",
        run_id,
    )
    predictions = read(
        store,
        "SELECT protocol, eval_task, domain, n, correct FROM predictions WHERE run_id = ? "
        "ORDER BY protocol, domain",
        run_id,
    )
    return metrics, predictions


# --- per-image flags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "blob"),
    [
        ([1, 0, 1, 1, 0, 0, 0, 0, 1], b"\xb0\x80"),  # big-endian bits, the last byte padded
        ([0, 0, 0, 0, 0, 0, 0, 1], b"\x01"),
        ([1] * 8 + [0] * 7 + [1], b"\xff\x01"),
        ([], b""),
    ],
)
def test_packed_flags_are_the_hand_written_bytes(flags, blob):
    assert pack_correct(np.array(flags, dtype=bool)) == blob
    unpacked = unpack_correct(blob, len(flags))
    assert unpacked.dtype == np.bool_ and unpacked.tolist() == [bool(f) for f in flags]


def test_pack_takes_any_truthy_values_and_unpack_stops_at_n():
    assert pack_correct([2, 0, -1, 0.5, 0, 0, 0, 0]) == b"\xb0"
    assert unpack_correct(b"\xff", 3).tolist() == [True, True, True]
    assert unpack_correct(b"\x80\x00", 9).tolist() == [True] + [False] * 8


# --- WiSE-FT protocol names -------------------------------------------------------------------


def test_wise_protocol_names():
    assert wise_protocol("dg", 0.5) == "dg@0.5"
    assert wise_protocol("id", 1.0) == "id@1" and wise_protocol("cf_after", 0.25) == "cf_after@0.25"
    assert parse_wise_protocol("dg@0.5") == ("dg", 0.5)
    assert parse_wise_protocol("cf_after@1") == ("cf_after", 1.0)
    assert parse_wise_protocol("id@0") == ("id", 0.0)
    for other in ("dg", "cf_before@0.5", "measure_after@1", "id@half", "id@", "@0.5", "dg0.5"):
        assert parse_wise_protocol(other) is None


# --- file names and canonical configs ---------------------------------------------------------


def test_database_names_and_shard_counts():
    assert database_name(None) == "study.sqlite"
    assert database_name((2, 5)) == "study-shard-2-of-5.sqlite"
    assert shard_label(None) == "1/1" and shard_label((3, 4)) == "3/4"
    assert shard_count("study.sqlite") == 1
    assert shard_count("study-shard-2-of-5.sqlite") == 5
    assert shard_count("study-shard-10-of-12.sqlite") == 12
    for other in ("x.sqlite", "study-shard-2-of-5Xsqlite", "study-shard-2-of-5.sqlite-wal"):
        assert shard_count(other) is None
    assert shard_count("study-shard-a-of-5.sqlite") is None
    assert shard_count("prefix-study-shard-1-of-2.sqlite") is None


def test_database_paths_are_the_sqlite_files_sorted(tmp_path):
    for name in ("study-shard-2-of-2.sqlite", "study-shard-1-of-2.sqlite", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.sqlite").mkdir()
    assert [p.name for p in database_paths(tmp_path)] == [
        "study-shard-1-of-2.sqlite",
        "study-shard-2-of-2.sqlite",
    ]
    assert [p.name for p in database_paths(str(tmp_path))][0] == "study-shard-1-of-2.sqlite"


def test_open_all_yields_each_database_and_closes_it(tmp_path):
    for i in (1, 2):
        connection = sqlite3.connect(tmp_path / f"study-shard-{i}-of-2.sqlite")
        connection.execute("CREATE TABLE t (shard INTEGER)")
        connection.execute("INSERT INTO t VALUES (?)", (i,))
        connection.commit()
        connection.close()
    seen, connections = [], []
    for connection in open_all(tmp_path):
        seen.append(connection.execute("SELECT shard FROM t").fetchone()[0])
        connections.append(connection)
    assert seen == [1, 2]
    for connection in connections:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            connection.execute("SELECT 1")


def test_config_json_is_canonical_and_run_id_is_its_sha256_prefix():
    text = '{"a": [2, 1], "method": {"name": "bitfit"}, "seed": 1}'
    assert config_json(CONFIG) == text
    assert config_json({"seed": 1, "method": {"name": "bitfit"}, "a": [2, 1]}) == text
    run_id = config_hash(CONFIG)
    assert run_id == hashlib.sha256(text.encode()).hexdigest()[:16] and len(run_id) == 16


def test_sql_values():
    assert sql_value(None) is None and sql_value(float("nan")) is None
    assert sql_value(np.float32("nan")) is None
    assert sql_value(np.float32(0.5)) == 0.5 and type(sql_value(np.float32(0.5))) is float
    assert sql_value(1) == 1.0 and type(sql_value(1)) is float
    assert sql_value(0) == 0.0 and sql_value(-2.5) == -2.5
    assert sql_value(float("inf")) == float("inf")


# --- the database -----------------------------------------------------------------------------

COLUMNS = {
    "study": ["key", "value"],
    "runs": [
        "run_id", "task", "train_domains", "method", "seed", "config", "status", "error",
        "started", "finished", "seconds", "attempts",
    ],
    "metrics": ["run_id", "protocol", "eval_task", "domain", "name", "value"],
    "predictions": ["run_id", "protocol", "eval_task", "domain", "n", "correct"],
}  # fmt: skip


def test_a_new_store_has_the_documented_schema_in_wal_mode(store):
    assert store.path.is_file()  # its folder was made
    tables = read(store, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert [t for (t,) in tables] == sorted(COLUMNS)
    for table, columns in COLUMNS.items():
        assert [row[1] for row in read(store, f"PRAGMA table_info({table})")] == columns
    assert read(store, "PRAGMA journal_mode") == [("wal",)]
    assert store.connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert store.connection.isolation_level is None
    assert store.info() == {} and store.runs() == {}


def test_reopening_keeps_the_data(tmp_path):
    first = StudyStore(tmp_path / "study.sqlite")
    first.start_run("r1", "shapes", ["photo"], "lora", 0, CONFIG)
    first.close()
    again = StudyStore(tmp_path / "study.sqlite")
    assert list(again.runs()) == ["r1"]
    again.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "study.sqlite"
    path.write_bytes(b"not a database, " * 256)
    with pytest.raises(ClipgaugeError) as err:
        StudyStore(path)
    assert str(err.value).startswith(f"{path} is not a usable study database (")
    assert str(err.value).endswith("); move it away or use another --out")


def test_study_info_upserts_and_created_is_set_once(store):
    store.set_info({"spec": "{}", "shard": "1/1"})
    info = store.info()
    assert info["spec"] == "{}" and info["shard"] == "1/1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", info["created"])
    created = info["created"]
    store.set_info({"spec": '{"name": "s"}', "wall_seconds": "3.5"})
    assert store.info() == {
        "spec": '{"name": "s"}',
        "shard": "1/1",
        "created": created,
        "wall_seconds": "3.5",
    }
    assert dict(read(store, "SELECT key, value FROM study"))["spec"] == '{"name": "s"}'


def test_created_is_not_overwritten(store):
    store.set_info({"spec": "{}"})
    connection = sqlite3.connect(store.path)
    connection.execute("UPDATE study SET value = 'earlier' WHERE key = 'created'")
    connection.commit()
    connection.close()
    store.set_info({"spec": "{}"})
    assert store.info()["created"] == "earlier"


def test_start_run_inserts_a_running_row(store):
    before = time.time()
    store.start_run("r1", "shapes", ["sketch", "photo"], "lora", np.int64(3), CONFIG)
    row = run_row(store, "r1")
    assert before <= row.pop("started") <= time.time()
    assert row == {
        "run_id": "r1",
        "task": "shapes",
        "train_domains": '["photo", "sketch"]',
        "method": "lora",
        "seed": 3,
        "config": config_json(CONFIG),
        "status": "running",
        "error": None,
        "finished": None,
        "seconds": None,
        "attempts": 1,
    }
    (run,) = store.runs().values()
    assert (run.run_id, run.task, run.train_domains, run.method, run.seed) == (
        "r1",
        "shapes",
        ["photo", "sketch"],
        "lora",
        3,
    )
    assert (run.status, run.error, run.finished, run.seconds, run.attempts) == (
        "running",
        None,
        None,
        None,
        1,
    )
    assert isinstance(run.started, float)


ROWS = [
    ("id", "shapes", "photo", "zero_shot_accuracy", 0.75),
    ("id", "shapes", "overall", "silhouette_modality", float("nan")),
    ("dg", "shapes", "sketch", "zero_shot_accuracy", np.float32(0.5)),
]
FLAGS = [
    ("id", "shapes", "photo", np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)),
    ("dg", "shapes", "sketch", np.array([0, 1], dtype=bool)),
]
STORED_METRICS = [
    ("dg", "shapes", "sketch", "zero_shot_accuracy", 0.5),
    ("id", "shapes", "overall", "silhouette_modality", None),
    ("id", "shapes", "photo", "zero_shot_accuracy", 0.75),
]
STORED_FLAGS = [("dg", "shapes", "sketch", 2, b"\x40"), ("id", "shapes", "photo", 9, b"\xb0\x80")]


def test_finish_run_stores_metrics_flags_and_status(store):
    store.start_run("r1", "shapes", ["photo"], "lora", 0, CONFIG)
    store.start_run("other", "shapes", ["photo"], "full", 0, CONFIG)
    store.finish_run("other", ROWS[:1], 1.0, FLAGS[:1])
    before = time.time()
    store.finish_run("r1", iter(ROWS), 12.5, iter(FLAGS))
    assert results(store, "r1") == (STORED_METRICS, STORED_FLAGS)
    row = run_row(store, "r1")
    assert (row["status"], row["error"], row["seconds"], row["attempts"]) == (
        "finished",
        None,
        12.5,
        1,
    )
    assert before <= row["finished"] <= time.time()
    assert results(store, "other")[0] == [STORED_METRICS[2]]  # untouched
    # Finishing again replaces the results, never adds to them.
    store.finish_run("r1", ROWS[:1], 3.0)
    assert results(store, "r1") == ([STORED_METRICS[2]], [])
    assert len(results(store, "other")[1]) == 1


def test_finish_run_defaults_to_no_predictions(store):
    store.start_run("r1", "shapes", ["photo"], "lora", 0, CONFIG)
    store.finish_run("r1", ROWS, 1.0)
    assert results(store, "r1") == (STORED_METRICS, [])
    assert run_row(store, "r1")["status"] == "finished"


def test_a_failed_finish_writes_nothing(store):
    """Metrics and status go in one transaction: a bad row leaves the run running, no rows."""
    store.start_run("r1", "shapes", ["photo"], "lora", 0, CONFIG)
    duplicate = ROWS + [ROWS[0]]
    with pytest.raises(sqlite3.IntegrityError):
        store.finish_run("r1", duplicate, 1.0, FLAGS)
    assert results(store, "r1") == ([], [])
    assert run_row(store, "r1")["status"] == "running"
    store.finish_run("r1", ROWS, 1.0)  # the store is usable afterwards (no open transaction)
    assert run_row(store, "r1")["status"] == "finished"


def test_fail_then_restart_then_finish(store):
    store.start_run("r1", "shapes", ["photo"], "lora", 0, CONFIG)
    store.finish_run("r1", ROWS, 1.0, FLAGS)
    before = time.time()
    store.fail_run("r1", "loss became NaN", 4.0)
    row = run_row(store, "r1")
    assert (row["status"], row["error"], row["seconds"]) == ("failed", "loss became NaN", 4.0)
    assert before <= row["finished"] <= time.time()
    assert results(store, "r1") == ([], [])  # a failed run keeps no results

    store.start_run("r1", "shapes", ["photo"], "lora", 0, {"changed": True})
    row = run_row(store, "r1")
    assert row["status"] == "running" and row["attempts"] == 2
    assert row["error"] is None and row["finished"] is None and row["seconds"] is None
    assert row["started"] >= before
    assert row["config"] == config_json(CONFIG)  # a run's config is its id: never rewritten
    store.finish_run("r1", ROWS, 2.0)
    store.start_run("r1", "shapes", ["photo"], "lora", 0, CONFIG)  # a rerun clears results
    assert results(store, "r1") == ([], [])
    assert run_row(store, "r1")["attempts"] == 3


def test_fail_run_keeps_other_runs_results(store):
    for run_id in ("r1", "r2"):
        store.start_run(run_id, "shapes", ["photo"], "lora", 0, CONFIG)
        store.finish_run(run_id, ROWS, 1.0, FLAGS)
    store.fail_run("r1", "boom", 1.0)
    assert results(store, "r2") == (STORED_METRICS, STORED_FLAGS)
    assert run_row(store, "r2")["status"] == "finished"


def test_delete_runs_removes_rows_and_results(store):
    for run_id in ("r1", "r2", "r3"):
        store.start_run(run_id, "shapes", ["photo"], "lora", 0, CONFIG)
        store.finish_run(run_id, ROWS, 1.0, FLAGS)
    store.delete_runs(iter(["r1", "r3"]))
    assert list(store.runs()) == ["r2"]
    assert results(store, "r1") == ([], []) and results(store, "r3") == ([], [])
    assert results(store, "r2") == (STORED_METRICS, STORED_FLAGS)


def test_a_transaction_rolls_back_and_reraises(store):
    with pytest.raises(KeyboardInterrupt):
        with store.transaction() as db:
            db.execute("INSERT INTO study (key, value) VALUES ('k', 'v')")
            raise KeyboardInterrupt
    assert store.info() == {}
    with store.transaction() as db:
        db.execute("INSERT INTO study (key, value) VALUES ('k', 'v')")
    assert read(store, "SELECT value FROM study WHERE key = 'k'") == [("v",)]


# --- the folder lock --------------------------------------------------------------------------


def test_lock_names(tmp_path):
    assert StudyLock(tmp_path, None).path == tmp_path / ".lock-all"
    assert StudyLock(str(tmp_path), (2, 3)).path == tmp_path / ".lock-2-of-3"


def test_a_held_lock_refuses_a_second_writer_and_names_the_pid(tmp_path):
    out = tmp_path / "new" / "study"  # neither folder exists yet
    with StudyLock(out, None) as lock:
        assert lock.path.read_text() == str(os.getpid())
        message = rf"^study folder {re.escape(str(out))} is in use by another clipgauge "
        message += rf"process \(pid {os.getpid()}\); wait for it to finish or use another --out$"
        with pytest.raises(ClipgaugeError, match=message):
            StudyLock(out, None).acquire()
        StudyLock(out, (1, 2)).acquire().release()  # another shard has its own lock
    again = StudyLock(out, None).acquire()  # released on leaving the block
    again.release()
    again.release()  # a second release does nothing
    StudyLock(out, (2, 2)).release()  # as does releasing a lock never acquired


def test_a_lock_file_left_behind_is_rewritten(tmp_path):
    (tmp_path / ".lock-all").write_text("123456789012345")
    lock = StudyLock(tmp_path, None).acquire()
    assert (tmp_path / ".lock-all").read_text() == str(os.getpid())
    lock.release()


def test_a_holder_that_wrote_no_pid_is_unknown(tmp_path):
    path = tmp_path / ".lock-all"
    with open(path, "w") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ClipgaugeError, match=r"\(pid unknown\)"):
            StudyLock(tmp_path, None).acquire()
