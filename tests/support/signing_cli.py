"""The `model_signing` command line, the verifier a bundle's consumer runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def model_signing_verify(directory: Path, public_pem: Path, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """`model_signing verify key DIRECTORY` against DIRECTORY/model.sig; the caller checks the return code."""
    return subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(directory),
         "--signature", str(directory / "model.sig"), "--public_key", str(public_pem)],
        capture_output=True, text=True, timeout=timeout,
    )
