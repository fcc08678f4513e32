"""models.yaml and the chipset profiles compiled into a frozen, validated BuildPlan.

``schema`` validates the documents (``messages`` words their errors),
``profiles`` loads the chipset profiles, ``compiler`` applies the cross-field
rules and ``artifacts`` expands each model's targets into artifacts.

The names below are imported on first use, so that ``python -m
modelmake.spec.schema`` runs the schema module without importing it twice.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compiler import load_plan as load_plan
    from .profiles import BUILTIN_PROFILES as BUILTIN_PROFILES
    from .profiles import load_profile as load_profile
    from .profiles import profile_files as profile_files
    from .schema import SCHEMA_DIR as SCHEMA_DIR
    from .schema import schema_problems as schema_problems

_EXPORTS = {
    "load_plan": "compiler",
    "BUILTIN_PROFILES": "profiles",
    "load_profile": "profiles",
    "profile_files": "profiles",
    "SCHEMA_DIR": "schema",
    "schema_problems": "schema",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
