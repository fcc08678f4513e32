"""Running ONNX Runtime's tools where their stray files cannot reach the workspace.

Some of them write into the current directory whatever the caller asks:
symbolic shape inference, for one, saves ``sym_shape_infer_temp.onnx``
(and its external data) there whenever its inference is incomplete, which
the quantization pre-processing then catches and moves past.  The build's
working directory is the workspace root.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The working directory belongs to the process: two threads must not move it at once.
_LOCK = threading.RLock()


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the block with ``path`` as the current directory; callers pass absolute paths inside it."""
    with _LOCK:
        before = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(before)
