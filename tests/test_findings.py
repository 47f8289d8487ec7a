"""Findings with verdicts on planted studies, the ss-vs-ACS contrast, and the leave-one-task-out
check of the advice."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from studydb import planted_study

from clipgauge.analysis import load_study
from clipgauge.analysis.advice_check import actual_scores, check_advice
from clipgauge.analysis.findings import (
    CONTRADICTED,
    HELD,
    INCONCLUSIVE,
    study_findings,
    verdict,
)
from clipgauge.analysis.measure_contrast import ACS, SS, compare_measures, contrast


def _by_name(findings):
    return {f.finding: f for f in findings}


def _findings(folder, **kwargs):
    planted_study(folder, **kwargs)
    return _by_name(study_findings(folder))


def test_verdict_rule():
    assert verdict(0.1, 2.0)[0] == HELD
    assert verdict(-2.0, -0.1)[0] == CONTRADICTED
    assert verdict(-0.1, 0.1)[0] == INCONCLUSIVE
    assert verdict(0.0, 1.0)[0] == INCONCLUSIVE
    assert verdict(math.nan, 1.0)[0] == INCONCLUSIVE


def test_planted_aclip_clearly_best_is_held(tmp_path):
    aclip = dict(id=0.07, id_slope=0.0, dg=0.08, cf=0.0, cf_slope=0.0)
    found = _findings(tmp_path, effects={"aclip": aclip}, churn=0.1)
    best = found["A-CLIP gives the best balance between DG and CF"]
    assert best.verdict == HELD
    # A-CLIP's balance .04 against lora's, the next best, (.02 - .005) / 2 (pp)
    assert best.value == pytest.approx(100 * (0.04 - 0.0075), abs=0.6)
    assert best.lo > 0 and best.lo <= best.value <= best.hi
    assert found["Full fine-tuning gains DG at a CF cost"].verdict == HELD
    assert found["CLIP-Adapter gains DG at a CF cost"].verdict == HELD
    assert found["BitFit forgets more when ss is high"].verdict == HELD
    assert found["LoRA gains less ID/DG"].verdict == HELD
    for finding in found.values():
        assert finding.rule.startswith("held if the whole 95% interval is above 0")


def test_planted_lora_forgets_most_contradicts_lora_forgets_least(tmp_path):
    lora = dict(id=0.05, id_slope=0.0, dg=0.02, cf=0.15, cf_slope=0.0)
    found = _findings(tmp_path, effects={"lora": lora}, churn=0.1)
    least = found["LoRA forgets least"]
    assert least.verdict == CONTRADICTED
    assert least.hi < 0
    # the smallest other CF drop is aclip's .02: .02 - .15 (pp)
    assert least.value == pytest.approx(100 * (0.02 - 0.15), abs=0.6)


def test_noise_is_inconclusive_and_missing_methods_say_so(tmp_path):
    same = dict(id=0.03, id_slope=0.0, dg=0.02, cf=0.02, cf_slope=0.0)
    found = _findings(
        tmp_path,
        methods=("zeroshot", "aclip", "lora"),
        effects={"aclip": same, "lora": same},
        churn=0.3,
        seed_noise=0.01,
        fail=(),
    )
    for name in (
        "A-CLIP gives the best balance between DG and CF",
        "LoRA forgets least",
        "LoRA gains less ID/DG",
    ):
        assert found[name].verdict == INCONCLUSIVE, name
        assert found[name].lo < 0 < found[name].hi
        assert found[name].reason == "the interval includes 0"
    for name in (
        "BitFit gains ID but forgets a lot",
        "BitFit forgets more when ss is high",
        "Full fine-tuning gains DG at a CF cost",
        "CLIP-Adapter gains DG at a CF cost",
    ):
        assert found[name].verdict == INCONCLUSIVE
        assert "the study has no usable" in found[name].reason
        assert math.isnan(found[name].value)


def test_findings_follow_the_study_order_with_their_statistics(tmp_path):
    planted_study(tmp_path, n_tasks=6)
    findings = study_findings(tmp_path)
    assert [f.finding for f in findings] == [
        "ss measures difficulty better than ACS",
        "A-CLIP gives the best balance between DG and CF",
        "LoRA forgets least",
        "LoRA gains less ID/DG",
        "BitFit gains ID but forgets a lot",
        "BitFit forgets more when ss is high",
        "Full fine-tuning gains DG at a CF cost",
        "CLIP-Adapter gains DG at a CF cost",
    ]
    assert all(f.statistic and f.unit for f in findings)
    assert {f.unit for f in findings} == {"pp", "Spearman rho", "difference of correlations"}


def _contrast_table(n: int, seed: int, ss_good: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    accuracy = np.linspace(0.3, 0.9, n)
    tight, loose = rng.normal(0, 0.01, n), rng.normal(0, 0.3, n)
    return pd.DataFrame(
        {
            SS: 1.0 - accuracy + (tight if ss_good else loose),
            ACS: 0.2 + 0.1 * accuracy + (loose if ss_good else tight) / 10,
            "zero_shot_accuracy": accuracy,
        }
    )


@pytest.mark.parametrize("ss_good", [True, False])
def test_contrast_is_oriented_and_paired(ss_good):
    table = _contrast_table(30, 0, ss_good)
    result = contrast("zero_shot_accuracy", table, n_boot=1000)
    rho_ss = stats.spearmanr(table[SS], table["zero_shot_accuracy"]).statistic
    rho_acs = stats.spearmanr(table[ACS], table["zero_shot_accuracy"]).statistic
    assert result.value == pytest.approx(-rho_ss - rho_acs)
    assert result.lo <= result.value <= result.hi
    expected = HELD if ss_good else CONTRADICTED
    assert verdict(result.lo, result.hi)[0] == expected


def test_contrast_with_too_few_tasks_says_so():
    result = contrast("zero_shot_accuracy", _contrast_table(2, 0, True))
    assert math.isnan(result.value) and "too few" in result.note


def test_compare_measures_on_the_planted_study(tmp_path):
    planted_study(tmp_path)
    accuracy, gain = compare_measures(tmp_path, n_boot=500)
    assert accuracy.rho_ss == pytest.approx(-1.0)  # planted: ss decides zero-shot accuracy
    assert accuracy.n == gain.n == 8
    assert gain.rho_ss > 0.9  # harder tasks gain more, as planted (ID slopes > 0)


def _crossing_study(folder):
    """full gains on high-ss tasks, lora on low-ss ones: ss tells which is best."""
    effects = {
        "full": dict(id=0.05, id_slope=0.4, dg=0.0, cf=0.0, cf_slope=0.0),
        "lora": dict(id=0.05, id_slope=-0.4, dg=0.0, cf=0.0, cf_slope=0.0),
    }
    planted_study(
        folder,
        n_tasks=10,
        methods=("zeroshot", "full", "lora"),
        effects=effects,
        seed_noise=0.0,
        fail=(),
    )
    return folder


def test_advice_check_regret_is_zero_when_the_measure_tells_the_best_method(tmp_path):
    study = load_study(_crossing_study(tmp_path))
    check = check_advice(study)
    assert len(check.per_task) == 10
    assert check.mean_regret == pytest.approx(0.0, abs=0.002)
    assert (check.per_task["regret"] >= 0).all()
    assert set(check.per_task["recommended"]) == {"full", "lora"}
    best = actual_scores(study).max(axis=1)
    assert check.baselines["zeroshot"] == pytest.approx(best.clip(lower=0).mean())
    # a single fixed method is right on about half the tasks only
    assert check.baselines["overall_best"] > check.mean_regret + 0.01


def test_advice_check_without_fine_tuning(tmp_path):
    planted_study(tmp_path, n_tasks=3, methods=("zeroshot",), fail=())
    check = check_advice(tmp_path)
    assert check.per_task.empty and math.isnan(check.mean_regret)
    assert check.notes
