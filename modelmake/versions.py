"""Versions of the tools a step runs, read from package metadata without importing the tools."""
from __future__ import annotations

from functools import cache

# A tool may be installed under more than one distribution name; the first one found is reported.
DISTRIBUTIONS = {
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "keras": ("keras",),
    "ai-edge-litert": ("ai-edge-litert",),
    "numpy": ("numpy",),
    "scikit-learn": ("scikit-learn",),
    "matplotlib": ("matplotlib",),
    "modelmake": ("modelmake",),
}


@cache
def version_of(tool: str) -> str:
    from importlib import metadata  # only when a graph is built: a cached one needs no versions

    for distribution in DISTRIBUTIONS.get(tool, (tool,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def tool_versions(*tools: str) -> dict[str, str]:
    return {tool: version_of(tool) for tool in tools}
