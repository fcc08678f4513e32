"""A model's artifacts: each variant a target lists, in every format the target runs, with its budgets merged.

``fail(yaml_path, message, of_key=False)`` reports a problem at a place in
models.yaml; everything here is checked before any model is loaded.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from .. import formats, metrics
from ..kinds import OutputKind, Precision
from ..plan import Artifact, Budget, FormatSupport, Pruning, Source, TargetProfile, Training

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
    training: Training | None = None
    prune: Pruning | None = None


@dataclass(frozen=True)
class TargetEntry:
    """One entry of a model's targets: the variants it lists, in order, how one of them is shipped, and in which formats."""

    name: str
    path: tuple  # of the target's key in models.yaml
    list_path: tuple  # of its list of variants
    variants: tuple[str, ...]
    selection: str | None  # None: ship every variant; "first_passing": the first that passes its budgets
    formats: tuple[str, ...] | None = None  # None: every format the profile lists

    @property
    def formats_path(self) -> tuple:
        return self.path + ("formats",)

    @classmethod
    def parse(cls, fail: Fail, model_path: tuple, name: str, entry) -> TargetEntry | None:
        """A schema-valid entry: a list of variants, or a mapping with exactly one of variants and prefer."""
        path = model_path + ("targets", name)
        if isinstance(entry, list):
            return cls(name, path, path, tuple(entry), None)
        given = [key for key in ("variants", "prefer") if key in entry]
        if len(given) != 1:
            if given:
                fail(
                    path + ("prefer",),
                    "variants and prefer cannot both be given: list the variants to build under variants, "
                    "or the variants to choose one from, best first, under prefer",
                    of_key=True,
                )
            else:
                fail(path, "a target needs its variants: add variants: [...] (build each) or prefer: [...] (ship the first that passes)")
            return None
        (key,) = given
        if key == "variants" and "select" in entry:
            fail(
                path + ("select",),
                "select chooses among the variants of prefer: rename variants to prefer, or remove select",
                of_key=True,
            )
            return None
        selection = entry.get("select", "first_passing") if key == "prefer" else None
        formats_given = tuple(entry["formats"]) if "formats" in entry else None
        return cls(name, path, path + (key,), tuple(entry[key]), selection, formats_given)


def buildable_summary() -> str:
    return "; ".join(f"{backend.name} from {'/'.join(backend.source_kinds)} sources" for backend in formats.backends())


def usable_formats(fail: Fail, entry: TargetEntry, profile: TargetProfile, source: Source) -> list[FormatSupport]:
    """The formats the target runs (those its entry names, if it names any) that this model's source can be built into.

    None at all is reported on the target; a named format the profile lacks, or the source cannot give, on itself.
    """
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
        return []
    if entry.formats is None:
        return usable
    for index, name in enumerate(entry.formats):
        where = entry.formats_path + (index,)
        if name not in profile.formats:
            fail(
                where,
                f"{profile.name} does not run {name}: its profile {profile.profile_file} lists {', '.join(profile.formats)}; "
                "name one of those",
            )
        elif name not in {support.format for support in usable}:
            fail(
                where,
                f"modelmake cannot build {name}{made_from}; it builds {buildable_summary()}: remove {name} from formats",
            )
    return [support for support in usable if support.format in entry.formats]


