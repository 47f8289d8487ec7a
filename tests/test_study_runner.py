"""Studies end to end on a tiny world-trained model: protocols, resume, failures, shards, lock."""

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clipgauge.cli import main
from clipgauge.errors import ClipgaugeError
from clipgauge.measures import MEASURE_FIELDS
from clipgauge.study import protocols
from clipgauge.study.context import cap_per_domain
from clipgauge.study.plan import parse_shard
from clipgauge.study.runner import run_study
from clipgauge.study.spec import SpecError
from clipgauge.training.engine import TrainingDivergedError
from clipgauge.world import load_tasks, world_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

FIELDS = len(MEASURE_FIELDS)
SPEC = """\
name: tiny
model: {model}
world: {{per_class: 3, size: 32}}
tasks:
  sizes:
    train_domains: [[photo]]
  textures:
    train_domains: [[cartoon, photo]]
  counts:                       # forgetting only, two of its domains
    domains: [photo, sketch]
    train_domains: []
methods:
  bitfit: {{}}
  clip-adapter: {{}}
training:
  epochs: 1
  batch_size: 8
seeds: {seeds}
"""


@pytest.fixture(scope="module")
def world_model(tmp_path_factory) -> Path:
    """A tiny CLIP trained for 3 steps on world captions: its tokenizer knows every world word."""
    from tinyworld import TINY_PRETRAIN

    from clipgauge.world.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(**TINY_PRETRAIN)
    threads = torch.get_num_threads()
    try:
        return pretrain(config, tmp_path_factory.mktemp("models") / "tiny-world", progress=False)
    finally:
        torch.set_num_threads(threads)


def write_spec(folder: Path, model: Path, seeds="[0]", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(SPEC.format(model=model, seeds=seeds) + textwrap.dedent(extra))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, world_model):
    """One complete tiny study (7 runs: 6, and 1 that measures the evaluation-only task);
    tests that change it work on a copy."""
    base = tmp_path_factory.mktemp("study")
    spec = write_spec(base, world_model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_study(spec, base / "out", progress=False)
    finally:
        torch.set_num_threads(threads)
    return spec, base / "out", result


def copy_study(finished, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    return out


def query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, args).fetchall()


def runs_table(db: Path) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in query(db, "SELECT * FROM runs")}


def test_a_tiny_study_stores_every_run_and_protocol(finished):
    _, out, result = finished
    db = out / "study.sqlite"
    assert result.ok and (result.planned, result.finished, result.skipped) == (7, 7, 0)
    rows = query(
        db, "SELECT run_id, task, train_domains, method, seed, status, attempts, config FROM runs"
    )
    # counts trains nothing: one zero-shot run measures it
    assert sorted((r[1], r[2], r[3]) for r in rows) == sorted(
        [("counts", "[]", "zeroshot")]
        + [
            (task, domains, method)
            for task, domains in [("sizes", '["photo"]'), ("textures", '["cartoon", "photo"]')]
            for method in ["zeroshot", "bitfit", "clip-adapter"]
        ]
    )
    for run_id, task, *_, status, attempts, config in rows:
        assert status == "finished" and attempts == 1
        assert hashlib.sha256(config.encode()).hexdigest()[:16] == run_id  # the config hash
        config = json.loads(config)
        assert config["model"]["fingerprint"] and config["preprocessing"]["image_mean"]
        assert config["task"]["templates"] == list(load_tasks()[task].templates)  # its own
    # rows per protocol per run: (domains + overall) x every measure
    sizes, textures, counts = 4, 4, 2
    expected = {
        "sizes": {"measure_before": sizes + 1, "measure_after": sizes + 1, "id": 1 + 1,
                  "dg": 3 + 1, "cf_before": textures + 1 + counts + 1,
                  "cf_after": textures + 1 + counts + 1},
        "textures": {"measure_before": textures + 1, "measure_after": textures + 1,
                     "id": 2 + 1, "dg": 2 + 1, "cf_before": sizes + 1 + counts + 1,
                     "cf_after": sizes + 1 + counts + 1},
        "counts": {"measure_before": counts + 1},
    }  # fmt: skip
    counted = query(
        db,
        "SELECT r.task, r.method, m.protocol, count(*) FROM metrics m JOIN runs r "
        "USING (run_id) GROUP BY r.run_id, m.protocol",
    )
    assert len(counted) == 6 * 6 + 1
    for task, _, protocol, count in counted:
        assert count == expected[task][protocol] * FIELDS, (task, protocol)
    domains = {
        d for (d,) in query(db, "SELECT DISTINCT domain FROM metrics WHERE eval_task = 'counts'")
    }
    assert domains == {"photo", "sketch", "overall"}
    assert (out / "cache").is_dir() and not list(out.glob("runs/*/trained.safetensors"))


