"""Chipset profiles: the built-in ones, a workspace's targets/ that add or override them, and loading one."""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from .. import formats
from ..errors import SpecError
from ..kinds import Precision
from ..layout import WORKSPACE_PROFILES
from ..plan import FormatSupport, TargetProfile
from ..yamlfile import load_yaml
from .schema import COVERAGE_KEYS, TARGET_SCHEMA, schema_problems

BUILTIN_PROFILES = Path(__file__).resolve().parent.parent / "profiles"


def profile_files(workspace: Path) -> dict[str, tuple[Path, str]]:
    """Every known profile: name -> (file, display name); the workspace's targets/ overrides built-ins."""
    found = {p.stem: (p, f"builtin:{p.name}") for p in sorted(BUILTIN_PROFILES.glob("*.yaml"))}
    local = workspace / WORKSPACE_PROFILES
    if local.is_dir():
        found.update({p.stem: (p, f"{WORKSPACE_PROFILES}/{p.name}") for p in sorted(local.glob("*.yaml"))})
    return found


def load_profile(path: Path, display_name: str) -> TargetProfile:
    doc = load_yaml(path, display_name)
    problems = schema_problems(doc, TARGET_SCHEMA)
    if problems:
        raise SpecError(problems)
    data = doc.data
    if data["name"] != path.stem:
        raise SpecError([doc.problem(
            ("name",),
            f"name '{data['name']}' does not match the file name '{path.name}': "
            f"set name: {path.stem}, or rename the file to {data['name']}.yaml",
        )])
    return TargetProfile(
        name=data["name"],
        soc=data["soc"],
        platform=data["platform"],
        profile_file=display_name,
        formats=MappingProxyType({name: format_support(name, section) for name, section in data["formats"].items()}),
        min_os=data.get("min_os", ""),
        description=data.get("description", ""),
        chipsets=tuple(data.get("chipsets", ())),
        min_os_version=data.get("min_os_version"),
    )


def format_support(name: str, section: dict) -> FormatSupport:
    """A schema-valid format section of a profile: the common keys here, the rest parsed by the format's backend."""
    common = {key: section[key] for key in COVERAGE_KEYS if key in section}
    own = {key: value for key, value in section.items() if key != "precisions" and key not in COVERAGE_KEYS}
    return FormatSupport(
        format=name,
        precisions=tuple(Precision(precision) for precision in section["precisions"]),
        settings=formats.backend(name).parse_settings(own),
        **common,
    )
