"""Options for the whole suite."""
from __future__ import annotations


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--regenerate-golden",
        action="store_true",
        default=False,
        help="write the golden files (tests/golden/, tests/corpus/*/*.expected) from this run instead of comparing against them",
    )
