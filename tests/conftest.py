"""Options for the whole suite."""
from __future__ import annotations


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--regenerate-golden",
        action="store_true",
        default=False,
        help="write the golden files (tests/golden/, tests/corpus/*/*.expected) from this run instead of comparing against them",
    )


# A SeaweedFS S3 server on loopback, started once per session by the tests that ask for it (tests/support/seaweed.py).
from tests.support.seaweed import s3_cache, seaweed_s3  # noqa: E402, F401