def test_zeroshot_is_the_baseline_and_before_numbers_are_shared(finished):
    db = finished[1] / "study.sqlite"

    def values(method, protocol, task="sizes", eval_task=None):
        return dict(
            query(
                db,
                "SELECT m.domain || '/' || m.name, m.value FROM metrics m JOIN runs r "
                "USING (run_id) WHERE r.method = ? AND m.protocol = ? AND r.task = ? "
                "AND m.eval_task = ?",
                method,
                protocol,
                task,
                eval_task or task,
            )
        )

    before = values("zeroshot", "measure_before")
    assert values("zeroshot", "measure_after") == before
    assert values("bitfit", "measure_before") == before  # same base numbers in every run
    assert values("clip-adapter", "cf_before", eval_task="textures") == values(
        "zeroshot", "cf_after", eval_task="textures"
    )
    zeroshot_id = values("zeroshot", "id")
    assert zeroshot_id["photo/zero_shot_accuracy"] == before["photo/zero_shot_accuracy"]
    # the adapter changed the image embeddings, so a measure moved
    after = values("clip-adapter", "measure_after")
    assert after["overall/acs"] != before["overall/acs"]
    assert after["overall/n_images"] == before["overall/n_images"] == 8


def test_rerun_skips_finished_runs_and_adds_no_rows(finished, tmp_path):
    spec, _, _ = finished
    out = copy_study(finished, tmp_path)
    db = out / "study.sqlite"
    runs_before = runs_table(db)
    metrics_before = query(db, "SELECT count(*) FROM metrics")
    result = run_study(spec, out, progress=False)
    assert (result.finished, result.skipped, result.failed) == (0, 7, [])
    assert runs_table(db) == runs_before  # timestamps and attempts unchanged
    assert query(db, "SELECT count(*) FROM metrics") == metrics_before


def test_an_interrupted_run_is_redone(finished, tmp_path):
    spec, _, _ = finished
    out = copy_study(finished, tmp_path)
    db = out / "study.sqlite"
    (run_id,) = query(db, "SELECT run_id FROM runs WHERE task='sizes' AND method='bitfit'")[0]
    before = runs_table(db)
    # as if the process had been killed mid-run: status stays 'running', metrics half-written
    query(db, "UPDATE runs SET status = 'running', finished = NULL WHERE run_id = ?", run_id)
    query(db, "DELETE FROM metrics WHERE run_id = ? AND protocol = 'dg'", run_id)
    result = run_study(spec, out, progress=False)
    assert (result.finished, result.skipped) == (1, 6)
    after = runs_table(db)
    assert after[run_id][5] == "finished" and after[run_id][-1] == 2  # status, attempts
    assert {k: v for k, v in after.items() if k != run_id} == {
        k: v for k, v in before.items() if k != run_id
    }
    assert query(db, "SELECT count(*) FROM metrics") == query(
        finished[1] / "study.sqlite", "SELECT count(*) FROM metrics"
    )


def test_a_failing_run_is_recorded_and_the_study_goes_on(
    world_model, tmp_path, monkeypatch, capsys
):
    spec = write_spec(tmp_path, world_model)
    real = protocols.finetune

    def flaky(*args, **kwargs):
        if kwargs["method"] == "clip-adapter":
            raise TrainingDivergedError("the loss became nan at step 1")
        return real(*args, **kwargs)

    monkeypatch.setattr(protocols, "finetune", flaky)
    result = run_study(spec, tmp_path / "out", progress=False)
    db = tmp_path / "out" / "study.sqlite"
    assert (result.finished, len(result.failed)) == (5, 2)
    failed = query(db, "SELECT run_id, method, error FROM runs WHERE status = 'failed'")
    assert {m for _, m, _ in failed} == {"clip-adapter"}
    assert all("loss became nan" in error for *_, error in failed)
    assert query(db, "SELECT count(*) FROM metrics WHERE run_id = ?", failed[0][0]) == [(0,)]
    log = tmp_path / "out" / "runs" / failed[0][0] / "error.log"
    assert "TrainingDivergedError" in log.read_text()

    monkeypatch.setattr(protocols, "finetune", real)
    code = main(["study", str(spec), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code in (0, 1)  # 1 only if the report could not be built
    statuses = query(db, "SELECT method, status, attempts FROM runs ORDER BY method")
    assert all(status == "finished" for _, status, _ in statuses)
    assert {(m, a) for m, _, a in statuses if m == "clip-adapter"} == {("clip-adapter", 2)}
    capsys.readouterr()


def test_shards_cover_every_run_once(finished, world_model, tmp_path):
    spec = write_spec(tmp_path, world_model)
    out = tmp_path / "out"
    first = run_study(spec, out, shard="1/2", progress=False)
    second = run_study(spec, out, shard="2/2", progress=False)
    assert (first.planned, second.planned) == (4, 3)
    dbs = sorted(p.name for p in out.glob("*.sqlite"))
    assert dbs == ["study-shard-1-of-2.sqlite", "study-shard-2-of-2.sqlite"]
    ids = [set(runs_table(out / name)) for name in dbs]
    assert not ids[0] & ids[1]
    # the same runs (same config hashes) as the unsharded study in another folder
    assert ids[0] | ids[1] == set(runs_table(finished[1] / "study.sqlite"))
    assert query(out / dbs[1], "SELECT value FROM study WHERE key = 'shard'") == [("2/2",)]
    with pytest.raises(ClipgaugeError, match="--shard .../2"):
        run_study(spec, out, progress=False)


def test_a_second_process_gets_a_clear_error(finished, tmp_path):
    spec, _, _ = finished
    out = copy_study(finished, tmp_path)
    runs_before = runs_table(out / "study.sqlite")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from clipgauge.study.store import StudyLock; "
            f"lock = StudyLock({str(out)!r}, None).acquire(); print('locked', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ClipgaugeError) as info:
            run_study(spec, out, progress=False)
        message = str(info.value)
        assert f"in use by another clipgauge process (pid {holder.pid})" in message
        assert "--out" in message
        assert runs_table(out / "study.sqlite") == runs_before  # untouched
    finally:
        holder.communicate("", timeout=30)
    # the lock goes with the process that held it
    assert run_study(spec, out, progress=False).skipped == 7


def test_cli_runs_a_study_end_to_end_and_ctrl_c_leaves_the_run_unfinished(
    world_model, tmp_path, monkeypatch, capsys
):
    spec = write_spec(tmp_path, world_model, seeds="[0, 1]")
    out = tmp_path / "out"
    real = protocols.finetune

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocols, "finetune", interrupted)
    assert main(["study", str(spec), "--out", str(out), "--no-progress"]) == 130
    db = out / "study.sqlite"
    assert query(db, "SELECT method, status FROM runs WHERE status != 'finished'") == [
        ("bitfit", "running")
    ]
    capsys.readouterr()

    monkeypatch.setattr(protocols, "finetune", real)
    assert main(["study", str(spec), "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "13 run(s) in" in stdout and "11 finished now, 2 already finished" in stdout
    assert "bitfit" in stdout and "clip-adapter" in stdout and "report:" in stdout
    assert query(db, "SELECT count(*), sum(attempts) FROM runs WHERE status = 'finished'") == [
        (13, 14)
    ]


def test_a_changed_spec_refuses_to_mix_until_pruned(finished, world_model, tmp_path):
    out = copy_study(finished, tmp_path)
    fewer = write_spec(tmp_path, world_model)
    fewer.write_text(fewer.read_text().replace("  clip-adapter: {}\n", ""))
    with pytest.raises(ClipgaugeError, match="2 run.* no longer plans .*--prune"):
        run_study(fewer, out, progress=False)
    result = run_study(fewer, out, progress=False, prune=True)
    assert (result.pruned, result.skipped, result.finished) == (2, 5, 0)
    assert query(out / "study.sqlite", "SELECT count(*) FROM runs") == [(5,)]


def test_missing_data_is_a_spec_error_before_any_run(world_model, tmp_path):
    spec = write_spec(tmp_path, world_model)
    mine = "  mine:\n    data: nowhere\n    train_domains: [[a]]\nmethods:"
    spec.write_text(spec.read_text().replace("methods:", mine, 1))
    with pytest.raises(SpecError, match=r"study.yaml:13: tasks.mine.data: no such dataset path"):
        run_study(spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "study.sqlite").exists()


def test_parse_shard_and_cap_per_domain():
    assert parse_shard(None) is None and parse_shard("1/1") is None
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "x", "1/2/3"):
        with pytest.raises(ClipgaugeError, match="--shard"):
            parse_shard(bad)
    data = world_dataset("sizes", per_class=3, size=32)
    capped = cap_per_domain(data, 4)
    per_domain = {}
    for item in capped.items:
        per_domain.setdefault(item.domain, []).append(item.label)
    assert {d: sorted(labels) for d, labels in per_domain.items()} == {
        d: [0, 0, 1, 1] for d in range(4)
    }
    assert cap_per_domain(data, None) is data


@pytest.mark.slow
def test_workers_give_the_same_numbers(finished, tmp_path):
    spec, single, _ = finished
    result = run_study(spec, tmp_path / "out", workers=2, progress=False)
    assert (result.finished, result.failed) == (7, [])
    sql = "SELECT run_id, protocol, eval_task, domain, name, value FROM metrics "
    sql += " ORDER BY 1, 2, 3, 4, 5"
    ours = query(tmp_path / "out" / "study.sqlite", sql)
    theirs = query(single / "study.sqlite", sql)
    assert [r[:5] for r in ours] == [r[:5] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert (a[5] is None and b[5] is None) or a[5] == pytest.approx(b[5], abs=1e-5)


def test_per_image_predictions_reproduce_the_stored_accuracies(world_model, tmp_path):
    import numpy as np

    from clipgauge.study.store import unpack_correct

    spec = write_spec(tmp_path, world_model)
    run_study(spec, tmp_path / "out", progress=False)
    db = tmp_path / "out" / "study.sqlite"
    predictions = query(
        db, "SELECT run_id, protocol, eval_task, domain, n, correct FROM predictions"
    )
    assert {p for _, p, *_ in predictions} >= {"id", "cf_before", "cf_after"}
    sizes = {}
    for run_id, protocol, task, domain, n, blob in predictions:
        flags = unpack_correct(blob, n)
        assert flags.dtype == bool and len(flags) == n
        (accuracy,) = query(
            db,
            "SELECT value FROM metrics WHERE run_id = ? AND protocol = ? AND eval_task = ? "
            "AND domain = ? AND name = 'zero_shot_accuracy'",
            run_id,
            protocol,
            task,
            domain,
        )[0]
        assert np.isclose(flags.mean(), accuracy, atol=1e-12)
        sizes.setdefault((task, domain), set()).add(n)
    # every run is scored on the same test images of a task and domain
    assert all(len(n) == 1 for n in sizes.values())


def test_wall_time_is_stored_and_summed_over_resumes(finished, tmp_path):
    out = copy_study(finished, tmp_path)
    db = out / "study.sqlite"
    (first,) = query(db, "SELECT value FROM study WHERE key = 'wall_seconds'")[0]
    assert float(first) > 0
    run_study(finished[0], out, progress=False)  # nothing to do: adds only its own time
    (second,) = query(db, "SELECT value FROM study WHERE key = 'wall_seconds'")[0]
    assert float(first) <= float(second) < float(first) + 60
