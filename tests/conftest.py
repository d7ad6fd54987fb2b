"""Shared pytest set-up: deterministic torch, and the opt-in book checks."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--book-built", action="store_true", default=False,
                     help="also run the checks of the built HTML book in _build/html "
                          "(make book-strict passes it after building)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The HTML checks need a built book. Without --book-built they are deselected
    # (not run, and not reported as passed or skipped); `make test` runs them.
    if config.getoption("--book-built"):
        return
    keep = [item for item in items if "book_html" not in item.keywords]
    dropped = [item for item in items if "book_html" in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "book_html: checks of the built HTML book")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield
