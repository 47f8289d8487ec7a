import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from studydb import EFFECTS, METHODS, StudyWriter, planted_study

from clipgauge.analysis import (
    advise,
    correlate,
    correlation_table,
    load_study,
    method_summary,
    method_table,
    run_outcomes,
    which_measure_predicts_best,
)
from clipgauge.analysis.advise import predict_linear
from clipgauge.analysis.correlations import task_measure_table
from clipgauge.errors import ClipgaugeError


def _hand_study(folder):
    """Two tasks (A with domains a, b; B with x only), two seeds, zeroshot / lora / full.

    Expected numbers are worked out by hand in test_summary_equals_hand_computed_values.
    """
    w = StudyWriter(folder / "study.sqlite", {"name": "hand", "model": "m"})

    def run(run_id, task, method, seed, id_acc, dg_acc=None, cf=(), **kw):
        w.add_run(run_id, task, ["a"] if task == "A" else ["x"], method, seed, **kw)
        w.add_accuracy(run_id, "id", task, "overall", id_acc)
        if dg_acc is not None:
            w.add_accuracy(run_id, "dg", task, "overall", dg_acc)
        for eval_task, before, after in cf:
            w.add_accuracy(run_id, "cf_before", eval_task, "overall", before)
            w.add_accuracy(run_id, "cf_after", eval_task, "overall", after)

    run("A-zs-0", "A", "zeroshot", 0, 0.50, 0.40, [("c1", 0.6, 0.6)])
    run("A-lora-0", "A", "lora", 0, 0.60, 0.45, [("c1", 0.6, 0.58), ("c2", 0.5, 0.46)])
    run("A-full-0", "A", "full", 0, 0.70, 0.40, [("c1", 0.6, 0.50), ("c2", 0.5, 0.40)])
    run("B-zs-0", "B", "zeroshot", 0, 0.30)
    run("B-lora-0", "B", "lora", 0, 0.36, None, [("c1", 0.6, 0.59), ("c2", 0.5, 0.49)])
    run("B-full-0", "B", "full", 0, 0.50, None, [("c1", 0.6, 0.40), ("c2", 0.5, 0.30)])
    run("A-zs-1", "A", "zeroshot", 1, 0.52, 0.42)
    run("A-lora-1", "A", "lora", 1, 0.60, 0.44, [("c1", 0.6, 0.58), ("c2", 0.5, 0.48)])
    # A failed run whose partial metrics must be ignored.
    run("A-full-1", "A", "full", 1, 0.99, 0.99, status="failed", error="boom")
    run("B-zs-1", "B", "zeroshot", 1, 0.30)
    run("B-lora-1", "B", "lora", 1, 0.40, None, [("c1", 0.6, 0.60), ("c2", 0.5, 0.48)])
    run("B-full-1", "B", "full", 1, 0.45, None, [("c1", 0.6, 0.50), ("c2", 0.5, 0.40)])
    # A method run without any zeroshot baseline: counted, never averaged.
    run("C-lora-0", "C", "lora", 0, 0.9)
    w.close()
    return folder


def test_summary_equals_hand_computed_values(tmp_path):
    summary = method_summary(_hand_study(tmp_path))
    assert list(summary.index) == ["lora", "full", "zeroshot"]
    assert list(summary["rank"]) == [1, 2, 3]
    lora, full, zs = summary.loc["lora"], summary.loc["full"], summary.loc["zeroshot"]
    # lora, seed 0: A id .10 dg .05 cf .03 score .04; B id .06 cf .01 score .025
    #       seed 1: A id .08 dg .02 cf .02 score .08/3; B id .10 cf .01 score .045
    assert lora["id_gain"] == pytest.approx(0.085)
    assert lora["id_gain_std"] == pytest.approx(0.01 / math.sqrt(2))
    assert lora["dg_gain"] == pytest.approx(0.035)
    assert lora["cf_drop"] == pytest.approx(0.0175)
    assert lora["score"] == pytest.approx((0.0325 + (0.08 / 3 + 0.045) / 2) / 2)
    assert (lora["n_runs"], lora["failed_runs"], lora["no_baseline_runs"]) == (4, 0, 1)
    assert (lora["n_tasks"], lora["n_seeds"]) == (2, 2)
    # full, seed 0: A id .2 dg 0 cf .1 score .1/3; B id .2 cf .2 score 0; seed 1: B only.
    assert full["id_gain"] == pytest.approx((0.2 + 0.15) / 2)
    assert full["dg_gain"] == pytest.approx(0.0)
    assert math.isnan(full["dg_gain_std"])
    assert full["cf_drop"] == pytest.approx((0.15 + 0.1) / 2)
    assert full["score"] == pytest.approx((0.1 / 6 + 0.025) / 2)
    assert (full["n_runs"], full["failed_runs"]) == (3, 1)
    assert (zs["id_gain"], zs["cf_drop"], zs["score"]) == (0.0, 0.0, 0.0)

    table = method_table(tmp_path)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["method", "ID", "gain"]
    assert lines[2].split()[:4] == ["lora", "+8.50", "+3.50", "+1.75"]
    assert lines[3].split()[-2:] == ["3", "1"]  # full: 3 runs used, 1 failed


