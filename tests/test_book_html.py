"""Checks of the built book (run by `make book-strict`, which passes --book-built)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.book_html


def _pages():
    pages = sorted(HTML.rglob("*.html"))
    assert pages, f"no HTML under {HTML}: build the book first (make book)"
    return pages


def test_index_exists():
    assert (HTML / "index.html").is_file()


def test_no_page_loads_mathjax_from_a_cdn():
    for page in _pages():
        text = page.read_text(errors="replace")
        for src in re.findall(r"<script[^>]+src=\"([^\"]+)\"", text):
            assert not src.startswith(("http://", "https://", "//")), f"{page.name} loads {src}"


def test_math_pages_use_the_local_mathjax():
    # sphinx-mathjax-offline copies MathJax (and the fonts its CHTML output loads) into the build
    local = HTML / "_static" / "mathjax" / "tex-chtml.js"
    assert local.is_file() and local.stat().st_size > 1_000_000
    fonts = list((HTML / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) > 10
    math_pages = [p for p in _pages() if "class=\"math" in p.read_text(errors="replace")]
    assert math_pages, "no page with math"
    for page in math_pages:
        srcs = re.findall(r"<script[^>]+src=\"([^\"]+)\"", page.read_text(errors="replace"))
        assert any(s.split("?")[0].endswith("_static/mathjax/tex-chtml.js") for s in srcs), page.name


def test_citations_resolve():
    for page in _pages():
        text = page.read_text(errors="replace")
        text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
        visible = re.sub(r"<[^>]+>", "", text)
        # Sphinx marks an unresolved citation or reference with "??" or a
        # "problematic" span; a strict build also fails on it.
        assert "class=\"problematic\"" not in text, page.name
        assert not re.search(r"\[\?\?\]|\(\?\?\)", visible), page.name


def test_chapter_pages_wrap_printed_output():
    css = HTML / "_static" / "course.css"
    assert css.is_file() and "pre-wrap" in css.read_text()
    chapters = [p for p in _pages() if "cell_output" in p.read_text(errors="replace")]
    assert chapters, "no page with cell output"
    for page in chapters:
        assert "_static/course.css" in page.read_text(errors="replace"), page.name
