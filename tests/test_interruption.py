"""Interrupting a study loses nothing, and a killed write never leaves a file that is trusted.

A study runs in a subprocess (`python -m clipgauge study`) with CLIPGAUGE_TEST_PAUSE set, so it
stops at a known point (see `clipgauge.interruption`), where the test sends SIGKILL or SIGINT.
Each interrupted study is then rerun to completion and must end with exactly one finished row
per planned run and metrics identical to an uninterrupted study with the same seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch
from imagegen import make_domainbed
from tinystudy import metric_rows, query, write_tiny_study

from clipgauge.cache import TensorCache, cache_key
from clipgauge.data.open import open_dataset
from clipgauge.embeddings import embed_dataset
from clipgauge.interruption import ENV_VAR
from clipgauge.models.loading import load_clip
from clipgauge.study.runner import run_study
from clipgauge.training import engine
from clipgauge.training.finetuning import finetune

# Chained: each point is where the next attempt at the same study folder is stopped. Plan order
# is pets (zeroshot, bitfit, clip-adapter), then food; pets/bitfit is the first run that trains
# (2 epochs). Together the two chains stop at every point of clipgauge.interruption.
KILL_POINTS = (
    "epoch-end:1",  # pets/bitfit: epoch 1 of 2 checkpointed
    "run-trained:1",  # pets/bitfit resumed from epoch 1 and trained, not yet evaluated
)
SIGINT_POINTS = (
    "train-start:1",  # pets/bitfit: config.json written, no epoch finished (no checkpoint)
    "epoch-end:3",  # pets/bitfit started over and finished; pets/clip-adapter epoch 1 of 2 saved
)
PLANNED = 6  # 2 tasks x (zeroshot, bitfit, clip-adapter) x 1 seed
TIMEOUT = 240


@contextmanager
def cpu_one_thread():
    """In-process runs as the subprocesses run them: CPU only, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with mock.patch("torch.cuda.is_available", return_value=False):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_clip_dir) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    spec = write_tiny_study(folder, tiny_clip_dir)
    with cpu_one_thread():
        result = run_study(spec, folder / "out", progress=False)
    assert result.ok and result.finished == PLANNED
    return folder / "out" / "study.sqlite"


