"""The format registry: the one list of formats modelmake builds.

Spec, graph, evaluate, layout and publish ask this module; nothing else names
a format.  Adding one (ExecuTorch, say) is a package beside these with a
``BACKEND`` that implements ``base.FormatBackend``, and a line here.
"""
from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import FormatBackend

# In the order bundles list them and over-the-air clients prefer them when a target ships several.
FORMATS = ("tflite", "onnx", "coreml")


@cache
def backend(name: str) -> FormatBackend:
    """The backend of a registered format; its package is imported on first use (it imports no framework)."""
    if name not in FORMATS:
        raise KeyError(f"unknown format {name!r}: modelmake builds {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{name}").BACKEND


def backends() -> list[FormatBackend]:
    return [backend(name) for name in FORMATS]


def for_source_kind(kind: str) -> FormatBackend | None:
    """The format a foreign source file is in (a .tflite or .onnx source), or None for a TensorFlow source."""
    return backend(kind) if kind in FORMATS else None
