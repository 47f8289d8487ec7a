"""WiSE-FT curves: each method's outcomes along the interpolation from zero-shot to fine-tuned.

A study with `eval.wise_alphas` stores, per fine-tuned run, id, dg and cf_after at each alpha
(`<protocol>@<alpha>`). Here each (run, alpha) becomes a run of its own, method
`<method>@<alpha>`, sharing the run's cf_before rows, so `bootstrap_outcomes` treats it like any
method: gains against the same zero-shot baseline, paired image by image with every other run.
Alpha 0 is the zero-shot model (gains and drop 0 by construction) and alpha 1 the fine-tuned
run itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from clipgauge.analysis.bootstrap import (
    BOOTSTRAP_SEED,
    N_BOOTSTRAP,
    OutcomeBootstrap,
    bootstrap_outcomes,
)
from clipgauge.analysis.load import Study, as_study, load_predictions
from clipgauge.analysis.summary import OUTCOMES
from clipgauge.wise_protocols import parse_wise_protocol

SEPARATOR = "@"


def wise_method(method: str, alpha: float) -> str:
    return f"{method}{SEPARATOR}{alpha:g}"


def _renamed(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Rows of `alpha`'s WiSE protocols under their plain protocol and a virtual run id."""
    parsed = table["protocol"].map(parse_wise_protocol)
    at_alpha = table[parsed.map(lambda p: p is not None and p[1] == alpha)].copy()
    at_alpha["protocol"] = parsed[at_alpha.index].map(lambda p: p[0])
    at_alpha["run_id"] = at_alpha["run_id"] + SEPARATOR + f"{alpha:g}"
    return at_alpha


def _with_cf_before(table: pd.DataFrame, runs: set[str], alpha: float) -> pd.DataFrame:
    before = table[(table["protocol"] == "cf_before") & table["run_id"].isin(runs)].copy()
    before["run_id"] = before["run_id"] + SEPARATOR + f"{alpha:g}"
    return before


def study_alphas(study: Study) -> list[float]:
    parsed = study.metrics["protocol"].drop_duplicates().map(parse_wise_protocol).dropna()
    return sorted({alpha for _, alpha in parsed})


def wise_study(study: Study) -> Study:
    """`study` plus one virtual run per (fine-tuned run, alpha); unchanged without alphas."""
    alphas = study_alphas(study)
    if not alphas:
        return study
    predictions = load_predictions(study)
    runs, metrics = [study.runs], [study.metrics]
    extra_predictions = [predictions] if predictions is not None else []
    for alpha in alphas:
        renamed = _renamed(study.metrics, alpha)
        originals = set(renamed["run_id"].str.rsplit(SEPARATOR, n=1).str[0])
        copies = study.runs[study.runs["run_id"].isin(originals)].copy()
        copies["run_id"] = copies["run_id"] + SEPARATOR + f"{alpha:g}"
        copies["method"] = [wise_method(m, alpha) for m in copies["method"]]
        runs.append(copies)
        metrics += [renamed, _with_cf_before(study.metrics, originals, alpha)]
        if predictions is not None:
            extra_predictions += [
                _renamed(predictions, alpha),
                _with_cf_before(predictions, originals, alpha),
            ]
    return replace(
        study,
        runs=pd.concat(runs, ignore_index=True),
        metrics=pd.concat(metrics, ignore_index=True),
        predictions=pd.concat(extra_predictions, ignore_index=True) if extra_predictions else None,
    )


@dataclass
class WiseCurves:
    """Per fine-tuned method: each outcome at alpha 0, the study's alphas and 1, with 95%
    intervals (fractions of accuracy, as stored); `best` the alpha of the highest score per
    method (ties: the larger alpha) and `best_vs_tuned` the paired difference of that alpha
    minus the fine-tuned run (alpha 1)."""

    alphas: list[float]
    table: pd.DataFrame  # columns method, alpha, <outcome>, <outcome>_lo, <outcome>_hi
    best: dict[str, float]
    best_vs_tuned: pd.DataFrame  # index method; <outcome>, _lo, _hi of (best alpha - alpha 1)
    note: str


def wise_curves(
    study: Study | str, *, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> WiseCurves | None:
    """The WiSE-FT curves of a study with `eval.wise_alphas`; None without them."""
    study = as_study(study)
    alphas = study_alphas(study)
    if not alphas:
        return None
    boot = bootstrap_outcomes(wise_study(study), n_boot=n_boot, seed=seed)
    tuned = sorted(
        {m.split(SEPARATOR)[0] for m in boot.methods if SEPARATOR in m} & set(boot.methods)
    )
    table = _curve_table(boot, tuned, alphas)
    best, rows = {}, []
    for method in tuned:
        mine = table[table["method"] == method].dropna(subset=["score"])
        # the highest score; a tie goes to the larger alpha (interpolating must strictly help)
        top = mine[mine["score"] == mine["score"].max()]
        best[method] = float(top["alpha"].max())
        rows.append(_difference(boot, method, best[method]))
    best_vs_tuned = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
    return WiseCurves([0.0, *alphas, 1.0], table, best, best_vs_tuned, boot.note)


def _curve_table(boot: OutcomeBootstrap, methods: list[str], alphas: list[float]) -> pd.DataFrame:
    point_table = boot.table()
    rows = []
    for method in methods:
        rows.append({"method": method, "alpha": 0.0, **_zero()})
        for alpha in [*alphas, 1.0]:
            name = method if alpha == 1.0 else wise_method(method, alpha)
            if name in point_table.index:
                rows.append({"method": method, "alpha": alpha, **point_table.loc[name].to_dict()})
    return pd.DataFrame(rows)


def _zero() -> dict[str, float]:
    """Alpha 0 is the zero-shot model: no gain and no drop, exactly."""
    out = {}
    for outcome in OUTCOMES:
        out.update({outcome: 0.0, f"{outcome}_lo": 0.0, f"{outcome}_hi": 0.0})
    return out


def _difference(boot: OutcomeBootstrap, method: str, alpha: float) -> dict:
    row: dict = {"method": method, "alpha": alpha}
    for outcome in OUTCOMES:
        if alpha in (0.0, 1.0):
            values = np.zeros(boot.n_boot + 1)
            if alpha == 0.0:
                values = -boot.values[outcome][:, boot.methods.index(method)]
        else:
            mine = boot.values[outcome][:, boot.methods.index(wise_method(method, alpha))]
            values = mine - boot.values[outcome][:, boot.methods.index(method)]
        lo, hi = boot.interval(values[1:])
        row.update({outcome: float(values[0]), f"{outcome}_lo": lo, f"{outcome}_hi": hi})
    return row
