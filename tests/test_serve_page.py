"""The page at ``GET /``, in a real headless browser: type an utterance, submit, read the tree.

Playwright drives Debian's Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``); it downloads no
browser of its own. ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import Server

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # headless as root, and quiet on a machine without a network
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("MTOP_EDGE_PAGE_SCREENSHOT")  # set to keep the screenshot (the serve docs' one)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser_page(tiny_export):
    sync_api = pytest.importorskip("playwright.sync_api")
    server = Server(model=tiny_export[0])
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(server.url + "/")
            yield page, server
            browser.close()
    finally:
        assert server.stop()


def test_typing_an_utterance_shows_its_tree_spans_intent_and_model(browser_page):
    import httpx

    page, server = browser_page
    utterance = "remind me to pick up milk tomorrow at 5pm"
    expected = httpx.post(server.url + "/v1/parse", json={"utterance": utterance}).json()
    page.fill("#utterance", utterance)
    page.click("#parse")
    page.wait_for_selector("#result .tree")
    assert page.inner_text("#intent") == expected["intent"]
    assert page.inner_text("#result .form") == expected["logical_form"]
    tree = page.inner_text("#result .tree")
    assert expected["intent"] in tree and all(slot["label"] in tree for slot in expected["slots"])
    marked = page.eval_on_selector_all("#result mark", "marks => marks.map(m => m.dataset.label)")
    assert sorted(marked) == sorted(slot["label"] for slot in _leaves(expected["slots"]))
    assert " ms" in page.inner_text("#result") and "confidence" in page.inner_text("#result")
    assert page.inner_text("#model") == expected["model"]
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)


def test_the_batch_box_parses_every_line(browser_page):
    page, _ = browser_page
    page.fill("#utterances", "call mom\nset an alarm for 7am\n\nwhat is the weather in Paris")
    page.click("#parse-many")
    page.wait_for_selector("#results table")
    rows = page.query_selector_all("#results tr.row")
    assert len(rows) == 3  # the empty line is not sent
    assert all(row.query_selector(".form").inner_text().startswith("[IN:") for row in rows)


def _leaves(slots):
    for slot in slots:
        if "intent" in slot:
            yield from _leaves(slot["intent"]["slots"])
        else:
            yield slot