def start_study(spec: Path, out: Path, point: str) -> subprocess.Popen:
    env = {
        **os.environ,
        ENV_VAR: point,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    argv = [sys.executable, "-m", "clipgauge", "study", str(spec), "--out", str(out)]
    return subprocess.Popen(
        [*argv, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell that starts the test run as a background job hands its children an ignored
        # SIGINT; the study must see Ctrl-C as a terminal user's foreground process would.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until_paused(process: subprocess.Popen, point: str) -> None:
    """Read stderr until the process reports the pause; fail if it ends or takes too long."""
    watchdog = threading.Timer(TIMEOUT, process.kill)
    watchdog.start()
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if line.strip() == f"clipgauge: paused at {point}":
                return
    finally:
        watchdog.cancel()
    process.wait()
    pytest.fail(f"never paused at {point} (exit {process.returncode}):\n{''.join(seen)}")


def interrupt(spec: Path, out: Path, point: str, sig: signal.Signals) -> tuple[int, str]:
    process = start_study(spec, out, point)
    wait_until_paused(process, point)
    process.send_signal(sig)
    _, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, err


def statuses(out: Path) -> dict[str, str]:
    return dict(query(out / "study.sqlite", "SELECT task || '/' || method, status FROM runs"))


def run_folder(out: Path, task: str, method: str) -> Path:
    rows = query(
        out / "study.sqlite", "SELECT run_id FROM runs WHERE task = ? AND method = ?", task, method
    )
    return out / "runs" / rows[0][0]


def finish_and_compare(spec: Path, out: Path, uninterrupted: Path) -> None:
    """Rerun to completion: one finished row per planned run, the uninterrupted metrics."""
    with cpu_one_thread():
        result = run_study(spec, out, progress=False)
    assert result.ok and result.planned == PLANNED
    db = out / "study.sqlite"
    rows = query(db, "SELECT run_id, status FROM runs")
    assert len(rows) == PLANNED and {status for _, status in rows} == {"finished"}
    assert {r for r, _ in rows} == {r for (r,) in query(uninterrupted, "SELECT run_id FROM runs")}
    assert metric_rows(db) == metric_rows(uninterrupted)  # every value, exactly


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_an_uninterrupted_study(
    tiny_clip_dir, tmp_path, uninterrupted
):
    spec = write_tiny_study(tmp_path, tiny_clip_dir)
    out = tmp_path / "out"
    for point in KILL_POINTS:
        code, err = interrupt(spec, out, point, signal.SIGKILL)
        assert code == -signal.SIGKILL, err
        assert statuses(out)["pets/bitfit"] == "running"
        run = run_folder(out, "pets", "bitfit")
        if point.startswith("epoch-end"):
            state = json.loads((run / "checkpoint" / "state.json").read_text())
            assert state["epoch"] == 1 and not (run / "trained.safetensors").exists()
        else:
            assert (run / "trained.safetensors").is_file() and (run / "result.json").is_file()
    assert statuses(out)["pets/zeroshot"] == "finished"
    finish_and_compare(spec, out, uninterrupted)
    attempts = dict(query(out / "study.sqlite", "SELECT method || '/' || task, attempts FROM runs"))
    assert attempts["bitfit/pets"] == 1 + len(KILL_POINTS) and attempts["bitfit/food"] == 1


@pytest.mark.slow
def test_sigint_saves_exits_130_and_rerun_matches_an_uninterrupted_study(
    tiny_clip_dir, tmp_path, uninterrupted
):
    spec = write_tiny_study(tmp_path, tiny_clip_dir)
    out = tmp_path / "out"
    for point, method in zip(SIGINT_POINTS, ["bitfit", "clip-adapter"], strict=True):
        code, err = interrupt(spec, out, point, signal.SIGINT)
        assert code == 130, err
        assert f"interrupted during pets [photo] {method} seed 0" in err
        assert "clipgauge study: interrupted" in err and "Traceback" not in err
        assert statuses(out)[f"pets/{method}"] == "running"
        assert not (out / "study.sqlite-wal").exists()  # the database was closed cleanly
        run = run_folder(out, "pets", method)
        if point.startswith("train-start"):
            assert (run / "config.json").is_file() and not (run / "checkpoint").exists()
        else:  # the epoch that ended before Ctrl-C is saved
            assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert statuses(out)["pets/bitfit"] == "finished"
    finish_and_compare(spec, out, uninterrupted)


# Killed writes -------------------------------------------------------------------------------

STALLED_WRITE = """
import os, sys, time
import torch
from clipgauge.cache import TensorCache

def stall(source, target):
    print("written, not yet renamed", flush=True)
    time.sleep(3600)

os.replace = stall
TensorCache(sys.argv[1]).put("images", sys.argv[2], {"embeds": torch.ones(256, 64)}, {})
"""


def test_a_cache_write_killed_before_its_rename_is_never_read(tmp_path):
    key = cache_key(kind="images", what="killed write")
    process = subprocess.Popen(
        [sys.executable, "-c", STALLED_WRITE, str(tmp_path / "cache"), key],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "written, not yet renamed"
    finally:
        process.kill()
        process.communicate(timeout=TIMEOUT)
    left = [p.name for p in (tmp_path / "cache" / "images").iterdir()]
    assert len(left) == 1 and left[0].startswith(f".{key}.safetensors.")
    assert left[0].endswith(".tmp")  # a hidden temporary name, never the entry's own
    cache = TensorCache(tmp_path / "cache")
    assert cache.get("images", key) is None
    cache.put("images", key, {"embeds": torch.zeros(2)}, {})
    assert cache.get("images", key)[0]["embeds"].tolist() == [0.0, 0.0]


def test_a_truncated_cache_entry_is_recomputed(tiny_clip_dir, tmp_path, one_thread):
    data = open_dataset(make_domainbed(tmp_path / "data", ["photo", "art"], ["cat", "dog"]))
    bundle = load_clip(str(tiny_clip_dir), device="cpu")
    cache = TensorCache(tmp_path / "cache")
    fresh = embed_dataset(bundle, data, ["a photo of a {}."], cache=cache, progress=False)
    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 2
    for entry in entries:  # as a copy cut short or a full disk would leave them
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    again = embed_dataset(bundle, data, ["a photo of a {}."], cache=cache, progress=False)
    assert not again.from_cache
    assert torch.equal(again.image_embeds, fresh.image_embeds)
    assert torch.equal(again.text_embeds, fresh.text_embeds)
    cached = embed_dataset(bundle, data, ["a photo of a {}."], cache=cache, progress=False)
    assert cached.from_cache and torch.equal(cached.image_embeds, fresh.image_embeds)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing below the pause point runs, no cleanup either."""


def test_a_run_killed_while_writing_resumes_from_its_last_complete_checkpoint(
    tiny_clip_dir, tmp_path, monkeypatch, one_thread
):
    data = make_domainbed(tmp_path / "data", ["photo", "art"], ["cat", "dog"], per_class=5)
    options = dict(
        model=str(tiny_clip_dir),
        data=str(data),
        train_domains=["photo"],
        method="clip-adapter",
        train_config={"epochs": 2, "batch_size": 4},
        device="cpu",
        progress=False,
    )
    whole = finetune(**options, out_dir=tmp_path / "whole")

    def die_after_first_epoch(point: str) -> None:
        if point == "epoch-end":
            raise Killed

    monkeypatch.setattr(engine, "pause_point", die_after_first_epoch)
    with pytest.raises(Killed):
        finetune(**options, out_dir=tmp_path / "killed")
    monkeypatch.undo()
    run = tmp_path / "killed"
    checkpoint = run / "checkpoint"
    # What the writes of epoch 2 leave when killed part-way: temporary files only.
    (checkpoint / ".state-epoch2.safetensors.x1.tmp").write_bytes(b"\0" * 100)
    (checkpoint / ".state.json.x2.tmp").write_text('{"epoch": 2, "tens')
    (run / ".metrics.jsonl.x3.tmp").write_text('{"epoch": 2')
    (run / ".trained.safetensors.x4.tmp").write_bytes(b"\0" * 10)
    assert json.loads((checkpoint / "state.json").read_text())["epoch"] == 1

    resumed = finetune(**options, out_dir=run, resume=True)
    assert resumed.trained_digest == whole.trained_digest
    assert [m["train_loss"] for m in resumed.metrics[1:]] == [
        m["train_loss"] for m in whole.metrics[1:]
    ]
