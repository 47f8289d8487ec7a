import contextlib
import io
import re
import shutil

import pytest
from studydb import planted_study

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

    def text(path):
        return path.read_text().replace(str(copy), "X").replace(str(folder), "X")

    assert text(md_path) == text(folder / "report.md")
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
