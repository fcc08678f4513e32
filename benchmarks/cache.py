"""The shared cache on the full example, against a real S3 server (SeaweedFS on loopback), all in one run.

Three builds of the example workspace from scratch:

- cold, without a cache (the build the other benchmarks share);
- cold, with an empty cache that it fills (every cacheable task uploads): target <= 1.10x the first;
- a fresh copy with an empty build/ and the filled cache (every model task fetched; package, report and
  signing run here, with the second build's development key, as CI's release job would with its key):
  target <= 0.10x the first, and its bundle archives byte-identical to the second build's.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ._timing import DOIT, built_example, example_workspace, quiet_env, report, run

NAME = "cache"


def _archives(workspace: Path) -> dict[str, str]:
    root = workspace / "build" / "bundles"
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.zip"))}


def main(names) -> list[str]:
    if NAME not in names:
        return []
    from modelmake.cache.hook import last_build

    from tests.support.seaweed import start_server, stop_server

    for variable in ("MODELMAKE_CACHE", "MODELMAKE_CACHE_WRITE"):
        os.environ.pop(variable, None)  # the cold build is the one without a cache
    _, cold = built_example()
    lines = []
    with tempfile.TemporaryDirectory(prefix="modelmake-bench-cache-") as scratch:
        root = Path(scratch)
        process, server = start_server(root / "seaweed")
        try:
            env = quiet_env() | server.environment() | {"MODELMAKE_CACHE": server.fresh_url()}
            filling = example_workspace(root / "filling")
            uploading = run(DOIT, filling, env=env)
            filled = last_build(filling) or {}
            lines.append(report(
                "cold build, cache uploading", uploading, cold, "cold build without a cache", "target <= 1.10x", uploading <= 1.10 * cold,
            ))
            lines.append(f"  uploaded {filled.get('uploads', 0)} task outputs, {filled.get('bytes_up', 0) / 1e6:.1f} MB")

            warm_workspace = example_workspace(root / "warm")
            shutil.copytree(filling / "keys", warm_workspace / "keys")  # the release job's signing key: the same as the filler's here
            warm = run(DOIT, warm_workspace, env=env)
            fetched = last_build(warm_workspace) or {}
            lines.append(report(
                "warm cache, fresh clone", warm, cold, "cold build without a cache", "target <= 0.10x", warm <= 0.10 * cold,
            ))
            lines.append(
                f"  {fetched.get('hits', 0)} of {fetched.get('tasks', 0)} model tasks from the cache, "
                f"{fetched.get('bytes_down', 0) / 1e6:.1f} MB fetched, {fetched.get('seconds_saved', 0):.0f} s saved"
            )
            archives = _archives(filling)
            verdict = "PASS" if archives and _archives(warm_workspace) == archives else "FAIL"
            lines.append(f"warm clone's bundle archives byte-identical to the filling build's ({len(archives)} archives) {verdict}")
        finally:
            stop_server(process)
    return lines
