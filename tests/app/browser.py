"""Debian's Chromium driven by Playwright for the page tests: the launch settings (this machine's
closed network wants the background-networking switches off) and a page opened on a running app."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NO_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")


def fresh_folder(path: Path) -> Path:
    """An empty folder for a module's screenshots."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@contextmanager
def open_page(url: str, ready_js: str | None = None):
    """A 1400 x 900 page at `url` in headless Chromium (downloads allowed, 60 s timeouts), after
    `ready_js` (a JS predicate) holds when given; the browser closes on exit."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the serve extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            pg.set_default_timeout(60_000)
            pg.goto(url)
            if ready_js:
                pg.wait_for_function(ready_js)
            yield pg
        finally:
            browser.close()


@contextmanager
def served(config, tool):
    """The app with `config` on `tool`, served by uvicorn on a free local port: yields its URL."""
    pytest.importorskip("uvicorn")
    from ibisagent.app.api import create_app
    from ibisagent.app.background import running_server

    with running_server(create_app(config, tool=tool)) as url:
        yield url
