"""Compile models.yaml and the chipset profiles into a frozen, validated BuildPlan.

No model is loaded here: this runs every time doit loads the task graph.
Every problem found is collected and reported at once, each with the file,
the YAML path, the line and what to do.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from . import layout, metrics
from .errors import SpecError
from .plan import (
    Artifact,
    Budget,
    BuildPlan,
    BundleSpec,
    Dataset,
    FormatSupport,
    InputSpec,
    Model,
    OutputSpec,
    PublishSpec,
    Source,
    TargetProfile,
)
from .repository.offer import BASIS_POINTS, Arm, Offer
from .bundle.archive import ZIP_EPOCH_MIN
from .yamlfile import YamlDocument, load_yaml
from .layout import SPEC_FILE, WORKSPACE_PROFILES

BUILTIN_PROFILES = Path(__file__).parent / "profiles"
SCHEMA_DIR = Path(__file__).parent / "schema"

SOURCE_KINDS = ("keras", "saved_model", "tflite", "onnx", "recipe")
# The formats this engine builds, and the source kinds each can be made from.
BUILDABLE_FORMATS = {
    "tflite": ("keras", "saved_model", "recipe", "tflite"),
    "onnx": ("keras", "saved_model", "recipe", "tflite", "onnx"),
    "coreml": ("keras", "saved_model", "recipe"),
}
DEFAULT_MODEL_FUNCTION = "build_model"
DEFAULT_DATA_FUNCTION = "load_data"
DEFAULT_INDEX_LIFETIME_DAYS = 30


def _basis_points(percent) -> int:
    return round(percent * 100)


def load_plan(workspace: Path, environ=None) -> BuildPlan:
    environ = os.environ if environ is None else environ
    workspace = Path(workspace)
    doc = load_yaml(workspace / SPEC_FILE, SPEC_FILE)
    problems = schema_problems(doc, "models.schema.json")
    if problems:
        raise SpecError(problems)
    compiler = _Compiler(workspace, doc, environ)
    plan = compiler.compile()
    if compiler.problems:
        raise SpecError(compiler.problems)
    return plan


# ---------------------------------------------------------------- schema


@lru_cache(maxsize=None)
def _validator(schema_name: str):
    import jsonschema
    from referencing import Registry, Resource

    resources = {
        path.name: Resource.from_contents(json.loads(path.read_text(encoding="utf-8")))
        for path in SCHEMA_DIR.glob("*.schema.json")
    }
    registry = Registry().with_resources(resources.items())
    schema = resources[schema_name].contents
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)


def schema_problems(doc: YamlDocument, schema_name: str) -> list[str]:
    """Every schema violation in the document, as one line each, in file order."""
    found = []
    for error in _validator(schema_name).iter_errors(doc.data):
        for yaml_path, message, of_key in _describe(error):
            pos = doc.position(yaml_path, of_key=of_key)
            found.append(((pos.line, pos.column), doc.problem(yaml_path, message, of_key=of_key)))
    found.sort(key=lambda item: item[0])
    return list(dict.fromkeys(message for _, message in found))


def _describe(error):
    """Turn one jsonschema error into (yaml path, message, points-at-key) triples a user can act on."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    instance = error.instance
    if "propertyNames" in error.absolute_schema_path:
        # jsonschema reports a bad key against the mapping that holds it; point at the key itself.
        what = _expected(schema.get("description")) or f"a name matching {schema.get('pattern', 'the schema')}"
        yield path + (str(instance),), f"invalid name '{instance}': expected {what}", True
        return
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        patterns = schema.get("patternProperties", {})
        for key in instance:
            if key in allowed or any(re.search(p, key) for p in patterns):
                continue
            hint = difflib.get_close_matches(key, allowed, n=1)
            advice = f"did you mean '{hint[0]}'? " if hint else ""
            yield path + (key,), f"unknown key '{key}'; {advice}allowed keys: {', '.join(allowed)}", True
        return
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield path, f"missing required key '{missing}'", True
        return
    if kind == "type":
        expected = schema.get("type")
        expected = " or ".join(map(_article, expected)) if isinstance(expected, list) else _article(expected)
        if not path and instance is None:
            yield path, f"the file is empty: it needs {', '.join(schema.get('required', ()))}", False
            return
        got = "nothing (an empty value)" if instance is None else f"{_json_type(instance)} {instance!r}"
        advice = ""
        if isinstance(instance, str) and _parses_as(instance, expected):
            advice = ": remove the quotes"
        elif schema.get("description") and path:
            advice = f" ({_expected(schema['description'])})"
        yield path, f"expected {expected}, got {got}{advice}", False
        return
    if kind == "enum":
        choices = [str(choice) for choice in schema["enum"]]
        by_lower = {choice.lower(): choice for choice in choices}
        hint = difflib.get_close_matches(str(instance).lower(), by_lower, n=1, cutoff=0.5)
        advice = f"; did you mean '{by_lower[hint[0]]}'?" if hint else ""
        yield path, f"{instance!r} is not one of: {', '.join(choices)}{advice}", False
        return
    if kind == "const":
        yield path, f"must be {schema['const']!r}, got {instance!r}", False
        return
    if kind == "pattern":
        what = _expected(schema.get("description")) or f"a value matching {schema['pattern']}"
        yield path, f"{instance!r} is not valid: expected {what}", False
        return
    if kind in ("minProperties", "minItems", "minLength"):
        what = _expected(schema.get("description"))
        yield path, "must not be empty" + (f": expected {what}" if what else ""), False
        return
    if kind == "uniqueItems":
        repeated = []
        for index, item in enumerate(instance):
            if item in instance[:index] and item not in repeated:
                repeated.append(item)
        yield path, f"lists {', '.join(map(repr, repeated))} more than once: remove the repeats", False
        return
    if kind == "oneOf" and schema.get("description"):
        branch = _container_branch(error)
        if branch:
            # A list or mapping where the one alternative of that shape is allowed: say what is wrong inside it.
            for sub in branch:
                yield from _describe(sub)
            return
        yield path, f"{instance!r} is not valid: expected {_expected(schema['description'])}", False
        return
    yield path, error.message, False


def _container_branch(error) -> list:
    """The errors of the one oneOf alternative that takes a list (or a mapping) when the value is one; else []."""
    shape = {list: "array", dict: "object"}.get(type(error.instance))
    alternatives = error.schema.get("oneOf", []) if isinstance(error.schema, dict) else []
    matching = [i for i, alt in enumerate(alternatives) if isinstance(alt, dict) and alt.get("type") == shape]
    if shape is None or len(matching) != 1:
        return []
    return [sub for sub in error.context if sub.relative_schema_path and sub.relative_schema_path[0] == matching[0]]


def _expected(description) -> str:
    """A schema description as the object of 'expected ...': first letter lower-cased, no final full stop."""
    if not description:
        return ""
    text = description[0].lower() + description[1:]
    return text[:-1] if text.endswith(".") else text


def _parses_as(text: str, expected: str) -> bool:
    """Whether a quoted YAML string would have been the expected type without its quotes."""
    try:
        if expected == "an integer":
            int(text)
        elif expected == "a number":
            float(text)
        else:
            return False
    except ValueError:
        return False
    return True


def _json_type(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _article(word) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean"}
    return names.get(word, str(word))


def _coreml_compression_problem(support: FormatSupport, precision: str, palettize) -> str | None:
    """Core ML's compressed weights need newer OS releases than a profile may target."""
    if support.format != "coreml" or not (palettize or precision in ("int8", "dynamic_int8")):
        return None
    target = support.minimum_deployment_target
    version = int(re.sub(r"\D", "", target))
    needed = 18 if palettize and precision in ("int8", "dynamic_int8") else 16
    if target.startswith("iOS") and version < needed:
        what = "int8 palettes" if needed == 18 else "compressed weights"
        return f"Core ML {what} need iOS{needed}, but the profile targets {target}: raise minimum_deployment_target or drop the compression"
    return None


def _buildable_summary() -> str:
    return "; ".join(f"{fmt} from {'/'.join(kinds)} sources" for fmt, kinds in BUILDABLE_FORMATS.items())


# ---------------------------------------------------------------- profiles


def profile_files(workspace: Path) -> dict[str, tuple[Path, str]]:
    """Every known profile: name -> (file, display name); the workspace's targets/ overrides built-ins."""
    found = {p.stem: (p, f"builtin:{p.name}") for p in sorted(BUILTIN_PROFILES.glob("*.yaml"))}
    local = workspace / WORKSPACE_PROFILES
    if local.is_dir():
        found.update({p.stem: (p, f"{WORKSPACE_PROFILES}/{p.name}") for p in sorted(local.glob("*.yaml"))})
    return found


def load_profile(path: Path, display_name: str) -> TargetProfile:
    doc = load_yaml(path, display_name)
    problems = schema_problems(doc, "target.schema.json")
    if problems:
        raise SpecError(problems)
    data = doc.data
    if data["name"] != path.stem:
        raise SpecError([doc.problem(
            ("name",),
            f"name '{data['name']}' does not match the file name '{path.name}': "
            f"set name: {path.stem}, or rename the file to {data['name']}.yaml",
        )])
    formats = {}
    for fmt, conf in data["formats"].items():
        fields = {key: tuple(value) if isinstance(value, list) else value for key, value in conf.items()}
        formats[fmt] = FormatSupport(format=fmt, **fields)
    return TargetProfile(
        name=data["name"],
        soc=data["soc"],
        platform=data["platform"],
        profile_file=display_name,
        formats=MappingProxyType(formats),
        min_os=data.get("min_os", ""),
        description=data.get("description", ""),
        chipsets=tuple(data.get("chipsets", ())),
        min_os_version=data.get("min_os_version"),
    )


# ---------------------------------------------------------------- cross-field rules


class _Compiler:
    def __init__(self, workspace: Path, doc: YamlDocument, environ):
        self.workspace = workspace
        self.doc = doc
        self.environ = environ
        self._found: list[tuple[tuple[int, int], str]] = []  # (where in models.yaml, message)
        self.available_profiles = profile_files(workspace)
        self.profiles: dict[str, TargetProfile] = {}
        self.checked_variants: set[tuple[str, str]] = set()

    @property
    def problems(self) -> list[str]:
        """Every problem found, once each, in the order of the lines of models.yaml they concern."""
        ordered = sorted(self._found, key=lambda item: item[0])
        return list(dict.fromkeys(message for _, message in ordered))

    def fail(self, yaml_path, message, *, of_key=False):
        pos = self.doc.position(yaml_path, of_key=of_key)
        self._found.append(((pos.line, pos.column), self.doc.problem(yaml_path, message, of_key=of_key)))

    def compile(self) -> BuildPlan:
        data = self.doc.data
        models = tuple(self.model(name, conf) for name, conf in data["models"].items())
        bundle = self.bundle(data["bundle"])
        return BuildPlan(
            spec_file=SPEC_FILE,
            bundle=bundle,
            models=models,
            targets=MappingProxyType(dict(sorted(self.profiles.items()))),
            publish=self.publish(data.get("publish", {}), bundle.version, [m.name for m in models]),
        )

    def publish(self, conf, version: str, models: list[str]) -> PublishSpec:
        channels = {}
        for channel, settings in (conf.get("channels") or {"stable": {}}).items():
            overrides = settings.get("models", {})
            for model in overrides:
                if model not in models:
                    self.fail(("publish", "channels", channel, "models", model), f"there is no model '{model}' in models: offer one of {', '.join(models)}", of_key=True)
            shared = {k: v for k, v in settings.items() if k != "models"}
            channel_path = ("publish", "channels", channel)
            offers = {}
            for model in models:
                override = overrides.get(model, {})

                def where(key, override=override, model=model):
                    """A setting's place in models.yaml: the model's override, or the channel's shared value."""
                    return (*channel_path, "models", model, key) if key in override else (*channel_path, key)

                offers[model] = self.offer(where, shared | override, version)
            channels[channel] = MappingProxyType(offers)
        return PublishSpec(
            repository=conf.get("repository", layout.DEFAULT_REPOSITORY),
            on_build=conf.get("on_build", False),
            expires_after_days=conf.get("expires_after_days", DEFAULT_INDEX_LIFETIME_DAYS),
            channels=MappingProxyType(channels),
        )

    def offer(self, where, settings, bundle_version: str) -> Offer:
        version = settings.get("version", bundle_version)
        arms = tuple(
            Arm(name, _basis_points(arm["weight"]), arm.get("version", version)) for name, arm in settings.get("arms", {}).items()
        )
        if arms and sum(a.basis_points for a in arms) != BASIS_POINTS:
            total = sum(a.basis_points for a in arms) / 100
            self.fail(where("arms"), f"the arms' weights add up to {total:g}, not 100: adjust them so that every device falls in one arm")
        previous = settings.get("previous")
        if previous == version:
            self.fail(where("previous"), f"previous is the offered version {version} itself: name the version devices outside the rollout get, or remove previous")
        return Offer(
            version=version,
            rollout_basis_points=_basis_points(settings.get("rollout", 100)),
            previous=previous,
            arms=arms,
            min_app_version=settings.get("min_app_version"),
        )

    def bundle(self, conf) -> BundleSpec:
        created = conf.get("created", ZIP_EPOCH_MIN)
        epoch = self.environ.get("SOURCE_DATE_EPOCH")
        if epoch is not None:
            if not epoch.isdigit():
                self._found.append(((0, 0), f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds: unset it or fix it"))
            else:
                created = max(int(epoch), ZIP_EPOCH_MIN)
        signing = conf.get("signing", {})
        release = bool(signing.get("release", False)) or self.environ.get("MODELMAKE_RELEASE", "") not in ("", "0")
        encrypt = "encryption" in conf
        encryption_key = conf.get("encryption", {}).get("key")
        if release and not signing.get("key"):
            self.fail(("bundle", "signing"), "a release build needs bundle.signing.key (env:VAR or file:path): development keys are refused; run `modelmake keygen` to make a key pair")
        if release and encrypt and not encryption_key:
            self.fail(("bundle", "encryption"), "a release build needs bundle.encryption.key (env:VAR or file:path): the development data key is refused")
        return BundleSpec(
            name=conf["name"],
            version=conf["version"],
            created=created,
            signing_key=signing.get("key"),
            release=release,
            encrypt=encrypt,
            encryption_key=encryption_key,
        )

    def existing_file(self, yaml_path, relative: str, what: str, *, directory=False) -> str:
        path = self.workspace / relative
        ok = path.is_dir() if directory else path.is_file()
        if not ok:
            kind = "directory" if directory else "file"
            self.fail(yaml_path, f"{what} {kind} '{relative}' does not exist: fix the path (it is relative to {SPEC_FILE})")
        return relative

    def source(self, path, conf) -> Source:
        kinds = [k for k in SOURCE_KINDS if k in conf]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            advice = "keep only one" if kinds else "add one"
            self.fail(path, f"a source needs exactly one of {', '.join(SOURCE_KINDS)} (found: {found}): {advice}")
            return Source(kind="invalid", path="")
        kind = kinds[0]
        if kind != "recipe":
            for key in ("function", "depends"):
                if key in conf:
                    self.fail(path + (key,), f"'{key}' applies only to recipe sources: remove it", of_key=True)
        self.existing_file(path + (kind,), conf[kind], f"{kind} source", directory=kind == "saved_model")
        depends = tuple(self.existing_file(path + ("depends", i), d, "dependency") for i, d in enumerate(conf.get("depends", ())))
        return Source(kind=kind, path=conf[kind], function=conf.get("function", DEFAULT_MODEL_FUNCTION if kind == "recipe" else ""), depends=depends)

    def dataset(self, path, role, conf) -> Dataset | None:
        if conf is None:
            return None
        has_recipe, has_file = "recipe" in conf, "file" in conf
        if has_recipe == has_file:
            advice = "keep only one" if has_recipe else "add one"
            self.fail(path, f"a data set needs exactly one of 'recipe' (with 'split') or 'file' (an .npz with arrays x and y): {advice}")
            return None
        if has_recipe and "split" not in conf:
            self.fail(path, "a recipe data set needs 'split', the name passed to the recipe's data function")
        if has_file:
            for key in ("function", "split", "depends"):
                if key in conf:
                    self.fail(path + (key,), f"'{key}' applies only to recipe data sets: remove it", of_key=True)
        if "conditions" in conf and role != "evaluation":
            self.fail(path + ("conditions",), "conditions apply to evaluation data only: move them to data -> evaluation", of_key=True)
        source_key = "recipe" if has_recipe else "file"
        self.existing_file(path + (source_key,), conf[source_key], f"{role} data")
        depends = tuple(self.existing_file(path + ("depends", i), d, "dependency") for i, d in enumerate(conf.get("depends", ())))
        return Dataset(
            role=role,
            path=conf[source_key],
            from_recipe=has_recipe,
            function=conf.get("function", DEFAULT_DATA_FUNCTION if has_recipe else ""),
            split=conf.get("split", ""),
            samples=None if conf.get("samples") is None else int(conf["samples"]),
            depends=depends,
            conditions=tuple((c, float(conf["conditions"][c])) for c in metrics.CONDITIONS if c in conf.get("conditions", {})),
        )

    def profile(self, yaml_path, name) -> TargetProfile | None:
        if name in self.profiles:
            return self.profiles[name]
        if name not in self.available_profiles:
            hint = difflib.get_close_matches(name, self.available_profiles, n=1)
            advice = f"did you mean '{hint[0]}'? " if hint else ""
            self.fail(
                yaml_path,
                f"unknown target '{name}'; {advice}known targets: {', '.join(sorted(self.available_profiles))} "
                f"(add targets/{name}.yaml to define it)",
                of_key=True,
            )
            return None
        file, display = self.available_profiles[name]
        try:
            profile = load_profile(file, display)
        except SpecError as exc:
            # Reported where models.yaml first uses the profile.
            pos = self.doc.position(yaml_path, of_key=True)
            self._found.extend(((pos.line, pos.column), problem) for problem in exc.problems)
            return None
        self.profiles[name] = profile
        return profile

    def model(self, name, conf) -> Model:
        base = ("models", name)
        source = self.source(base + ("source",), conf["source"])
        data = conf.get("data", {})
        calibration = self.dataset(base + ("data", "calibration"), "calibration", data.get("calibration"))
        evaluation = self.dataset(base + ("data", "evaluation"), "evaluation", data.get("evaluation"))
        io = conf.get("io", {})
        input_conf, output_conf = io.get("input", {}), io.get("output", {})
        labels = output_conf.get("labels")
        if labels is not None:
            self.existing_file(base + ("io", "output", "labels"), labels, "labels")
        input_spec = InputSpec(
            layout=input_conf.get("layout", "NHWC"),
            scale=str(input_conf.get("scale", "1")),
            offset=str(input_conf.get("offset", "0")),
        )
        for key in ("scale", "offset"):
            value = getattr(input_spec, key)
            if "/" in value and float(value.split("/")[1]) == 0:
                self.fail(base + ("io", "input", key), f"'{value}' divides by zero: use a non-zero denominator")
        output_spec = OutputSpec(labels=labels, top_k=int(output_conf.get("top_k", 1)))

        # A declared but invalid data set is reported on its own; judge the rest as if it were valid.
        has_evaluation = "evaluation" in data
        conditions = [c for c in metrics.CONDITIONS if c in data.get("evaluation", {}).get("conditions", {})]
        if input_spec.layout == "NC" and "blur" in conditions:
            self.fail(base + ("data", "evaluation", "conditions", "blur"), "blur needs images: io -> input -> layout is NC (no spatial axes); remove blur or set the layout", of_key=True)
        known_metrics = metrics.available_metrics(has_evaluation_data=has_evaluation, top_k=output_spec.top_k, conditions=conditions)
        budgets = self.budgets(base + ("budgets",), conf.get("budgets", {}), known_metrics)
        overrides = conf.get("budget_overrides", {})
        for target in overrides:
            if target not in conf["targets"]:
                self.fail(
                    base + ("budget_overrides", target),
                    f"'{target}' is not one of this model's targets ({', '.join(conf['targets'])}): "
                    f"add it to models -> {name} -> targets or remove this override",
                    of_key=True,
                )
        variants = conf["variants"]
        variant_budgets = {v: self.budgets(base + ("variants", v, "budgets"), vconf.get("budgets", {}), known_metrics) for v, vconf in variants.items()}

        artifacts = []
        for target_name, entry in conf["targets"].items():
            target_path = base + ("targets", target_name)
            variant_names, selection = (entry, None) if isinstance(entry, list) else (entry["prefer"], entry.get("select", "first_passing"))
            list_path = target_path if isinstance(entry, list) else target_path + ("prefer",)
            profile = self.profile(target_path, target_name)
            override = self.budgets(base + ("budget_overrides", target_name), overrides.get(target_name, {}), known_metrics)
            formats = self.formats_for(target_path, profile, source) if profile else []
            for index, variant in enumerate(variant_names):
                if variant not in variants:
                    hint = difflib.get_close_matches(variant, variants, n=1)
                    advice = f"did you mean '{hint[0]}'? " if hint else ""
                    self.fail(
                        list_path + (index,),
                        f"unknown variant '{variant}'; {advice}variants of {name}: {', '.join(variants)} "
                        f"(declare it under models -> {name} -> variants)",
                    )
                    continue
                vconf = variants[variant]
                precision = vconf.get("quantize", "fp32")
                per_channel = vconf.get("per_channel", True)
                palettize = vconf.get("palettize")
                if (name, variant) not in self.checked_variants:
                    self.checked_variants.add((name, variant))
                    self.check_variant(base, name, variant, precision, source, "calibration" in data, per_channel)
                for support in formats:
                    if precision not in support.precisions:
                        self.fail(
                            list_path + (index,),
                            f"{target_name} cannot run {precision} in {support.format} (its profile {profile.profile_file} lists "
                            f"{', '.join(support.precisions)}): remove '{variant}' from this target or pick another precision",
                        )
                        continue
                    problem = _coreml_compression_problem(support, precision, palettize)
                    if problem:
                        self.fail(list_path + (index,), f"'{variant}' cannot be built for {target_name}: {problem}")
                        continue
                    if palettize and support.format != "coreml":
                        self.fail(
                            list_path + (index,),
                            f"'{variant}' palettizes weights, which only Core ML does, but {target_name} builds {support.format}: "
                            "list this variant only for Core ML targets",
                        )
                        continue
                    merged = {}
                    if has_evaluation:
                        merged |= {k: Budget.parse(k, v) for k, v in metrics.DEFAULT_TOLERANCES[precision].items()}
                    if support.require_full_coverage and support.accelerator:
                        merged[f"min_{metrics.ACCELERATOR_COVERAGE}"] = Budget.parse(f"min_{metrics.ACCELERATOR_COVERAGE}", 1.0)
                    for chosen in (budgets, variant_budgets[variant], override):
                        merged |= {b.key: b for b in chosen}
                    artifacts.append(
                        Artifact(
                            model=name,
                            variant=variant,
                            format=support.format,
                            target=target_name,
                            precision=precision,
                            integer_io=support.integer_io and precision == "int8",
                            budgets=tuple(merged.values()),
                            per_channel=per_channel,
                            palettize=palettize,
                            selection=selection,
                            preference=index,
                        )
                    )
        return Model(
            name=name,
            source=source,
            calibration=calibration,
            evaluation=evaluation,
            input=input_spec,
            output=output_spec,
            artifacts=tuple(artifacts),
            description=conf.get("description", ""),
        )

    def check_variant(self, base, model, variant, precision, source, has_calibration: bool, per_channel: bool):
        if not per_channel and precision != "int8":
            self.fail(base + ("variants", variant, "per_channel"), f"per_channel applies to int8 variants only ('{variant}' is {precision}): remove it")
        variant_path = base + ("variants", variant, "quantize")
        if precision == "int8" and not has_calibration:
            self.fail(variant_path, f"full int8 quantization needs calibration data: add models -> {model} -> data -> calibration")
        if source.kind == "tflite" and precision != "fp32":
            self.fail(variant_path, "a tflite source is already converted and cannot be re-quantized: use a keras, saved_model or recipe source, or drop 'quantize'")

    def formats_for(self, target_path, profile: TargetProfile, source: Source) -> list[FormatSupport]:
        if source.kind == "invalid":
            # The source is already reported; judge the target on what any source could give.
            usable = [f for fmt, f in profile.formats.items() if fmt in BUILDABLE_FORMATS]
            made_from = ""
        else:
            usable = [f for fmt, f in profile.formats.items() if source.kind in BUILDABLE_FORMATS.get(fmt, ())]
            made_from = f" from this model's {source.kind} source"
        if not usable:
            listed = ", ".join(profile.formats)
            self.fail(
                target_path,
                f"modelmake cannot build any format {profile.name} runs ({listed}){made_from}; "
                f"it builds {_buildable_summary()}: remove {profile.name} from this model's targets",
                of_key=True,
            )
        return usable

    def budgets(self, path, conf, known_metrics) -> list[Budget]:
        model = path[1]  # path is models -> <model> -> budgets or budget_overrides -> <target>
        out = []
        for key, limit in conf.items():
            bound, metric = key.split("_", 1)
            if metric not in known_metrics:
                self.fail(path + (key,), self.unknown_metric(model, metric, known_metrics, key), of_key=True)
                continue
            out.append(Budget.parse(key, limit))
        return out

    def unknown_metric(self, model, metric, known_metrics, key="") -> str:
        message = f"no metric '{metric}' to budget; this model measures: {', '.join(known_metrics)}"
        top = re.fullmatch(r"top([0-9]+)", metric)
        condition = next((c for c in metrics.CONDITIONS if metric == metrics.condition_metric(c)), None)
        compared = (metrics.ACCURACY_DROP, metrics.MAX_ABS_ERROR, metrics.COSINE_SIMILARITY, metrics.TOP1_AGREEMENT)
        needs_evaluation = metric in compared or top is not None or condition is not None
        if needs_evaluation and metrics.top_k_metric(1) not in known_metrics:
            return f"{message}; {metric} is measured on evaluation data: add models -> {model} -> data -> evaluation"
        if top is not None and int(top.group(1)) > 1:
            return f"{message}; to measure {metric} set models -> {model} -> io -> output -> top_k: {int(top.group(1))}"
        if condition is not None:
            return f"{message}; to measure {metric} add {condition} to models -> {model} -> data -> evaluation -> conditions"
        if key in known_metrics:
            return f"{message}; '{key}' is itself a metric: write max_{key} or min_{key}"
        hint = difflib.get_close_matches(metric, known_metrics, n=1)
        return f"{message}; did you mean '{hint[0]}'?" if hint else message