def test_run_outcomes_per_run(tmp_path):
    outcomes = run_outcomes(_hand_study(tmp_path)).set_index("run_id")
    assert "A-full-1" not in outcomes.index  # failed
    assert outcomes.loc["A-lora-0", "cf_drop"] == pytest.approx(0.03)
    assert outcomes.loc["B-lora-0", "score"] == pytest.approx(0.025)
    assert math.isnan(outcomes.loc["B-lora-0", "dg_gain"])
    assert not outcomes.loc["C-lora-0", "has_baseline"]
    assert math.isnan(outcomes.loc["C-lora-0", "score"])


def test_shards_are_unioned_without_duplicates(tmp_path):
    whole = planted_study(tmp_path / "whole")
    sharded = planted_study(tmp_path / "sharded", n_shards=3, duplicate_runs=5)
    assert len(sorted((tmp_path / "sharded").glob("*.sqlite"))) == 3
    study = load_study(tmp_path / "sharded")
    assert len(study.databases) == 3
    assert study.runs["run_id"].is_unique
    assert len(study.runs) == len(sharded["finished"]) + len(sharded["failed"])
    key = ["run_id", "protocol", "eval_task", "domain", "name"]
    assert not study.metrics.duplicated(key).any()
    assert len(study.metrics) == len(load_study(tmp_path / "whole").metrics)
    pd.testing.assert_frame_equal(method_summary(study), method_summary(tmp_path / "whole"))
    assert len(whole["finished"]) == len(sharded["finished"])


def test_finished_copy_of_a_run_wins_over_a_failed_copy(tmp_path):
    first = StudyWriter(tmp_path / "study-shard-0-of-2.sqlite")
    first.add_run("r1", "A", ["a"], "lora", 0, status="failed", error="oom")
    first.add_accuracy("r1", "id", "A", "overall", 0.1)
    first.close()
    second = StudyWriter(tmp_path / "study-shard-1-of-2.sqlite")
    second.add_run("r1", "A", ["a"], "lora", 0)
    second.add_accuracy("r1", "id", "A", "overall", 0.7)
    second.close()
    study = load_study(tmp_path)
    assert list(study.runs["status"]) == ["finished"]
    assert list(study.metrics["value"]) == [0.7]


def test_failed_runs_are_counted_and_excluded(tmp_path):
    truth = planted_study(tmp_path, fail=[("full", "t3", 1), ("lora", "t0", 0)])
    summary = method_summary(tmp_path)
    assert summary.loc["full", "failed_runs"] == 1
    assert summary.loc["lora", "failed_runs"] == 1
    assert summary.loc["aclip", "failed_runs"] == 0
    assert summary.loc["full", "n_runs"] == 15
    study = load_study(tmp_path)
    assert not study.metrics["run_id"].isin(truth["failed"]).any()
    # The failed run's stray metric (0.99 accuracy) would raise full's mean ID gain a lot.
    assert summary.loc["full", "id_gain"] == pytest.approx(EFFECTS["full"]["id"], abs=0.01)


def test_planted_effects_are_recovered(tmp_path):
    planted_study(tmp_path)
    summary = method_summary(tmp_path)
    assert summary.index[0] == "aclip"  # the study's finding, planted
    assert summary["cf_drop"].drop("zeroshot").idxmin() == "lora"
    for method in METHODS:
        assert summary.loc[method, "dg_gain"] == pytest.approx(EFFECTS[method]["dg"], abs=0.003)
    assert summary.loc["aclip", "score_std"] < 0.002


