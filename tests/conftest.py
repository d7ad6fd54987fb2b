"""Shared pytest set-up: deterministic torch, and the opt-in book checks."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--book-built", action="store_true", default=False,
                     help="also run the checks of the built HTML book in _build/html "
                          "(make book-strict passes it after building)")


def _browser_missing() -> str | None:
    """Why the browser check cannot run here (None: Chromium and Playwright are present)."""
    import importlib.util
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists():
        return "Chromium is not installed (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install playwright)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The HTML checks need a built book. Without --book-built they are deselected
    # (not run, and not reported as passed or skipped); `make test` runs them. The
    # browser check also needs Chromium and Playwright; without them it is deselected
    # and the report says so plainly.
    drop = (lambda item: "book_html" in item.keywords) if not config.getoption("--book-built") else None
    missing = _browser_missing()
    if drop is None and missing:
        drop = lambda item: "browser" in item.keywords  # noqa: E731
        if any(drop(item) for item in items):
            config._browser_not_run = missing
    if drop is None:
        return
    dropped = [item for item in items if drop(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not drop(item)]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    why = getattr(config, "_browser_not_run", None)
    if why:
        terminalreporter.write_line(f"BROWSER CHECK NOT RUN: {why}; the book was not opened in a browser", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "book_html: checks of the built HTML book")
    config.addinivalue_line("markers", "browser: the built book opened in Chromium (needs Chromium and Playwright)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield
