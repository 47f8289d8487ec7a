"""WiSE-FT curves in studies: eval.wise_alphas evaluates each fine-tuned run at each alpha."""

import pytest
from tinystudy import query, write_tiny_study

from clipgauge.study.runner import run_study
from clipgauge.study.spec import SpecError, load_spec
from clipgauge.study.store import parse_wise_protocol, wise_protocol

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_clip_dir):
    base = tmp_path_factory.mktemp("wise-study")
    spec = write_tiny_study(base, tiny_clip_dir, methods=["bitfit", "clip-adapter"], epochs=1)
    spec.write_text(spec.read_text() + "eval:\n  wise_alphas: [0.75, 0.25]\n")
    run_study(spec, base / "out", progress=False)
    return base / "out" / "study.sqlite"


def test_protocol_names_carry_the_alpha():
    assert wise_protocol("dg", 0.25) == "dg@0.25"
    assert parse_wise_protocol("cf_after@0.5") == ("cf_after", 0.5)
    assert parse_wise_protocol("cf_before@0.5") is None and parse_wise_protocol("id") is None


def test_every_trained_run_is_evaluated_at_every_alpha(study):
    runs = dict(query(study, "SELECT run_id, method FROM runs WHERE status = 'finished'"))
    assert sorted(set(runs.values())) == ["bitfit", "clip-adapter", "zeroshot"]
    for run_id, method in runs.items():
        rows = query(
            study,
            "SELECT protocol, eval_task, domain, name FROM metrics WHERE run_id = ?",
            run_id,
        )
        plain = {r for r in rows if r[0] in ("id", "dg", "cf_after")}
        for alpha in (0.25, 0.75):
            at_alpha = {
                (parse_wise_protocol(r[0])[0], *r[1:])
                for r in rows
                if parse_wise_protocol(r[0]) == (r[0].split("@")[0], alpha)
            }
            # the same cells as the fine-tuned model's; none for the zero-shot baseline
            assert at_alpha == (set() if method == "zeroshot" else plain)
        flags = dict(
            ((p, t, d), n)
            for p, t, d, n in query(
                study,
                "SELECT protocol, eval_task, domain, n FROM predictions WHERE run_id = ?",
                run_id,
            )
        )
        for (protocol, task, domain), n in flags.items():
            parsed = parse_wise_protocol(protocol)
            if parsed:  # paired with the same test images as the fine-tuned model
                assert n == flags[(parsed[0], task, domain)]


def test_wise_alphas_are_sorted_and_validated(tmp_path, tiny_clip_dir):
    spec = write_tiny_study(tmp_path, tiny_clip_dir, methods=["bitfit"], epochs=1)
    text = spec.read_text()
    spec.write_text(text + "eval:\n  wise_alphas: [0.5, 0.25]\n")
    assert load_spec(spec).wise_alphas == [0.25, 0.5]
    for bad, message in (
        ("[0.5, 1.0]", r"wise_alphas\[1\]"),
        ("[0.5, 0.5]", "twice"),
        ("0.5", "list"),
    ):
        spec.write_text(text + f"eval:\n  wise_alphas: {bad}\n")
        with pytest.raises(SpecError, match=message):
            load_spec(spec)


def test_curves_pair_each_alpha_with_the_same_baseline(study):
    from clipgauge.analysis.bootstrap import bootstrap_outcomes
    from clipgauge.analysis.load import load_study
    from clipgauge.analysis.summary import run_outcomes
    from clipgauge.analysis.wise import wise_curves, wise_study

    folder = study.parent
    curves = wise_curves(folder, n_boot=200)
    assert curves.alphas == [0.0, 0.25, 0.75, 1.0]
    assert set(curves.best) == {"bitfit", "clip-adapter"}
    plain = bootstrap_outcomes(folder, n_boot=200).table()
    for method in ("bitfit", "clip-adapter"):
        mine = curves.table[curves.table["method"] == method].set_index("alpha")
        assert list(mine.index) == [0.0, 0.25, 0.75, 1.0]
        assert (mine.loc[0.0, ["id_gain", "dg_gain", "cf_drop"]] == 0).all()
        # alpha 1 is the fine-tuned run: the same numbers as without the WiSE rows
        for outcome in ("id_gain", "dg_gain", "cf_drop", "score"):
            assert mine.loc[1.0, outcome] == pytest.approx(plain.loc[method, outcome])
    # an alpha's gains are its accuracies minus the same zero-shot run's, computed by hand
    outcomes = run_outcomes(wise_study(load_study(folder)))
    rows = query(
        study,
        "SELECT run_id, protocol, value FROM metrics WHERE domain = 'overall' AND "
        "name = 'zero_shot_accuracy' AND eval_task = (SELECT task FROM runs r WHERE "
        "r.run_id = metrics.run_id) AND protocol IN ('id', 'id@0.25')",
    )
    accuracy = {(r, p): v for r, p, v in rows}
    for row in outcomes[outcomes["method"] == "bitfit@0.25"].itertuples():
        run_id = row.run_id.split("@")[0]
        base = accuracy[(row.baseline_run_id, "id")]
        assert row.id_gain == pytest.approx(accuracy[(run_id, "id@0.25")] - base)


def test_report_and_summary_show_the_curves(study):
    import json

    from clipgauge.report import build_report

    folder = study.parent
    report = build_report(folder).read_text()
    assert "## WiSE-FT: interpolating with the zero-shot model" in report
    assert "figures/wise_ft_curves.png" in report
    wise = json.loads((folder / "summary.json").read_text())["wise"]
    assert wise["alphas"] == [0.0, 0.25, 0.75, 1.0]
    for method in ("bitfit", "clip-adapter"):
        entry = wise["methods"][method]
        assert [point["alpha"] for point in entry["curve"]] == wise["alphas"]
        assert entry["best_alpha"] in wise["alphas"]
        assert entry["curve"][0]["cf_drop"] == {"mean": 0.0, "ci": [0.0, 0.0]}
