"""A model's artifacts: each variant a target lists, in every format the target runs, with its budgets merged.

``fail(yaml_path, message, of_key=False)`` reports a problem at a place in
models.yaml; everything here is checked before any model is loaded.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .. import formats, metrics
from ..kinds import OutputKind, Precision
from ..plan import Artifact, Budget, FormatSupport, Source, TargetProfile

Fail = Callable[..., None]
INVALID_SOURCE = "invalid"  # the kind of a source that is already reported


@dataclass(frozen=True)
class Variant:
    """One entry of a model's variants."""

    name: str
    precision: Precision
    per_channel: bool
    palettize: int | None
    budgets: tuple[Budget, ...]


@dataclass(frozen=True)
class TargetEntry:
    """One entry of a model's targets: the variants it lists, in order, and how one of them is shipped."""

    name: str
    path: tuple  # of the target's key in models.yaml
    list_path: tuple  # of its list of variants
    variants: tuple[str, ...]
    selection: str | None  # None: ship every variant; "first_passing": the first that passes its budgets

    @classmethod
    def parse(cls, model_path: tuple, name: str, entry) -> TargetEntry:
        path = model_path + ("targets", name)
        if isinstance(entry, list):
            return cls(name, path, path, tuple(entry), None)
        return cls(name, path, path + ("prefer",), tuple(entry["prefer"]), entry.get("select", "first_passing"))


def buildable_summary() -> str:
    return "; ".join(f"{backend.name} from {'/'.join(backend.source_kinds)} sources" for backend in formats.backends())


def usable_formats(fail: Fail, entry: TargetEntry, profile: TargetProfile, source: Source) -> list[FormatSupport]:
    """The formats the target runs that this model's source can be built into; reported when there are none."""
    if source.kind == INVALID_SOURCE:
        # The source is already reported; judge the target on what any source could give.
        usable = [support for name, support in profile.formats.items() if name in formats.FORMATS]
        made_from = ""
    else:
        usable = [support for name, support in profile.formats.items() if source.kind in formats.backend(name).source_kinds]
        made_from = f" from this model's {source.kind} source"
    if not usable:
        fail(
            entry.path,
            f"modelmake cannot build any format {profile.name} runs ({', '.join(profile.formats)}){made_from}; "
            f"it builds {buildable_summary()}: remove {profile.name} from this model's targets",
            of_key=True,
        )
    return usable


def target_artifacts(
    fail: Fail,
    *,
    model: str,
    entry: TargetEntry,
    profile: TargetProfile | None,
    source: Source,
    variants: Mapping[str, Variant],
    model_budgets: Sequence[Budget],
    override: Sequence[Budget],
    has_evaluation: bool,
    kinds: Sequence[OutputKind] = (OutputKind.CLASSES,),
) -> list[Artifact]:
    """The target's artifacts in the order it lists its variants, each variant in the profile's order of formats.

    Without a profile (an unknown target, already reported) only the variant names are checked.
    """
    supports = usable_formats(fail, entry, profile, source) if profile else []
    profile_file = profile.profile_file if profile else ""
    found = []
    for index, name in enumerate(entry.variants):
        variant = variants.get(name)
        if variant is None:
            hint = difflib.get_close_matches(name, variants, n=1)
            advice = f"did you mean '{hint[0]}'? " if hint else ""
            fail(
                entry.list_path + (index,),
                f"unknown variant '{name}'; {advice}variants of {model}: {', '.join(variants)} "
                f"(declare it under models -> {model} -> variants)",
            )
            continue
        for support in supports:
            problem = _unbuildable(entry, profile_file, support, variant)
            if problem:
                fail(entry.list_path + (index,), problem)
                continue
            found.append(
                Artifact(
                    model=model,
                    variant=name,
                    format=support.format,
                    target=entry.name,
                    precision=variant.precision,
                    budgets=merged_budgets(support, variant, model_budgets, override, has_evaluation=has_evaluation, kinds=kinds),
                    per_channel=variant.per_channel,
                    palettize=variant.palettize,
                    selection=entry.selection,
                    preference=index,
                )
            )
    return found


def _unbuildable(entry: TargetEntry, profile_file: str, support: FormatSupport, variant: Variant) -> str | None:
    """Why this variant cannot be built in this format for this target, or None."""
    if variant.precision not in support.precisions:
        return (
            f"{entry.name} cannot run {variant.precision} in {support.format} (its profile {profile_file} lists "
            f"{', '.join(support.precisions)}): remove '{variant.name}' from this target or pick another precision"
        )
    backend = formats.backend(support.format)
    problem: str | None
    if variant.precision not in backend.precisions:
        problem = f"modelmake builds {support.format} in {', '.join(backend.precisions)} only"
    elif variant.palettize and not backend.palettizes:
        palettizing = [b.name for b in formats.backends() if b.palettizes]
        problem = (
            f"{support.format} files cannot store palettized weights (only {', '.join(palettizing)} can); "
            f"list this variant only for targets that build {' or '.join(palettizing)}"
        )
    else:
        problem = backend.variant_problem(support, variant.precision, variant.palettize)
    if problem is None:
        return None
    return f"'{variant.name}' cannot be built for {entry.name} in {support.format}: {problem}"


def merged_budgets(
    support: FormatSupport,
    variant: Variant,
    model_budgets: Sequence[Budget],
    override: Sequence[Budget],
    *,
    has_evaluation: bool,
    kinds: Sequence[OutputKind] = (OutputKind.CLASSES,),
) -> tuple[Budget, ...]:
    """The precision's parity tolerances for the outputs' kinds, full accelerator coverage where the profile requires it, then the
    model's budgets, the variant's and the target's override: a later budget of the same name replaces an earlier one."""
    merged: dict[str, Budget] = {}
    if has_evaluation:
        merged |= {key: Budget.parse(key, limit) for key, limit in metrics.default_tolerances(kinds, variant.precision).items()}
    if support.require_full_coverage and support.accelerator:
        key = f"min_{metrics.ACCELERATOR_COVERAGE}"
        merged[key] = Budget.parse(key, 1.0)
    for chosen in (model_budgets, variant.budgets, override):
        merged |= {budget.key: budget for budget in chosen}
    if variant.precision == Precision.FP32:
        # A model's quantized-share budget bounds its quantized variants; an fp32 one has no such figure.
        merged = {key: budget for key, budget in merged.items() if budget.metric != metrics.QUANTIZED_SHARE}
    return tuple(merged.values())
