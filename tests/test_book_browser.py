"""The built book as a reader's browser shows it (Chromium, driven by Playwright).

Run by `make book-strict` with ``--book-built``, after the build; where Chromium or
Playwright is missing, conftest.py deselects these tests and says so in the report
(`.ci/run` installs both). Every page is opened at 1,280 px and checked for: math
typeset by MathJax (no raw TeX left in the text, no MathJax error), every display
equation inside its text column (a wide one scrolls within it), every image loaded,
and no console error or uncaught exception from the page's own scripts."""

import functools
import http.server
import re
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.book_html, pytest.mark.browser]

# what each page reports, computed in the browser once MathJax has finished
PAGE_REPORT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const text = article.querySelector('section') || article;
  const col = text.getBoundingClientRect();
  const displays = [...document.querySelectorAll('mjx-container[display="true"]')];
  const outside = displays.filter(d => {
    const r = d.getBoundingClientRect();
    const scrolls = ['auto', 'scroll'].includes(getComputedStyle(d).overflowX);
    return r.left < col.left - 1 || r.right > col.right + 1 || (d.scrollWidth > d.clientWidth + 1 && !scrolls);
  }).map(d => (d.textContent || '').slice(0, 50));
  const raw = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, script, style, mjx-container, .highlight, .cell_output, textarea')) continue;
    if (/\\$\\$|\\\\begin\\{|\\\\frac|\\\\mathrm|\\\\left|\\\\\\(/.test(n.textContent)) raw.push(n.textContent.trim().slice(0, 60));
  }
  return {math: document.querySelectorAll('mjx-container').length, displays: displays.length, outside,
          raw: raw.slice(0, 5), errors: document.querySelectorAll('mjx-merror').length,
          broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """The built book served on a local port (pages load their scripts as on a web server)."""
    assert (HTML / "index.html").is_file(), f"no book under {HTML}: build it first (make book)"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _pages():
    """Every page of the book, except the redirects (index.html), whose targets must exist."""
    pages = []
    for p in sorted(HTML.rglob("*.html")):
        if {"_sources", "_static"} & set(p.relative_to(HTML).parts):
            continue
        target = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', p.read_text(errors="replace"), re.I)
        if target:
            assert (p.parent / target.group(1)).is_file(), f"{p.name} redirects to a missing {target.group(1)}"
        else:
            pages.append(p.relative_to(HTML).as_posix())
    return pages


def _own_error(message) -> bool:
    """A console error of the page's own, not the browser's request for a favicon the book has none of."""
    return message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico") \
        and "invalid theme mode" not in message.text


def test_every_page_typesets_its_math_fits_its_equations_loads_its_images_and_logs_no_error(site):
    from playwright.sync_api import sync_playwright

    problems, math_pages = [], 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        for rel in _pages():
            page, errors = context.new_page(), []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if _own_error(m) else None)
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.goto(f"{site}/{rel}", wait_until="load")
            report = page.evaluate(PAGE_REPORT)
            page.wait_for_timeout(200)  # late console messages
            math_pages += report["math"] > 0
            for key in ("outside", "raw", "broken_images"):
                if report[key]:
                    problems.append(f"{rel}: {key} {report[key]}")
            if report["errors"]:
                problems.append(f"{rel}: {report['errors']} MathJax errors")
            if errors:
                problems.append(f"{rel}: console {errors[:3]}")
            page.close()
        browser.close()
    assert math_pages >= 6, f"MathJax typeset math on only {math_pages} pages"
    assert not problems, "\n".join(problems)
