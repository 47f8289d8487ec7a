"""The report as a reader meets it: the answer first, readable figures, long tables summarised,
and HTML rendered by libraries with CSS that fits any width. The browser test is
test_report_browser.py."""

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.text import Text
from studydb import planted_study

from clipgauge.analysis import load_study, method_summary
from clipgauge.analysis.correlations import (
    correlation_table,
    domain_measure_table,
    task_measure_table,
)
from clipgauge.analysis.summary import per_task_outcomes, run_outcomes, verdict_sentence
from clipgauge.report import figures
from clipgauge.report.answer import ANSWER_HEADING
from clipgauge.report.build import report_document
from clipgauge.report.correlation_tables import factor_notes
from clipgauge.report.labels import LABEL_GID, MARKER_GID
from clipgauge.report.render import COLUMN_PX, png_size, to_html, to_markdown

MIN_TEXT_PX = 9.0


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layout")
    planted_study(folder, n_shards=2)
    return load_study(folder)


@pytest.fixture(scope="module")
def document(study):
    doc, _ = report_document(study)
    return doc


@pytest.fixture(scope="module")
def built_figures(study):
    """Every report figure as a matplotlib Figure, with its PNG (which draws it)."""
    summary = method_summary(study)
    correlations = correlation_table(study)
    per_task = per_task_outcomes(run_outcomes(study))
    scores = per_task["score"].unstack("method").drop(columns="zeroshot")
    built = {
        "measures": figures.measure_vs_accuracy(
            task_measure_table(study), domain_measure_table(study), correlations
        ),
        "outcomes": figures.method_outcomes(summary),
        "tradeoff": figures.dg_vs_cf(summary, per_task),
        "heatmap": figures.task_method_heatmap(scores),
    }
    return {key: (fig, figures.png(fig)) for key, fig in built.items()}


def test_the_answer_comes_first_and_provenance_last(document):
    headings = [(s.level, s.heading) for s in document.sections]
    assert headings[0] == (2, ANSWER_HEADING)
    assert headings[1] == (3, "ID, DG, CF and score")
    assert headings[-1] == (2, "Provenance")
    answer = document.sections[0].blocks
    assert [b.kind for b in answer] == ["paragraph", "table", "paragraph"]
    text = answer[0].text
    assert "measured tiny zero-shot on 8 task(s)" in text
    assert "**held** (7): ss measures difficulty better than ACS; LoRA forgets least;" in text
    assert "**contradicted**: none." in text
    assert "**inconclusive** (1): A-CLIP gives the best balance between DG and CF." in text
    terms = " ".join(document.sections[1].blocks[0].items)
    for term in ("**ID gain**", "**DG gain**", "**CF drop**", "**score**"):
        assert term in terms


def test_the_summary_names_as_best_what_the_table_ranks_first(document):
    paragraph, table = document.sections[0].blocks[:2]
    best = re.search(
        r"(\S+) gives the best balance: it ranks first on the (balance score)", paragraph.text
    )
    assert best, paragraph.text
    first = table.rows[0]
    assert first[0] == best.group(1) and first[table.headers.index("rank")] == "1"


def _summary(scores: dict) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "score": list(scores.values()),
            "score_std": 0.001,
            "n_seeds": 2,
            "baseline": [m == "zeroshot" for m in scores],
        },
        index=list(scores),
    )
    return table.sort_values("score", ascending=False)


def test_verdict_never_calls_a_method_best_when_zero_shot_ranks_first():
    text = verdict_sentence(_summary({"zeroshot": 0.0, "lora": -0.01, "full": -0.02}), 3)
    assert "best balance" not in text
    assert "no fine-tuning method beats leaving the model zero-shot" in text
    assert "mean of ID gain, DG gain and -CF drop" in text and "lora, scores -1.00 pp" in text
    text = verdict_sentence(_summary({"lora": 0.02, "zeroshot": 0.0, "full": -0.02}), 3)
    assert "lora gives the best balance: it ranks first on the balance score" in text


def _texts(fig):
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("key", ["measures", "outcomes", "tradeoff", "heatmap"])
def test_figure_text_is_readable_at_the_width_it_is_shown(built_figures, key):
    fig, png = built_figures[key]
    width, _ = png_size(png)
    shown = min(width, COLUMN_PX)  # CSS: img { max-width: 100% } in a COLUMN_PX column
    smallest = min(t.get_fontsize() for t in _texts(fig))
    pixels = smallest * figures.DPI / 72 * shown / width
    assert pixels >= MIN_TEXT_PX, f"{key}: smallest text {pixels:.1f} px at {shown} px wide"
    assert width <= COLUMN_PX


