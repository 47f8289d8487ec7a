"""Bootstrap intervals of method means: point estimates, coverage of planted effects, agreement
with scipy.stats.bootstrap in one-level cases, and the fallbacks for older databases."""

import sqlite3

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from studydb import StudyWriter, planted_study

from clipgauge.analysis import (
    check_advice,
    load_study,
    method_summary,
    run_outcomes,
    study_summary,
)
from clipgauge.analysis.bootstrap import (
    TASKS_AND_IMAGES,
    TASKS_ONLY,
    bootstrap_outcomes,
    resampled_counts,
)
from clipgauge.analysis.load import load_predictions
from clipgauge.analysis.summary import OUTCOMES

NULL = dict(id=0.0, id_slope=0.0, dg=0.0, cf=0.0, cf_slope=0.0)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The planted study with image-level churn, seed noise, a null method and a failed run."""
    folder = tmp_path_factory.mktemp("noisy")
    methods = ("zeroshot", "full", "bitfit", "lora", "clip-adapter", "aclip", "null")
    truth = planted_study(
        folder, methods=methods, effects={"null": NULL}, churn=0.2, seed_noise=0.005
    )
    study = load_study(folder)
    return study, truth, bootstrap_outcomes(study)


def test_point_estimates_equal_method_summary(noisy):
    study, _, boot = noisy
    assert boot.level == TASKS_AND_IMAGES
    summary = method_summary(study)
    table = boot.table()
    for outcome in OUTCOMES:
        np.testing.assert_allclose(
            table[outcome], summary.loc[table.index, outcome], rtol=0, atol=1e-12
        )
    assert set(table.index) == set(summary.index)


def test_point_estimates_of_a_sharded_study_with_duplicates(tmp_path):
    planted_study(tmp_path, n_shards=3, duplicate_runs=4, churn=0.1)
    boot = bootstrap_outcomes(tmp_path, n_boot=50)
    assert boot.level == TASKS_AND_IMAGES
    summary = method_summary(tmp_path)
    for outcome in OUTCOMES:
        np.testing.assert_allclose(
            boot.table()[outcome], summary.loc[boot.methods, outcome], rtol=0, atol=1e-12
        )


def _planted_mean(study, method: str, outcome: str, truth: dict) -> float:
    """The planted effect averaged as the estimate averages (seed noise left out)."""
    effect = truth["effects"][method]
    outcomes = run_outcomes(study)
    tasks = sorted(outcomes.loc[outcomes["method"] == method, "task"].unique())
    xs = np.array([truth["tasks"][t]["ss"] - 0.5 for t in tasks])
    if outcome == "id_gain":
        return float(np.mean(effect["id"] + effect["id_slope"] * xs))
    if outcome == "dg_gain":
        return effect["dg"]
    return float(np.mean(np.maximum(0.0, effect["cf"] + effect["cf_slope"] * xs)))


@pytest.mark.parametrize("method", ["full", "bitfit", "lora", "clip-adapter", "aclip"])
@pytest.mark.parametrize("outcome", ["id_gain", "dg_gain", "cf_drop"])
def test_intervals_hold_planted_effects_and_exclude_zero_for_large_ones(noisy, method, outcome):
    study, truth, boot = noisy
    row = boot.table().loc[method]
    planted = _planted_mean(study, method, outcome, truth)
    slack = 0.005  # 1 / n_images of rounding in each planted accuracy
    assert row[f"{outcome}_lo"] - slack <= planted <= row[f"{outcome}_hi"] + slack
    assert row[f"{outcome}_lo"] <= row[outcome] <= row[f"{outcome}_hi"]
    if planted >= 0.04:
        assert row[f"{outcome}_lo"] > 0


def test_intervals_of_a_null_effect_include_zero(noisy):
    _, _, boot = noisy
    row = boot.table().loc["null"]
    for outcome in OUTCOMES:
        assert row[f"{outcome}_lo"] < 0 < row[f"{outcome}_hi"] or outcome == "cf_drop"
        assert row[f"{outcome}_hi"] - row[f"{outcome}_lo"] > 0.002
    # CF drop is planted as max(0, noise): its interval starts at about 0.
    assert row["cf_drop_lo"] <= 0.001


def test_differences_are_paired_replicate_by_replicate(noisy):
    _, _, boot = noisy
    differences = boot.differences("aclip")
    assert "aclip" not in differences.index
    for outcome in OUTCOMES:
        replicates = boot.replicates("lora", outcome) - boot.replicates("aclip", outcome)
        lo, hi = boot.interval(replicates)
        assert differences.loc["lora", f"{outcome}_lo"] == pytest.approx(lo)
        assert differences.loc["lora", f"{outcome}_hi"] == pytest.approx(hi)
        expected = boot.point("lora", outcome) - boot.point("aclip", outcome)
        assert differences.loc["lora", outcome] == pytest.approx(expected)
    # full and aclip share a planted DG gain (0.04): their difference's interval holds 0.
    assert differences.loc["full", "dg_gain_lo"] <= 0 <= differences.loc["full", "dg_gain_hi"]
    assert boot.differences("no-such-method").empty


def test_pairing_cancels_what_two_runs_share(tmp_path):
    # No churn and no seed noise: full and aclip gain DG on exactly the same images.
    planted_study(tmp_path, n_tasks=5, fail=(), seed_noise=0.0)
    boot = bootstrap_outcomes(tmp_path, n_boot=500)
    full, aclip = (boot.replicates(m, "dg_gain") for m in ("full", "aclip"))
    drawn = np.isfinite(full)  # NaN: the replicate drew only one-domain tasks (no DG)
    assert drawn.mean() > 0.9 and np.ptp(full[drawn]) > 0.01
    np.testing.assert_allclose(full[drawn] - aclip[drawn], 0.0, atol=1e-12)
    differences = boot.differences("aclip")
    assert differences.loc["full", "dg_gain_lo"] == pytest.approx(0.0, abs=1e-12)
    assert differences.loc["full", "dg_gain_hi"] == pytest.approx(0.0, abs=1e-12)


def test_resampled_counts_equal_explicit_draws():
    rng = np.random.default_rng(5)
    flags = rng.random((37, 4)) < 0.6
    counts = resampled_counts(flags, 11, np.random.default_rng(9))
    draws = np.random.default_rng(9).integers(0, 37, size=11 * 37, dtype=np.int32)
    expected = flags[draws.reshape(11, 37)].sum(axis=1)
    np.testing.assert_array_equal(counts, expected)


def test_one_task_images_only_matches_scipy_paired_bootstrap(tmp_path):
    planted_study(
        tmp_path,
        n_tasks=1,
        seeds=(0,),
        methods=("zeroshot", "full"),
        fail=(),
        forgetting={},
        n_images=400,
        churn=0.5,
    )
    boot = bootstrap_outcomes(tmp_path, n_boot=4000, seed=3)
    assert boot.level == TASKS_AND_IMAGES
    con = sqlite3.connect(tmp_path / "study.sqlite")
    blobs = dict(con.execute("SELECT run_id, correct FROM predictions WHERE protocol = 'id'"))
    con.close()
    tuned, base = (
        np.unpackbits(np.frombuffer(blobs[r], np.uint8), count=400).astype(float)
        for r in ("t0-full-s0", "t0-zeroshot-s0")
    )
    reference = stats.bootstrap(
        (tuned, base),
        lambda a, b, axis: a.mean(axis=axis) - b.mean(axis=axis),
        paired=True,
        method="percentile",
        n_resamples=4000,
        rng=np.random.default_rng(0),
    ).confidence_interval
    row = boot.table().loc["full"]
    assert row["id_gain"] == pytest.approx(tuned.mean() - base.mean())
    se = np.std(tuned - base) / np.sqrt(400)
    assert row["id_gain_lo"] == pytest.approx(reference.low, abs=0.15 * se)
    assert row["id_gain_hi"] == pytest.approx(reference.high, abs=0.15 * se)
    assert row["score_lo"] == pytest.approx(row["id_gain_lo"])  # score = ID gain alone here


def test_tasks_only_fallback_matches_scipy_bootstrap_over_tasks(tmp_path):
    planted_study(
        tmp_path,
        n_tasks=12,
        seeds=(0,),
        methods=("zeroshot", "lora"),
        fail=(),
        n_images=None,
        seed_noise=0.02,
    )
    boot = bootstrap_outcomes(tmp_path, n_boot=4000, seed=1)
    assert boot.level == TASKS_ONLY
    assert "no per-image predictions" in boot.note
    outcomes = run_outcomes(tmp_path)
    gains = outcomes[outcomes["method"] == "lora"].groupby("task")["id_gain"].mean().to_numpy()
    reference = stats.bootstrap(
        (gains,), np.mean, method="percentile", n_resamples=4000, rng=np.random.default_rng(0)
    ).confidence_interval
    row = boot.table().loc["lora"]
    assert row["id_gain"] == pytest.approx(gains.mean())
    se = gains.std() / np.sqrt(len(gains))
    assert row["id_gain_lo"] == pytest.approx(reference.low, abs=0.15 * se)
    assert row["id_gain_hi"] == pytest.approx(reference.high, abs=0.15 * se)


def test_predictions_that_disagree_or_are_missing_fall_back_to_tasks(tmp_path):
    planted_study(tmp_path / "a", n_tasks=4, fail=())
    con = sqlite3.connect(tmp_path / "a" / "study.sqlite")
    con.execute(
        "UPDATE metrics SET value = value + 0.1 WHERE run_id = 't1-lora-s0' AND protocol = 'id'"
    )
    con.commit()
    con.close()
    boot = bootstrap_outcomes(tmp_path / "a", n_boot=20)
    assert boot.level == TASKS_ONLY
    assert "1 of" in boot.note and "disagree" in boot.note
    pd.testing.assert_series_equal(
        boot.table()["score"],
        method_summary(tmp_path / "a").loc[boot.methods, "score"],
        check_names=False,
        atol=1e-12,
    )

    planted_study(tmp_path / "b", n_tasks=4, fail=())
    con = sqlite3.connect(tmp_path / "b" / "study.sqlite")
    con.execute("DELETE FROM predictions WHERE run_id = 't2-aclip-s1' AND protocol = 'cf_after'")
    con.commit()
    con.close()
    boot = bootstrap_outcomes(tmp_path / "b", n_boot=20)
    assert boot.level == TASKS_ONLY and "missing for 1 of" in boot.note


def test_predictions_of_failed_runs_and_duplicate_copies_are_left_out(noisy, tmp_path):
    study, truth, _ = noisy
    predictions = load_predictions(study)
    assert truth["failed"] == ["t3-full-s1"]
    assert not predictions["run_id"].isin(truth["failed"]).any()
    assert set(predictions["run_id"]) == set(truth["finished"])
    planted_study(tmp_path, n_tasks=3, n_shards=2, duplicate_runs=3)
    sharded = load_predictions(load_study(tmp_path))
    assert not sharded.duplicated(["run_id", "protocol", "eval_task", "domain"]).any()
    assert load_predictions(load_study(_old_study(tmp_path / "old"))) is None


def _old_study(folder):
    planted_study(folder, n_tasks=3, n_images=None)
    return folder


def test_bootstrap_is_seeded_and_tasks_are_units(noisy):
    study, truth, boot = noisy
    again = bootstrap_outcomes(study)
    pd.testing.assert_frame_equal(again.table(), boot.table())
    other = bootstrap_outcomes(study, seed=1)
    assert not other.table().equals(boot.table())
    assert boot.tasks == sorted(truth["tasks"])
    assert boot.values["score"].shape == (boot.n_boot + 1, len(boot.methods))


def test_a_study_with_only_the_baseline(tmp_path):
    planted_study(tmp_path, n_tasks=3, methods=("zeroshot",), fail=())
    boot = bootstrap_outcomes(tmp_path, n_boot=30)
    assert boot.methods == ["zeroshot"]
    assert boot.table().loc["zeroshot", "score_hi"] == 0.0
    assert boot.differences("aclip").empty


def _flip(flags: np.ndarray, share: float, rng) -> np.ndarray:
    return flags ^ (rng.random(len(flags)) < share)


def _cross_forgetting_study(folder, n: int = 60, cap: dict | None = None):
    """Tasks A and B (domains a, b; trained on a) with zeroshot and lora, two seeds; each run
    forgets the other task on a capped subset of its test images; C is evaluated only."""
    cap = cap or {"a": 20, "b": 10}
    rng = np.random.default_rng(4)
    w = StudyWriter(folder / "study.sqlite")
    own = {t: {d: rng.random(n) < 0.6 for d in "ab"} for t in "AB"}
    forgetting = {t: {d: rng.random(k) < 0.5 for d, k in cap.items()} for t in "AB"}

    def write(run_id, protocol, task, cells):
        for domain, flags in cells.items():
            w.add_predictions(run_id, protocol, task, domain, flags)
            w.add_accuracy(run_id, protocol, task, domain, flags.mean())
        pooled = np.concatenate(list(cells.values()))
        w.add_accuracy(run_id, protocol, task, "overall", pooled.mean())

    for task, other in (("A", "B"), ("B", "A")):
        for seed in (0, 1):
            for method in ("zeroshot", "lora"):
                run_id = f"{task}-{method}-{seed}"
                w.add_run(run_id, task, ["a"], method, seed)
                w.add_measures(run_id, "measure_before", task, "overall", {"acs": 0.3})
                share = 0.0 if method == "zeroshot" else 0.2
                write(run_id, "id", task, {"a": _flip(own[task]["a"], share, rng)})
                write(run_id, "dg", task, {"b": _flip(own[task]["b"], share, rng)})
                before = forgetting[other]
                write(run_id, "cf_before", other, before)
                after = {d: _flip(f, share, rng) for d, f in before.items()}
                write(run_id, "cf_after", other, after)
    w.add_run("C-zeroshot-0", "C", [], "zeroshot", 0)
    w.add_measures("C-zeroshot-0", "measure_before", "C", "overall", {"acs": 0.2})
    w.close()
    return folder


def test_capped_forgetting_cells_and_an_evaluation_only_task(tmp_path):
    study = load_study(_cross_forgetting_study(tmp_path))
    boot = bootstrap_outcomes(study, n_boot=300)
    assert boot.level == TASKS_AND_IMAGES, boot.note
    # C is only measured: it has no outcomes, so it is no unit of the bootstrap
    assert boot.tasks == ["A", "B"]
    summary = method_summary(study)
    for outcome in OUTCOMES:
        np.testing.assert_allclose(
            boot.table()[outcome], summary.loc[boot.methods, outcome], rtol=0, atol=1e-12
        )
    assert boot.point("zeroshot", "score") == 0.0
    lo, hi = boot.interval(boot.replicates("lora", "cf_drop"))
    assert lo < hi
    per_task = study_summary(study, boot, [], check_advice(study))["per_task"]
    assert sorted(per_task) == ["A", "B"]  # C has no zero-shot ID accuracy


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_analysis_reads_the_flags_the_study_store_packs(n):
    from clipgauge.analysis.load import unpack_correct
    from clipgauge.study.store import pack_correct

    flags = np.random.default_rng(n).random(n) < 0.5
    np.testing.assert_array_equal(unpack_correct(pack_correct(flags), n), flags)
