"""The workspace `modelmake init` writes is the one this repository's example uses."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_example_dodo_is_the_one_init_writes():
    # Two copies, because a pip-installed engine cannot reach this repository's root; this keeps them one.
    assert (REPO / "dodo.py").read_bytes() == (REPO / "modelmake" / "scaffold" / "dodo.py").read_bytes()