def target_artifacts(
    fail: Fail,
    *,
    model: str,
    entry: TargetEntry,
    profile: TargetProfile | None,
    source: Source,
    variants: Mapping[str, Variant],
    unchecked_variants: Collection[str] | None = (),
    model_budgets: Sequence[Budget],
    override: Sequence[Budget],
    has_evaluation: bool,
    kinds: Sequence[OutputKind] = (OutputKind.CLASSES,),
) -> list[Artifact]:
    """The target's artifacts in the order it lists its variants, each variant in the profile's order of formats.

    Without a profile (an unknown target, already reported) only the variant names are checked.
    ``unchecked_variants`` are declared but already reported as invalid: a name listed that is, or resembles, one of
    them is passed over (None: the variants themselves are invalid, and no name is checked).
    """
    supports = usable_formats(fail, entry, profile, source) if profile else []
    profile_file = profile.profile_file if profile else ""
    found = []
    for index, name in enumerate(entry.variants):
        variant = variants.get(name)
        if variant is None and (unchecked_variants is None or difflib.get_close_matches(name, unchecked_variants, n=1)):
            continue
        if variant is None:
            hint = difflib.get_close_matches(name, variants, n=1)
            advice = f"did you mean '{hint[0]}'? " if hint else ""
            fail(
                entry.list_path + (index,),
                f"unknown variant '{name}'; {advice}variants of {model}: {', '.join(variants)} "
                f"(declare it under models -> {model} -> variants)",
            )
            continue
        problems = {support.format: _unbuildable(entry, profile_file, support, variant) for support in supports}
        buildable = [fmt for fmt, problem in problems.items() if problem is None]
        for support in supports:
            problem = problems[support.format]
            if problem:
                fail(entry.list_path + (index,), problem + _formats_hint(entry, buildable))
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
                    training=variant.training,
                    prune=variant.prune,
                )
            )
    return found


def _formats_hint(entry: TargetEntry, buildable: list[str]) -> str:
    """How to build the variant in the formats that can have it, when the target builds all its formats."""
    if entry.formats is not None or not buildable:
        return ""
    key = "variants" if entry.selection is None else "prefer"
    listed = ", ".join(entry.variants)
    return f", or build only {' and '.join(buildable)} here: {entry.name}: {{{key}: [{listed}], formats: [{', '.join(buildable)}]}}"


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
        problem = training_problem(support.format, variant) or backend.variant_problem(support, variant.precision, variant.palettize)
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
        # A variant that fine-tunes or prunes computes other numbers than its source by design: the loosest parity
        # tolerances (int8's) apply to it, and its accuracy drop tells whether it is good.
        tolerated = Precision.INT8 if variant.training is not None or variant.prune is not None else variant.precision
        merged |= {key: Budget.parse(key, limit) for key, limit in metrics.default_tolerances(kinds, tolerated).items()}
    if support.require_full_coverage and support.accelerator:
        key = f"min_{metrics.ACCELERATOR_COVERAGE}"
        merged[key] = Budget.parse(key, 1.0)
    for chosen in (model_budgets, variant.budgets, override):
        merged |= {budget.key: budget for budget in chosen}
    if variant.precision == Precision.FP32:
        # A model's quantized-share budget bounds its quantized variants; an fp32 one has no such figure.
        merged = {key: budget for key, budget in merged.items() if budget.metric != metrics.QUANTIZED_SHARE}
    if variant.prune is None:
        # Likewise a model's sparsity budget bounds its pruned variants only.
        merged = {key: budget for key, budget in merged.items() if budget.metric != metrics.SPARSITY}
    return tuple(merged.values())


def training_problem(format_name: str, variant: Variant) -> str | None:
    """Why this format cannot have the variant's training-time optimizations, or None."""
    backend = formats.backend(format_name)
    if variant.training is not None and variant.training.method == "qat" and not backend.quantization_aware:
        able = [b.name for b in formats.backends() if b.quantization_aware]
        return (
            f"quantization-aware training builds {' and '.join(able)} int8 only (the fine-tuned model carries "
            f"fake-quantization ops that {format_name} does not turn into int8); list '{variant.name}' only for targets "
            f"that build {' or '.join(able)}, or build {format_name} from a post-training int8 variant"
        )
    if variant.prune is not None and variant.training is None and not backend.prunes_after_conversion:
        able = [b.name for b in formats.backends() if b.prunes_after_conversion]
        return (
            f"{format_name} weights are pruned while the model fine-tunes: add training: fine_tune to '{variant.name}' "
            f"(a recipe source with framework: tf-keras and a fine_tune function), or list it only for "
            f"{' or '.join(able)} targets, which prune after conversion"
        )
    return None
