"""A tiny study's report.html in a real browser: Debian's headless Chromium driven by Playwright
(the system browser, never a downloaded one), at a desktop and at a phone width.

CI installs `chromium` (.ci/run); without it this test fails, unless CLIPGAUGE_NO_BROWSER=1
switches it off on purpose.
"""

import os
import shutil

import pytest
from studydb import planted_study

from clipgauge.report import build_report
from clipgauge.report.answer import ANSWER_HEADING
from clipgauge.report.render import COLUMN_PX

pytestmark = pytest.mark.slow

NO_BROWSER = "CLIPGAUGE_NO_BROWSER"
VIEWPORTS = [(1400, 900), (420, 800)]
IMAGES_JS = """[...document.images].map(i => ({
    complete: i.complete, natural: i.naturalWidth, shown: i.getBoundingClientRect().width}))"""
OPEN_DETAILS_JS = """(() => { const all = document.querySelectorAll('details');
    all.forEach(d => { d.open = true; }); return all.length; })()"""
HEADINGS_JS = "[...document.querySelectorAll('h1, h2, h3')].map(h => h.textContent.trim())"


@pytest.fixture(scope="module")
def browser():
    if os.environ.get(NO_BROWSER) == "1":
        pytest.skip(f"{NO_BROWSER}=1: the browser test is switched off")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail(
            "no `chromium` on PATH: install Debian's headless Chromium (`apt-get install -y "
            f"chromium`; .ci/run does so as root), or set {NO_BROWSER}=1 to skip this test",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def report_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    planted_study(folder, n_tasks=3)
    build_report(folder)
    return (folder / "report.html").as_uri()


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_report_reads_in_a_browser(browser, report_url, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(report_url, wait_until="load")

    images = page.evaluate(IMAGES_JS)
    assert len(images) == 4
    assert all(image["complete"] and image["natural"] > 0 for image in images), images
    assert errors == []
    scroll_width, inner_width = page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= inner_width, f"the page scrolls sideways at {width} px"
    opened = page.evaluate(OPEN_DETAILS_JS)  # the folded tables, too, scroll in their own box
    assert opened >= 1
    assert page.evaluate("document.documentElement.scrollWidth") <= inner_width
    headings = page.evaluate(HEADINGS_JS)
    assert headings[1] == ANSWER_HEADING and headings[-1] == "Provenance", headings
    if width > COLUMN_PX + 40:  # room for the whole column: figures at their own size
        assert all(image["shown"] == min(image["natural"], COLUMN_PX) for image in images)
    else:
        assert all(image["shown"] <= inner_width for image in images)
    page.close()
