import contextlib
import io
import json
import re
import shutil

import pytest
from studydb import planted_study

from clipgauge.analysis import load_study, method_summary
from clipgauge.analysis.findings import CONTRADICTED, HELD, INCONCLUSIVE
from clipgauge.analysis.study_summary import SUMMARY_KEYS, study_seconds
from clipgauge.cli import main
from clipgauge.report import build_report
from clipgauge.report.figures import FIGURE_NAMES


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A sharded study whose report was built once by `clipgauge report DIR` (output kept)."""
    folder = tmp_path_factory.mktemp("study")
    planted_study(folder, n_shards=2, duplicate_runs=2)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", str(folder)])
    assert code == 0, err.getvalue()
    return folder, out.getvalue()


def test_report_files_are_written(built):
    folder, _ = built
    assert (folder / "report.html").is_file()
    assert sorted(p.name for p in (folder / "figures").iterdir()) == sorted(FIGURE_NAMES.values())
    for name in FIGURE_NAMES.values():
        assert (folder / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.glob(".*.tmp")) and not list((folder / "figures").glob(".*"))


def test_markdown_holds_provenance_table_verdict_and_figures(built):
    folder, _ = built
    md = (folder / "report.md").read_text()
    assert "study-shard-0-of-2.sqlite, study-shard-1-of-2.sqlite" in md
    assert "fingerprint abc123" in md
    assert "seeds: 0, 1" in md
    assert "96 (95 finished, 1 failed, 0 unfinished)" in md
    assert "training loss became NaN at step 12" in md
    assert "aclip gives the best balance" in md
    assert re.search(r"\| aclip \| \+\d\.\d\d \| .* \| 1 \|", md)
    assert "silhouette_modality predicts zero-shot accuracy best" in md
    assert "weak evidence" in md
    assert "| bitfit: CF drop ~ silhouette_modality | 8 |" in md
    for name in FIGURE_NAMES.values():
        assert f"(figures/{name})" in md


def test_html_is_self_contained(built):
    folder, _ = built
    html = (folder / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURE_NAMES)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|iframe)\b", html)
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<table>" in html and "aclip gives the best balance" in html


def test_report_cli_prints_table_and_paths(built):
    folder, out = built
    lines = out.splitlines()
    assert lines[0].split()[0] == "method"
    assert lines[2].split()[0] == "aclip"
    assert "aclip gives the best balance" in out
    assert f"wrote {folder / 'report.md'}" in out
    assert f"wrote {folder / 'report.html'}" in out


def test_build_report_api_rebuilds_from_the_databases(built, tmp_path):
    folder, _ = built
    copy = tmp_path / "copy"
    copy.mkdir()
    for db in folder.glob("*.sqlite"):
        shutil.copy(db, copy / db.name)
    md_path = build_report(copy)
    assert md_path == copy / "report.md"

    def text(path):  # where the folder is, and so the spec relative to it, may differ
        lines = path.read_text().splitlines()
        return [ln for ln in lines if not ln.startswith(("- study folder:", "- spec:"))]

    assert text(md_path) == text(folder / "report.md")
    assert (copy / "summary.json").read_text() == (folder / "summary.json").read_text()
    for name in FIGURE_NAMES.values():
        assert (copy / "figures" / name).read_bytes() == (folder / "figures" / name).read_bytes()


def test_report_of_a_study_with_no_fine_tuning_still_builds(tmp_path):
    planted_study(tmp_path, n_tasks=2, methods=("zeroshot",), fail=())
    md = build_report(tmp_path).read_text()
    assert "No fine-tuning method has a finished run" in md
    assert "too few" in md
    assert len(list((tmp_path / "figures").glob("*.png"))) == 4


@pytest.mark.parametrize("command", ["report", "advise"])
def test_missing_or_empty_study_folder_exits_2(tmp_path, capsys, command, domainbed_root):
    for folder, message in [(tmp_path / "nope", "does not exist"), (tmp_path, "no study")]:
        argv = [command, folder] if command == "report" else [command, "--study", folder]
        if command == "advise":
            argv += ["--data", domainbed_root]
        code, out, err = _run(capsys, *argv)
        assert code == 2
        assert message in err and "clipgauge study" in err


def test_advise_cli_prints_recommendation_and_json(tmp_path, capsys, tiny_clip_dir, domainbed_root):
    planted_study(tmp_path / "study")
    code, out, err = _run(
        capsys,
        "advise",
        "--study",
        tmp_path / "study",
        "--data",
        domainbed_root,
        "--model",
        tiny_clip_dir,
        "--domains",
        "photo,art",
        "--no-cache",
        "--no-progress",
        "--json",
        tmp_path / "advice.json",
    )
    assert code == 0, err
    assert "recommended: " in out
    assert "[95% prediction interval]" in out
    assert (tmp_path / "advice.json").is_file()


def test_report_with_a_single_seed(tmp_path):
    from clipgauge.analysis.summary import method_table

    planted_study(tmp_path / "one-seed", seeds=(0,), fail=())
    table = method_table(tmp_path / "one-seed")
    assert "aclip" in table
    assert build_report(tmp_path / "one-seed").is_file()


def test_report_opens_with_findings_and_holds_the_interval_sections(built):
    folder, _ = built
    md = (folder / "report.md").read_text()
    assert md.index("## Findings") < md.index("## Provenance")
    assert "| LoRA forgets least | held |" in md
    assert "held if the whole 95% interval is above 0" in md
    for heading in (
        "### Method means with 95% bootstrap intervals",
        "### Differences against A-CLIP",
        "### ss against ACS",
        "## Checking the advice: leave one task out",
    ):
        assert heading in md
    assert "resample tasks and, within them, test images" in md
    assert re.search(r"\| aclip \| \+\d\.\d\d \[\+\d\.\d\d, \+\d\.\d\d\] \|", md)
    assert re.search(r"Mean regret: advice \+\d\.\d\d pp", md)
    html = (folder / "report.html").read_text()
    assert "<h2>Findings</h2>" in html and "Checking the advice" in html


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_summary_json_schema(built):
    folder, _ = built
    summary = json.loads((folder / "summary.json").read_text())
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["seconds"] == 95.0  # no wall_seconds stored: 95 finished runs of 1 s
    tasks = [f"t{i}" for i in range(8)]
    assert summary["tasks_measured"] == tasks and summary["tasks_trained"] == tasks

    assert list(summary["per_task"]) == tasks
    for row in summary["per_task"].values():
        assert set(row) == {"zero_shot_id", "best_method", "best_id_gain"}
        assert 1 < row["zero_shot_id"] < 100  # pp
        assert row["best_method"] in {"full", "bitfit", "lora", "clip-adapter", "aclip"}
        assert _number(row["best_id_gain"]) and row["best_id_gain"] > 1

    table = method_summary(load_study(folder))
    assert set(summary["methods"]) == set(table.index)
    for method, outcomes in summary["methods"].items():
        assert set(outcomes) == {"id_gain", "dg_gain", "cf_drop", "score"}
        for name, entry in outcomes.items():
            assert set(entry) == {"mean", "ci"} and len(entry["ci"]) == 2
            assert entry["mean"] == pytest.approx(100 * table.loc[method, name])
            assert entry["ci"][0] <= entry["mean"] + 1e-9 <= entry["ci"][1] + 2e-9

    assert len(summary["findings"]) == 8
    for finding in summary["findings"]:
        assert set(finding) == {"finding", "verdict", "statistic", "value", "ci"}
        assert finding["verdict"] in {HELD, CONTRADICTED, INCONCLUSIVE}
        assert _number(finding["value"]) and len(finding["ci"]) == 2

    check = summary["advice_check"]
    assert set(check) == {"per_task", "mean_regret", "baselines"}
    assert list(check["per_task"]) == tasks
    for row in check["per_task"].values():
        assert set(row) == {"recommended", "best", "regret"} and row["regret"] >= 0
    assert set(check["baselines"]) == {"overall_best", "zeroshot"}
    assert all(_number(v) for v in [check["mean_regret"], *check["baselines"].values()])


def test_summary_seconds_prefer_the_runners_wall_time(tmp_path):
    planted_study(tmp_path / "wall", n_tasks=2, fail=(), wall_seconds=123.5)
    assert study_seconds(load_study(tmp_path / "wall")) == 123.5
    planted_study(tmp_path / "sum", n_tasks=2, fail=())
    assert study_seconds(load_study(tmp_path / "sum")) == 24.0  # 24 runs of 1 s


def test_summary_json_of_a_study_with_no_fine_tuning(tmp_path):
    planted_study(tmp_path, n_tasks=2, methods=("zeroshot",), fail=())
    build_report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["tasks_trained"] == []
    assert summary["advice_check"]["per_task"] == {}
    assert summary["advice_check"]["mean_regret"] is None
    assert {f["verdict"] for f in summary["findings"]} == {INCONCLUSIVE}
    assert summary["per_task"]["t0"]["best_method"] == "zeroshot"


def test_provenance_names_no_absolute_path_of_the_machine(tmp_path):
    from studydb import planted_study

    from clipgauge.report.build import build_report

    planted_study(tmp_path / "study")
    text = build_report(tmp_path / "study").read_text()
    provenance = text[text.index("## Provenance") :].split("\n## ")[0]
    assert "study folder: study" in provenance
    assert str(tmp_path) not in provenance
