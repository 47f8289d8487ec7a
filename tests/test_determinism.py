"""On CPU the same command with the same seed gives identical numbers twice.

Checked for measure, for finetune with every registered method (the registry is iterated, so a
new method is covered the moment it is registered) and for a small study. "Identical" is exact
equality of every stored number, not closeness.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from imagegen import make_domainbed
from method_options import tiny_options
from tinystudy import metric_rows, query, write_tiny_study

from clipgauge.cli import main
from clipgauge.methods import method_names
from clipgauge.study.runner import run_study

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("determinism") / "task"
    return make_domainbed(root, ["photo", "art"], ["cat", "dog"], per_class=5)


def run_cli(capsys, *argv) -> None:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err


def test_measure_twice_gives_the_same_numbers(capsys, tiny_clip_dir, task, tmp_path):
    reports = []
    for attempt in ("first", "second"):
        out = tmp_path / f"{attempt}.json"
        run_cli(
            capsys,
            *("measure", "--model", tiny_clip_dir, "--data", task, "--device", "cpu"),
            *("--split", "test", "--seed", "3", "--no-cache", "--no-progress", "--json", out),
        )
        reports.append(json.loads(out.read_text()))
    assert reports[0] == reports[1]  # every measure, per domain and overall, and provenance
    assert reports[0]["overall"]["n_images"] == 4


def finetune_run(capsys, model, data, out: Path, method: str, seed: int) -> dict:
    run_cli(
        capsys,
        *("finetune", "--model", model, "--data", data, "--train-domains", "photo"),
        *("--method", method, "--seed", seed, "--epochs", "2", "--batch-size", "4"),
        *("--lr", "1e-3", "--device", "cpu", "--out", out, "--no-progress"),
        *(f"--method-opt={k}={v}" for k, v in tiny_options(method).items()),
    )
    result = json.loads((out / "result.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for record in metrics:
        record.pop("epoch_seconds", None)  # wall-clock time, the one number that may differ
    return {"result": result, "metrics": metrics}


@pytest.mark.parametrize("method", method_names())
def test_finetune_twice_gives_the_same_weights_and_metrics(
    capsys, tiny_clip_dir, task, tmp_path, method
):
    first = finetune_run(capsys, tiny_clip_dir, task, tmp_path / "first", method, seed=7)
    second = finetune_run(capsys, tiny_clip_dir, task, tmp_path / "second", method, seed=7)
    assert first == second  # trained-tensor digest, best epoch, losses, accuracies, lr
    if method != "zeroshot":
        assert len(first["metrics"]) == 3 and first["result"]["steps"] == 4


def test_another_seed_trains_other_weights(capsys, tiny_clip_dir, task, tmp_path):
    """The check above has teeth: the seed does reach the weights."""
    digests = {
        finetune_run(capsys, tiny_clip_dir, task, tmp_path / f"s{seed}", "clip-adapter", seed)[
            "result"
        ]["trained_digest"]
        for seed in (7, 8)
    }
    assert len(digests) == 2


def test_a_small_study_twice_gives_the_same_database(tiny_clip_dir, tmp_path):
    databases = []
    with mock.patch("torch.cuda.is_available", return_value=False):
        for attempt in ("first", "second"):
            spec = write_tiny_study(tmp_path / attempt, tiny_clip_dir, epochs=1, seeds=(5,))
            result = run_study(spec, tmp_path / attempt / "out", progress=False)
            assert result.ok and result.finished == 2 * 3  # tasks x (zeroshot + 2 methods)
            databases.append(tmp_path / attempt / "out" / "study.sqlite")
    runs = "SELECT run_id, task, train_domains, method, seed, config, status FROM runs ORDER BY 1"
    assert query(databases[0], runs) == query(databases[1], runs)
    first = metric_rows(databases[0])
    assert first == metric_rows(databases[1])
    assert len(first) > 500 and any(value is not None for *_, value in first)