def test_correlations_match_scipy_and_intervals_hold_the_estimate(tmp_path):
    truth = planted_study(tmp_path)
    table = correlation_table(tmp_path)
    tasks = task_measure_table(tmp_path)
    assert list(tasks.index) == sorted(truth["tasks"])
    for name, task in truth["tasks"].items():
        assert tasks.loc[name, "silhouette_modality"] == pytest.approx(task["ss"])
    for measure in ("silhouette_class", "acs", "iimm"):
        row = table[
            (table["unit"] == "tasks")
            & (table["outcome"] == "zero_shot_accuracy")
            & (table["measure"] == measure)
        ].iloc[0]
        x, y = tasks[measure], tasks["zero_shot_accuracy"]
        assert row["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic)
        assert row["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
        assert row["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert row["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
        assert row["n"] == 8
    finite = table[table["pearson_r"].notna()]
    assert len(finite) > 50
    eps = 1e-9
    assert (finite["pearson_lo"] <= finite["pearson_r"] + eps).all()
    assert (finite["pearson_r"] <= finite["pearson_hi"] + eps).all()
    assert (finite["spearman_lo"] <= finite["spearman_rho"] + eps).all()
    assert (finite["spearman_rho"] <= finite["spearman_hi"] + eps).all()
    # Planted: bitfit forgets more on harder (high ss) tasks.
    row = table[
        (table["method"] == "bitfit")
        & (table["outcome"] == "cf_drop")
        & (table["measure"] == "silhouette_modality")
    ].iloc[0]
    assert row["spearman_rho"] > 0.9 and row["spearman_lo"] > 0
    domains = table[table["unit"] == "task-domains"]
    assert set(domains["n"]) == {14}  # 6 tasks x 2 domains + 2 tasks x 1


def test_correlate_drops_nan_pairs_and_is_seeded():
    x = [1.0, 2.0, np.nan, 4.0, 5.0, 7.0]
    y = [2.0, 1.0, 3.0, 5.0, np.nan, 6.0]
    first = correlate(x, y)
    assert first["n"] == 4
    assert first["pearson_r"] == pytest.approx(stats.pearsonr([1, 2, 4, 7], [2, 1, 5, 6])[0])
    assert correlate(x, y) == first
    assert "weak evidence" in first["note"]


@pytest.mark.parametrize(
    ("x", "y", "note"),
    [
        ([1.0, 2.0], [3.0, 1.0], "n = 2 < 3"),
        ([1.0, np.nan, 2.0], [3.0, 1.0, np.nan], "n = 1 < 3"),
        ([1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 5.0], "constant"),
    ],
)
def test_too_few_pairs_give_nan_and_a_note(x, y, note):
    result = correlate(x, y)
    for key in ("pearson_r", "pearson_p", "pearson_lo", "spearman_rho", "spearman_hi"):
        assert math.isnan(result[key])
    assert note in result["note"]


def test_best_measure_is_the_planted_one_with_honest_wording(tmp_path):
    planted_study(tmp_path / "eight")
    verdict = which_measure_predicts_best(tmp_path / "eight")
    assert verdict.measure == "silhouette_modality"
    assert verdict.spearman_rho == pytest.approx(-1.0)
    assert verdict.excludes_zero
    assert verdict.n == 8
    assert "n = 8 tasks is weak evidence" in verdict.sentence
    assert "lower accuracy" in verdict.sentence

    planted_study(tmp_path / "two", n_tasks=2)
    verdict = which_measure_predicts_best(tmp_path / "two")
    assert verdict.measure is None
    assert "n = 2" in verdict.sentence


def test_predict_linear_interval_is_the_t_prediction_interval():
    x = np.array([0.1, 0.3, 0.4, 0.6, 0.9])
    y = np.array([1.0, 1.8, 2.1, 3.2, 4.1])
    out = predict_linear(x, y, 0.5)
    slope, intercept = np.polyfit(x, y, 1)
    s = np.sqrt(((y - intercept - slope * x) ** 2).sum() / 3)
    half = stats.t.ppf(0.975, 3) * s * np.sqrt(1 + 1 / 5 + (0.5 - x.mean()) ** 2 / x.var() / 5)
    assert out["value"] == pytest.approx(intercept + slope * 0.5)
    assert (out["lo"], out["hi"]) == pytest.approx((out["value"] - half, out["value"] + half))
    assert out["fitted"] and out["n"] == 5
    few = predict_linear([0.1, 0.2], [1.0, 3.0], 0.5)
    assert not few["fitted"] and few["value"] == pytest.approx(2.0)
    assert "no fit" in few["note"]
    assert "extrapolates" in predict_linear(x, y, 2.0)["note"]


def test_missing_or_empty_study_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ClipgaugeError, match="clipgauge study"):
        load_study(tmp_path / "nope")
    with pytest.raises(ClipgaugeError, match="no study database"):
        load_study(tmp_path)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all, just text" * 10)
    with pytest.raises(ClipgaugeError, match="junk.sqlite"):
        load_study(tmp_path)


def test_advise_recommends_a_method_with_intervals(tmp_path, tiny_clip_dir, domainbed_root):
    planted_study(tmp_path / "study", model=str(tiny_clip_dir))
    advice = advise(tmp_path / "study", str(domainbed_root), cache=None)  # the spec's model
    assert advice.recommended in METHODS
    assert advice.measure == "silhouette_modality"
    assert math.isfinite(advice.measure_value)
    assert advice.recommended in advice.reason
    scores = advice.predictions[advice.predictions["outcome"] == "score"]
    assert set(scores["method"]) == set(METHODS) - {"zeroshot"}
    assert (scores["lo"] < scores["value"]).all() and (scores["value"] < scores["hi"]).all()
    if advice.recommended != "zeroshot":
        assert advice.recommended == scores.set_index("method")["value"].idxmax()
    assert any("weak evidence" in note for note in advice.notes)
    assert advice.provenance["measure_provenance"]["model"]["path"] == str(tiny_clip_dir)
    assert advice.recommended in advice.table()
    saved = advice.save_json(tmp_path / "advice.json")
    assert '"recommended"' in saved.read_text()


def test_advise_with_an_explicit_model_and_a_tiny_study(tmp_path, tiny_clip_dir, domainbed_root):
    planted_study(tmp_path / "study", n_tasks=2)
    advice = advise(tmp_path / "study", str(domainbed_root), model=str(tiny_clip_dir), cache=None)
    assert advice.measure is None
    assert advice.recommended in METHODS
    assert "no fit" in advice.reason