def test_the_measure_strip_wraps_into_a_grid(built_figures):
    fig, png = built_figures["measures"]
    panels = [ax for ax in fig.axes if ax.axison]
    assert len({round(ax.get_position().y0, 3) for ax in panels}) >= 2  # more than one row
    width, height = png_size(png)
    assert width / height < 2


def _marker_boxes(fig):
    boxes = []
    for artist in fig.findobj(lambda a: a.get_gid() == MARKER_GID):
        ax = artist.axes
        if isinstance(artist, Line2D):
            if artist.get_marker() in ("None", "", None):
                continue
            xy, radius = artist.get_xydata(), artist.get_markersize() / 2
        elif isinstance(artist, PathCollection):  # a scatter
            xy, radius = artist.get_offsets(), math.sqrt(artist.get_sizes()[0]) / 2
        else:  # an error bar's lines
            continue
        radius *= fig.dpi / 72
        for x, y in ax.transData.transform(np.asarray(xy, dtype=float)):
            boxes.append((x - radius, y - radius, x + radius, y + radius))
    return boxes


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("key", ["measures", "tradeoff"])
def test_point_labels_overlap_no_marker_and_no_other_label(built_figures, key):
    fig, _ = built_figures[key]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.findobj(Text) if t.get_gid() == LABEL_GID]
    assert labels
    boxes = [tuple(t.get_window_extent(renderer).extents) for t in labels]
    markers = _marker_boxes(fig)
    assert markers
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b)
    for box, label in zip(boxes, labels, strict=True):
        assert not any(_overlap(box, m) for m in markers), label.get_text()
        assert label.axes.bbox.contains(box[0], box[1]) and label.axes.bbox.contains(*box[2:])


def test_the_trade_off_names_every_method(built_figures):
    fig, _ = built_figures["tradeoff"]
    names = {t.get_text() for t in fig.findobj(Text) if t.get_gid() == LABEL_GID}
    assert names == {"aclip", "lora", "full", "bitfit", "clip-adapter"}


def test_every_figure_sits_under_the_heading_its_caption_names(document):
    placed = {
        figure.file_name: (section.heading, figure.caption)
        for section, figure in document.figures()
    }
    assert set(placed) == set(figures.FIGURE_NAMES.values())
    for heading, caption in placed.values():
        for unit in ("tasks", "task-domains"):
            if f"across {unit}" in heading:
                assert f"across {unit}" in caption
    measures = placed[figures.FIGURE_NAMES["measures"]]
    assert measures[0].startswith("Does zero-shot misalignment")
    for key in ("outcomes", "tradeoff", "heatmap"):
        assert placed[figures.FIGURE_NAMES[key]][0] == "Methods in detail"


def test_a_long_table_is_summarised_and_folded(document):
    section = next(s for s in document.sections if s.heading.startswith("Method outcomes"))
    sentence, folded = section.blocks
    assert sentence.kind == "paragraph" and folded.kind == "collapsed"
    assert sentence.text.startswith("7 of 75 relations have a Spearman 95% interval")
    assert "bitfit: CF drop ~ silhouette_modality (rho +1.00)" in sentence.text
    notes, table = folded.blocks
    assert folded.summary == "All 75 relations" and len(table.rows) == 75
    assert "weak evidence" in notes.text
    cells = [c for row in table.rows for c in row]
    assert not any("weak evidence" in c or "resamples" in c for c in cells)
    bold = [row[0] for row in table.rows if row[4].startswith("**")]
    assert "bitfit: CF drop ~ silhouette_modality" in bold


def test_notes_that_repeat_are_stated_once():
    notes = factor_notes(
        [
            "24 of 2000 bootstrap resamples constant, dropped; n = 4: weak evidence",
            "145 of 2000 bootstrap resamples constant, dropped; n = 4: weak evidence",
            "n = 4: weak evidence; x is constant: no correlation",
        ]
    )
    assert notes.weak and notes.dropped == ["24", "145", ""]
    assert notes.keys == ["", "", "1"] and notes.legend == {"x is constant: no correlation": "1"}
    text = notes.paragraph().text
    assert text.count("weak evidence") == 1 and text.count("x is constant") == 1


def test_html_comes_from_the_same_document_with_css_for_any_width(document):
    html = to_html(document)
    md = to_markdown(document)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert re.search(r"\.table-scroll \{[^}]*overflow-x: auto", html)
    assert re.search(r"img \{[^}]*max-width: 100%", html)
    assert html.count('<div class="table-scroll"><table>') == md.count("\n|---|")
    assert html.count("<details>") == md.count("<details>") >= 1
    body = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    assert "`" not in body and "**" not in body  # Markdown is rendered, not shown
    assert "<code>silhouette_modality</code>" in body and "<strong>held</strong>" in body
    assert html.index(f"<h2>{ANSWER_HEADING}</h2>") < html.index("<h2>Provenance</h2>")
