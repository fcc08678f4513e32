"""The cross-field rules of models.yaml: the document, with its schema's problems, compiled into a BuildPlan.

No model is loaded here: this runs every time doit loads the task graph.
Every problem found is collected and reported at once, each with the file,
the YAML path, the line and what to do; a rule is skipped only for a part of
the document the schema already found invalid.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from .. import formats, layout, metrics
from ..bundle.archive import ZIP_EPOCH_MIN
from ..errors import SpecError
from ..kinds import OutputKind, Precision
from ..layout import SPEC_FILE
from ..plan import (
    Budget,
    BuildPlan,
    BundleSpec,
    CacheSettings,
    CustomMetrics,
    Dataset,
    InputSpec,
    Model,
    OutputSpec,
    PublishSpec,
    Source,
    TargetProfile,
)
from ..preprocessing import CHANNEL_AXIS, RatioError, parse_ratio, ratio_text
from ..repository.offer import BASIS_POINTS, Arm, Offer
from ..yamlfile import YamlDocument, load_yaml
from .artifacts import INVALID_SOURCE, TargetEntry, Variant, target_artifacts
from .messages import YamlProblem
from .placement import data_keys, model_keys, regroup
from .profiles import load_profile, profile_files
from .schema import MODELS_SCHEMA, RECIPE, RECIPE_OPTIONS, schema_findings, source_kinds

DEFAULT_MODEL_FUNCTION = "build_model"
DEFAULT_DATA_FUNCTION = "load_data"
DEFAULT_METRICS_FUNCTION = "metrics"
DEFAULT_INDEX_LIFETIME_DAYS = 30

# How many dimensions an input of each layout has, batch included, and what they are.
LAYOUT_AXES = {"NHWC": "batch, height, width, channels", "NCHW": "batch, channels, height, width", "NC": "batch, values"}
FLOAT_DTYPES = ("float32", "float16")  # the dtypes an app preprocesses; other inputs are fed as they are
PREPROCESSING_KEYS = ("scale", "offset", "mean", "std")


def shown_path(yaml_path) -> str:
    """A place in models.yaml as messages name it: models -> digits -> io -> input."""
    return " -> ".join(str(part) for part in yaml_path)


@dataclasses.dataclass(frozen=True)
class DeclaredOutput:
    """An output and where models.yaml declares it, for the messages on the model's budgets."""

    spec: OutputSpec
    where: tuple


def percent_basis_points(percent) -> int:
    return round(percent * 100)


def in_hundredths(percent) -> bool:
    """Whether a percentage has at most two decimals, as YAML read it: 33.33 is 3333 basis points, 12.345 is 1234.5.

    A float is never exactly a number of hundredths (0.07 * 100 is 7.000000000000001), so it is compared within a
    margin far below one basis point and far above float rounding.
    """
    return abs(percent * 100 - round(percent * 100)) < 1e-6


def outside_workspace(relative: str) -> bool:
    """Whether a path of the spec leaves the workspace: absolute, or climbing out with '..' (symbolic links are followed)."""
    normalized = posixpath.normpath(relative.replace("\\", "/"))
    return posixpath.isabs(normalized) or normalized == ".." or normalized.startswith("../")


def _mapping(value) -> dict:
    """A part of the document that should be a mapping, or an empty one where it is not (the schema reports it)."""
    return value if isinstance(value, dict) else {}


def load_plan(workspace: Path, environ=None) -> BuildPlan:
    """The workspace's plan; SpecError with every problem in models.yaml and in the profiles it uses."""
    environ = os.environ if environ is None else environ
    workspace = Path(workspace)
    doc = load_yaml(workspace / SPEC_FILE, SPEC_FILE)
    compiler = Compiler(workspace, doc, environ, schema_findings(doc, MODELS_SCHEMA))
    plan = compiler.compile()
    if compiler.problems:
        raise SpecError(compiler.problems)
    return dataclasses.replace(plan, build_settings_sha256=build_settings_digest(doc.data))


def build_settings_digest(document: dict) -> str:
    """SHA-256 of the document without its publish and cache sections, as JSON with sorted keys and no whitespace."""
    # Nor its cache section: where outputs may be fetched from does not change what they are.
    settings = {key: value for key, value in document.items() if key not in ("publish", "cache")}
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Compiler:
    """One pass over models.yaml, loading each profile it names once and collecting every problem.

    Each problem the schema finds leaves one part of the document invalid (a variant, a data set, a target...);
    the rules that read such a part are skipped for it, so that every other problem is still found and none is
    reported only because of another.
    """

    def __init__(self, workspace: Path, doc: YamlDocument, environ, schema_problems: Sequence[YamlProblem] = ()):
        self.workspace = workspace
        self.doc = doc
        self.environ = environ
        self._found: list[tuple[tuple[int, int], str]] = []  # (where in models.yaml, message)
        # Each schema problem is reported (a misplaced key once), and leaves its part of the document invalid.
        reported, self.misplaced = regroup(doc, schema_problems)
        for problem in reported:
            self.fail(problem.path, problem.message, of_key=problem.of_key)
        self._invalid = {problem.invalid_part for problem in schema_problems}
        self.available_profiles = profile_files(workspace)
        self.profiles: dict[str, TargetProfile] = {}
        # Each model's outputs and where its custom metrics are (or would be) declared, for the messages on its budgets.
        self.declared_outputs: dict[str, tuple[DeclaredOutput, ...]] = {}
        self.metrics_paths: dict[str, tuple] = {}

    @property
    def problems(self) -> list[str]:
        """Every problem found, once each, in the order of the lines of models.yaml they concern."""
        ordered = sorted(self._found, key=lambda item: item[0])
        return list(dict.fromkeys(message for _, message in ordered))

    def fail(self, yaml_path, message, *, of_key=False):
        pos = self.doc.position(yaml_path, of_key=of_key)
        self._found.append(((pos.line, pos.column), self.doc.problem(yaml_path, message, of_key=of_key)))

    def valid(self, yaml_path) -> bool:
        """Whether no schema problem concerns this part of the document, anything in it or what holds it: its rules can read it."""
        path = tuple(yaml_path)
        return not any(part[: len(path)] == path or path[: len(part)] == part for part in self._invalid)

    def valid_itself(self, yaml_path) -> bool:
        """Whether no schema problem concerns this part itself or what holds it (it is there, of its type); what it holds may be invalid."""
        path = tuple(yaml_path)
        return not any(path[: len(part)] == part for part in self._invalid)

    def keys_valid(self, yaml_path, keys) -> bool:
        """Whether the mapping at this place is one and has no key but these: what it declares, and what not, is known."""
        path = tuple(yaml_path)
        unknown_key = any(part[: len(path)] == path and len(part) == len(path) + 1 and part[-1] not in keys for part in self._invalid)
        return self.valid_itself(path) and not unknown_key

    def compile(self) -> BuildPlan:
        data = _mapping(self.doc.data)
        models_conf = _mapping(data.get("models"))
        names = [name for name in models_conf if name not in self.misplaced]
        models = tuple(self.model(name, _mapping(models_conf[name])) for name in names)
        bundle = self.bundle(_mapping(data.get("bundle")))
        return BuildPlan(
            spec_file=SPEC_FILE,
            bundle=bundle,
            models=models,
            targets=MappingProxyType(dict(sorted(self.profiles.items()))),
            publish=self.publish(
                _mapping(data.get("publish")),
                bundle.version if self.valid(("bundle", "version")) else None,
                names if names and self.valid_itself(("models",)) else None,
            ),
            cache=self.cache(_mapping(data.get("cache"))),
        )

    def cache(self, conf) -> CacheSettings | None:
        """The ``cache:`` section (the schema has checked its keys and refused credentials in it)."""
        if not conf or not self.valid(("cache",)):
            return None
        return CacheSettings(url=str(conf["url"]), write=bool(conf.get("write", True)))

    def publish(self, conf, version: str | None, models: list[str] | None) -> PublishSpec:
        """``version`` and ``models`` are None where they are invalid (already reported): nothing is checked against them."""
        channels = {}
        channels_conf = conf.get("channels") or {"stable": {}}
        for channel, settings in _mapping(channels_conf).items():
            settings = _mapping(settings)
            overrides = _mapping(settings.get("models"))
            for model in overrides:
                if models is not None and model not in models:
                    self.fail(
                        ("publish", "channels", channel, "models", model),
                        f"there is no model '{model}' in models: offer one of {', '.join(models)}",
                        of_key=True,
                    )
            shared = {k: v for k, v in settings.items() if k != "models"}
            channel_path = ("publish", "channels", channel)
            if not self.valid(channel_path) or models is None:
                continue
            offers = {}
            for model in models:
                override = overrides.get(model, {})

                def where(key, override=override, model=model, channel_path=channel_path):
                    """A setting's place in models.yaml: the model's override, or the channel's shared value."""
                    return (*channel_path, "models", model, key) if key in override else (*channel_path, key)

                offers[model] = self.offer(where, shared | override, version)
            channels[channel] = MappingProxyType(offers)
        if "repository" in conf and self.valid(("publish", "repository")):
            self.check_inside(("publish", "repository"), conf["repository"], "repository directory")
        return PublishSpec(
            repository=conf.get("repository", layout.DEFAULT_REPOSITORY),
            on_build=conf.get("on_build", False),
            expires_after_days=conf.get("expires_after_days", DEFAULT_INDEX_LIFETIME_DAYS),
            channels=MappingProxyType(channels),
        )

    def offer(self, where, settings, bundle_version: str | None) -> Offer:
        version = settings.get("version", bundle_version)
        percentages = [(where("rollout"), settings["rollout"])] if "rollout" in settings else []
        percentages += [(where("arms") + (name, "weight"), arm["weight"]) for name, arm in settings.get("arms", {}).items()]
        for path, percent in percentages:
            if not in_hundredths(percent):
                self.fail(
                    path,
                    f"{percent!r} has more than two decimals: a share of devices is counted in hundredths of a percent; "
                    f"round it, such as to {round(percent, 2)!r}",
                )
        arms = tuple(
            Arm(name, percent_basis_points(arm["weight"]), arm.get("version", version)) for name, arm in settings.get("arms", {}).items()
        )
        if arms and sum(a.basis_points for a in arms) != BASIS_POINTS:
            total = sum(a.basis_points for a in arms) / 100
            self.fail(where("arms"), f"the arms' weights add up to {total:g}, not 100: adjust them so that every device falls in one arm")
        previous = settings.get("previous")
        if previous is not None and previous == version:
            self.fail(
                where("previous"),
                f"previous is the offered version {version} itself: name the version devices outside the rollout get, or remove previous",
            )
        return Offer(
            version=version,
            rollout_basis_points=percent_basis_points(settings.get("rollout", 100)),
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
        signing = _mapping(conf.get("signing"))
        release = bool(signing.get("release", False)) or self.environ.get("MODELMAKE_RELEASE", "") not in ("", "0")
        encrypt = "encryption" in conf
        encryption_key = _mapping(conf.get("encryption")).get("key")
        if release and not signing.get("key") and self.valid(("bundle", "signing")):
            self.fail(
                ("bundle", "signing"),
                "a release build needs bundle.signing.key (env:VAR or file:path): development keys are refused; "
                "run `modelmake keygen` to make a key pair",
            )
        if release and encrypt and not encryption_key and self.valid(("bundle", "encryption")):
            self.fail(
                ("bundle", "encryption"),
                "a release build needs bundle.encryption.key (env:VAR or file:path): the development data key is refused",
            )
        self.check_key_variable(("bundle", "signing", "key"), signing.get("key"), "keys/signing.pem")
        self.check_key_variable(("bundle", "encryption", "key"), encryption_key, "keys/data.key")
        return BundleSpec(
            name=conf.get("name", ""),
            version=conf.get("version", ""),
            created=created,
            signing_key=signing.get("key"),
            release=release,
            encrypt=encrypt,
            encryption_key=encryption_key,
        )

    def check_key_variable(self, where, reference, example_file: str) -> None:
        """An env:VARIABLE key reference names a variable that holds something; the key itself is read when it is used."""
        if not isinstance(reference, str) or not reference.startswith("env:") or not self.valid(where):
            return
        variable = reference.removeprefix("env:")
        value = self.environ.get(variable)
        if value is None:
            state = "is not set"
        elif not value.strip():
            state = "is set but empty"
        else:
            return
        self.fail(
            where,
            f"the environment variable {variable} {state}: export the key in it (in CI, from a secret), "
            f"or use a key file: key: file:{example_file} (`modelmake keygen` makes one)",
        )

    def check_inside(self, yaml_path, relative: str, what: str) -> bool:
        """Whether a path of the spec stays in the workspace; reported where it does not."""
        if not outside_workspace(relative):
            return True
        self.fail(
            yaml_path,
            f"'{relative}' is outside the workspace: the {what} must be inside it, given relative to {SPEC_FILE} "
            "(copy or link it into the workspace)",
        )
        return False

    def existing_file(self, yaml_path, relative: str, what: str, *, directory=False) -> str:
        if not self.check_inside(yaml_path, relative, f"{what} file" if not directory else f"{what} directory"):
            return relative
        path = self.workspace / relative
        ok = path.is_dir() if directory else path.is_file()
        if not ok:
            kind = "directory" if directory else "file"
            self.fail(yaml_path, f"{what} {kind} '{relative}' does not exist: fix the path (it is relative to {SPEC_FILE})")
        return relative

    def source(self, path, conf) -> Source:
        known = source_kinds()
        kinds = [k for k in known if k in conf]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            advice = "keep only one" if kinds else "add one"
            self.fail(path, f"a source needs exactly one of {', '.join(known)} (found: {found}): {advice}")
            return Source(kind=INVALID_SOURCE, path="")
        kind = kinds[0]
        if kind != RECIPE:
            for key in RECIPE_OPTIONS:
                if key in conf:
                    self.fail(path + (key,), f"'{key}' applies only to recipe sources: remove it", of_key=True)
        self.existing_file(path + (kind,), conf[kind], f"{kind} source", directory=kind == "saved_model")
        depends = tuple(self.existing_file(path + ("depends", i), d, "dependency") for i, d in enumerate(conf.get("depends", ())))
        return Source(
            kind=kind, path=conf[kind], function=conf.get("function", DEFAULT_MODEL_FUNCTION if kind == RECIPE else ""), depends=depends
        )

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
        source_path = base + ("source",)
        source = self.source(source_path, conf["source"]) if self.valid(source_path) else Source(kind=INVALID_SOURCE, path="")
        # With a key of the model misspelt, whatever it declares (data, io) may be missing only for that reason.
        model_keys_valid = self.keys_valid(base, model_keys())
        data_path = base + ("data",)
        data = _mapping(conf.get("data"))
        calibration, evaluation = (
            self.dataset(data_path + (role,), role, data.get(role)) if self.valid(data_path + (role,)) else None
            for role in ("calibration", "evaluation")
        )
        # A data set that is declared but invalid, or that may be there under a misspelt key, counts as present.
        data_known = model_keys_valid and self.keys_valid(data_path, data_keys())
        has_calibration = "calibration" in data or not data_known
        has_evaluation = "evaluation" in data or not data_known
        io_path, io_conf = base + ("io",), _mapping(conf.get("io"))
        io_valid = self.valid(io_path)
        if io_valid:
            inputs = self.inputs(io_path, io_conf)
            outputs = self.outputs(io_path, io_conf, inputs)
            custom = self.model_custom_metrics(io_path, io_conf)
        else:
            inputs, outputs, custom = (InputSpec(),), (OutputSpec(),), None
        kinds = tuple(output.kind for output in outputs)
        variants_path = base + ("variants",)
        variants_conf = _mapping(conf.get("variants"))
        invalid_variants = [v for v in variants_conf if not self.valid(variants_path + (v,))]
        quantized = bool(invalid_variants) or any(
            v.get("quantize", Precision.FP32) != Precision.FP32 for v in variants_conf.values() if isinstance(v, dict)
        )
        # Which metrics the budgets may name, or None when an invalid part decides it: then budgets name any metric.
        known_metrics = (
            self.measured_metrics(base, data, inputs, outputs, custom, quantized=quantized, has_evaluation=has_evaluation)
            if io_valid and model_keys_valid and self.valid(data_path + ("evaluation", "conditions"))
            else None
        )
        model_budgets = self.budgets(base + ("budgets",), conf.get("budgets", {}), known_metrics)
        overrides = _mapping(conf.get("budget_overrides"))
        targets_path = base + ("targets",)
        targets_conf = conf.get("targets") if self.valid_itself(targets_path) else None
        if targets_conf is not None:
            self.check_overrides(base, name, overrides, targets_conf)
            if io_valid:
                self.check_target_shapes(base, inputs, list(targets_conf))
        variants = {
            v: self.variant(base, v, vconf, known_metrics) for v, vconf in variants_conf.items() if v not in invalid_variants
        }
        entries = []
        for target, entry_conf in (targets_conf or {}).items():
            entry = TargetEntry.parse(self.fail, base, target, entry_conf) if self.valid(targets_path + (target,)) else None
            if entry is not None:
                entries.append(entry)
        listed = dict.fromkeys(v for entry in entries for v in entry.variants if v in variants)
        # A state pair without inputs by name is refused on its own; it does not make the model stateful.
        stateful = any(o.state for o in outputs) and all(i.name for i in inputs)
        for variant in listed:
            self.check_variant(base, name, variants[variant], source, has_calibration=has_calibration, stateful=stateful)
        found = []
        for entry in entries:
            profile = self.profile(entry.path, entry.name)
            override = self.budgets(base + ("budget_overrides", entry.name), overrides.get(entry.name, {}), known_metrics)
            found += target_artifacts(
                self.fail,
                model=name,
                entry=entry,
                profile=profile,
                source=source,
                variants=variants,
                # Variants already reported: the lists that name them are not judged on them.
                unchecked_variants=invalid_variants if self.valid_itself(variants_path) else None,
                model_budgets=model_budgets,
                override=override,
                # A declared but invalid data set is reported on its own; judge the rest as if it were valid.
                has_evaluation=has_evaluation,
                kinds=kinds,
            )
        return Model(
            name=name,
            source=source,
            calibration=calibration,
            evaluation=evaluation,
            inputs=inputs,
            outputs=outputs,
            artifacts=tuple(found),
            description=conf.get("description", ""),
            metrics=custom,
            timeout_minutes=conf.get("timeout_minutes"),
        )

    def one_or_named(self, io_path, conf, single: str, named: str) -> None:
        """io -> input or io -> inputs (output or outputs), never both."""
        if single in conf and named in conf:
            self.fail(
                io_path + (named,),
                f"io -> {single} and io -> {named} cannot both be given: declare a model's only {single} under {single}, "
                f"or every {single} of the model by its name under {named}",
                of_key=True,
            )

    # --- inputs ---------------------------------------------------------------------------

    def inputs(self, io_path, conf) -> tuple[InputSpec, ...]:
        """The model's inputs: its only one (name "") under io -> input, or each by its name under io -> inputs."""
        self.one_or_named(io_path, conf, "input", "inputs")
        if "inputs" in conf:
            return tuple(self.input(io_path + ("inputs", name), spec, name) for name, spec in conf["inputs"].items())
        return (self.input(io_path + ("input",), conf.get("input", {}), ""),)

    def input(self, where, conf, name: str) -> InputSpec:
        shape = conf.get("shape")
        input_spec = InputSpec(
            name=name,
            layout=conf.get("layout", "NHWC"),
            scale=ratio_text(conf.get("scale", "1")),
            offset=ratio_text(conf.get("offset", "0")),
            dtype=conf.get("dtype"),
            shape=tuple(int(dimension) for dimension in shape) if isinstance(shape, list) else None,
            target_shapes=tuple(
                (target, tuple(int(d) for d in dims)) for target, dims in (shape.items() if isinstance(shape, dict) else ())
            ),
        )
        for key in ("scale", "offset"):
            self.check_ratio(where + (key,), getattr(input_spec, key))
        if "mean" in conf or "std" in conf:
            input_spec = self.per_channel(where, conf, input_spec)
        self.check_dtype(where, conf, input_spec)
        self.check_shape(where, conf, input_spec)
        return input_spec

    def check_dtype(self, where, conf, input_spec: InputSpec) -> None:
        """Integer and bool inputs (a sample rate, token ids) are fed as they are: preprocessing would never apply."""
        if input_spec.dtype is None or input_spec.dtype in FLOAT_DTYPES:
            return
        for key in PREPROCESSING_KEYS:
            if key in conf:
                self.fail(
                    where + (key,),
                    f"{key} applies to float inputs, and this input's dtype is {input_spec.dtype}, which the app feeds as it is: "
                    f"remove {key}, or set dtype to float32",
                    of_key=True,
                )

    def check_shape(self, where, conf, input_spec: InputSpec) -> None:
        """Each fixed shape fits the layout where the spec gives one (or relies on it, for mean/std), and has their channels."""
        if input_spec.shape is not None:
            self.check_one_shape(where, ("shape",), conf, input_spec, input_spec.shape)
        for target, shape in input_spec.target_shapes:
            self.check_one_shape(where, ("shape", target), conf, input_spec, shape)

    def check_target_shapes(self, base, inputs: tuple[InputSpec, ...], targets) -> None:
        """A shape given per target names a target the model builds for."""
        for spec in inputs:
            for target, _ in spec.target_shapes:
                if target not in targets:
                    where = base + ("io", "inputs", spec.name) if spec.name else base + ("io", "input")
                    self.fail(
                        where + ("shape", target),
                        f"'{target}' is not a target of this model (its targets: {', '.join(targets)}): "
                        "name one of them, or give one shape for every target as a list",
                        of_key=True,
                    )

    def check_one_shape(self, where, key: tuple[str, ...], conf, input_spec: InputSpec, shape: tuple[int, ...]) -> None:
        """``where`` is the input's path in the spec and ``key`` the shape's under it."""
        if not ("layout" in conf or input_spec.mean):
            return
        axes = LAYOUT_AXES[input_spec.layout]
        rank = len(axes.split(", "))
        if len(shape) != rank:
            self.fail(
                where + key,
                f"{list(shape)} has {len(shape)} dimensions and the layout {input_spec.layout} has {rank} ({axes}): "
                f"give every dimension, batch first, or set {shown_path(where[2:] + ('layout',))} to the input's",
            )
            return
        if input_spec.mean and input_spec.layout in CHANNEL_AXIS:
            channels = shape[CHANNEL_AXIS[input_spec.layout]]
            given = "mean" if "mean" in conf else "std"
            if len(conf[given]) != channels:
                self.fail(
                    where + (given,),
                    f"{given} has {len(conf[given])} values and the shape {list(shape)} has {channels} channels "
                    f"(layout {input_spec.layout}): give one value per channel",
                )

    # --- outputs --------------------------------------------------------------------------

    def outputs(self, io_path, conf, inputs: tuple[InputSpec, ...]) -> tuple[OutputSpec, ...]:
        """The model's outputs: its only one (name "") under io -> output, or each by its name under io -> outputs."""
        self.one_or_named(io_path, conf, "output", "outputs")
        if "outputs" in conf:
            declared = tuple(
                DeclaredOutput(self.output(io_path + ("outputs", name), spec, name), io_path + ("outputs", name))
                for name, spec in conf["outputs"].items()
            )
        else:
            declared = (DeclaredOutput(self.output(io_path + ("output",), conf.get("output", {}), ""), io_path + ("output",)),)
        self.declared_outputs[io_path[1]] = declared
        self.check_states(io_path, conf, declared, inputs)
        return tuple(output.spec for output in declared)

    def output(self, where, conf, name: str) -> OutputSpec:
        """The output's kind and the keys only some kinds take; a state output is a tensor unless it says otherwise."""
        state = conf.get("state")
        kind = OutputKind(conf.get("kind", OutputKind.TENSOR if state else OutputKind.CLASSES))
        if "top_k" in conf and kind is not OutputKind.CLASSES:
            self.fail(where + ("top_k",), f"top_k applies to classes outputs only and this output's kind is {kind}: remove it", of_key=True)
        if "threshold" in conf and kind is not OutputKind.MASK:
            self.fail(
                where + ("threshold",),
                f"threshold applies to mask outputs only (it cuts a probability map into a mask) and this output's kind is {kind}: "
                "remove it",
                of_key=True,
            )
        if "labels" in conf:
            self.existing_file(where + ("labels",), conf["labels"], "labels")
            if not kind.has_labels:
                self.fail(
                    where + ("labels",),
                    f"this output's kind is {kind}, which has no classes to name: remove labels, or set kind to classes or mask",
                    of_key=True,
                )
        return OutputSpec(
            name=name,
            labels=conf.get("labels"),
            top_k=int(conf.get("top_k", 1)),
            kind=kind,
            threshold=float(conf.get("threshold", metrics.DEFAULT_THRESHOLD)),
            state=state,
        )

    def check_states(self, io_path, conf, declared: tuple[DeclaredOutput, ...], inputs: tuple[InputSpec, ...]) -> None:
        """Each state pair names a declared input, fed by one output, which is a tensor carried as it is."""
        names = [spec.name for spec in inputs if spec.name]
        fed_by: dict[str, str] = {}
        for output in declared:
            state, where = output.spec.state, output.where
            if state is None:
                continue
            if state not in names:
                self.fail(where + ("state",), self.unknown_state(state, names))
                continue
            if output.spec.kind is not OutputKind.TENSOR:
                self.fail(
                    where + ("kind",),
                    f"this output feeds input '{state}' at the next step, which carries it as it is: its kind is tensor "
                    f"(the default for an output with state), not {output.spec.kind}: remove kind or set it to tensor",
                )
            if state in fed_by:
                self.fail(
                    where + ("state",),
                    f"outputs {fed_by[state]} and {output.spec.name} both feed input '{state}': give each state input one output",
                )
                continue
            fed_by[state] = output.spec.name
            state_conf = conf["inputs"][state]
            for key in PREPROCESSING_KEYS:
                if key in state_conf:
                    self.fail(
                        io_path + ("inputs", state, key),
                        f"{key} does not apply to a state input: output {output.spec.name} feeds '{state}' its values as they are "
                        "at the next step: remove it",
                        of_key=True,
                    )

    @staticmethod
    def unknown_state(state: str, names: list[str]) -> str:
        if not names:
            return (
                f"state names input '{state}', and io declares no inputs by name: declare every input of the model under "
                f"io -> inputs, including {state}"
            )
        hint = difflib.get_close_matches(state, names, n=1)
        advice = f"did you mean '{hint[0]}'? " if hint else ""
        return (
            f"state names input '{state}', which is not declared under io -> inputs ({', '.join(names)}): {advice}"
            "name the input this output feeds at the next step"
        )

    # --- custom metrics -------------------------------------------------------------------

    def model_custom_metrics(self, io_path, conf) -> CustomMetrics | None:
        """io -> output -> metrics (the function gets the only output's array) or io -> metrics (every output by name)."""
        output_metrics = None if "outputs" in conf else conf.get("output", {}).get("metrics")
        named = "outputs" in conf or "metrics" in conf
        self.metrics_paths[io_path[1]] = io_path + ("metrics",) if named else io_path + ("output", "metrics")
        if "metrics" in conf:
            if output_metrics is not None:
                self.fail(
                    io_path + ("metrics",),
                    "custom metrics are declared twice: keep io -> metrics (the function receives every output by name) "
                    "or io -> output -> metrics (it receives the output's array), not both",
                    of_key=True,
                )
            return self.custom_metrics(io_path + ("metrics",), conf["metrics"], by_name=True)
        if output_metrics is not None:
            return self.custom_metrics(io_path + ("output", "metrics"), output_metrics, by_name=False)
        return None

    def custom_metrics(self, where, conf, *, by_name: bool) -> CustomMetrics:
        """A recipe's figures: the file must exist and its names must not shadow a metric modelmake measures itself."""
        self.existing_file(where + ("recipe",), conf["recipe"], "metrics recipe")
        depends = tuple(self.existing_file(where + ("depends", i), d, "dependency") for i, d in enumerate(conf.get("depends", ())))
        for index, name in enumerate(conf["names"]):
            if metrics.builtin_metric(name):
                self.fail(
                    where + ("names", index),
                    f"'{name}' is a name modelmake gives to a figure of its own: give the recipe's figure another name "
                    f"(for example {conf.get('function', DEFAULT_METRICS_FUNCTION)}_{name})",
                )
        return CustomMetrics(
            recipe=conf["recipe"],
            function=conf.get("function", DEFAULT_METRICS_FUNCTION),
            names=tuple(conf["names"]),
            depends=depends,
            by_name=by_name,
        )

    def check_ratio(self, yaml_path, text: str) -> bool:
        try:
            parse_ratio(text)
        except RatioError as reason:
            self.fail(yaml_path, f"'{text}' {reason}")
            return False
        return True

    def per_channel(self, where, conf, input_spec: InputSpec) -> InputSpec:
        """mean/std in place of scale/offset; either alone leaves the other at no change (mean 0, std 1)."""
        given = [key for key in ("mean", "std") if key in conf]
        both = " and ".join(given)
        replace, apply = ("replace", "apply") if len(given) == 2 else ("replaces", "applies")
        for key in ("scale", "offset"):
            if key in conf:
                self.fail(
                    where + (key,),
                    f"cannot be combined with {both}, which {replace} scale and offset: give either scale and offset or mean and std",
                    of_key=True,
                )
        if input_spec.layout not in CHANNEL_AXIS:
            self.fail(
                where + (given[0],),
                f"{both} {apply} per channel, and the layout {input_spec.layout} has no channel axis: "
                f"set {shown_path(where[2:] + ('layout',))} to {' or '.join(CHANNEL_AXIS)}, or use scale and offset",
                of_key=True,
            )
        mean = [ratio_text(value) for value in conf.get("mean", ())]
        std = [ratio_text(value) for value in conf.get("std", ())]
        if mean and std and len(mean) != len(std):
            self.fail(
                where + ("std",),
                f"std has {len(std)} values and mean has {len(mean)}: give both one value per channel of the model input",
            )
        for index, value in enumerate(mean):
            self.check_ratio(where + ("mean", index), value)
        for index, value in enumerate(std):
            if self.check_ratio(where + ("std", index), value) and parse_ratio(value) == 0:
                self.fail(where + ("std", index), f"'{value}' divides by zero (each channel is divided by its std): use a non-zero value")
        return dataclasses.replace(
            input_spec,
            mean=tuple(mean or ["0"] * len(std)),
            std=tuple(std or ["1"] * len(mean)),
        )

    # --- metrics --------------------------------------------------------------------------

    def measured_metrics(
        self,
        base,
        data,
        inputs: tuple[InputSpec, ...],
        outputs: tuple[OutputSpec, ...],
        custom: CustomMetrics | None,
        *,
        quantized: bool,
        has_evaluation: bool,
    ) -> list[str]:
        """The metrics the model's artifacts will have, which its budgets may name.

        A model with several outputs has the union of their figures; budgets bound the worst over the outputs
        that measure each (metrics.model_figures).
        """
        conditions = self.conditions(base, data, inputs, outputs)
        if custom and not has_evaluation:
            self.fail(
                self.metrics_paths[base[1]],
                f"custom metrics are measured on evaluation data and {base[1]} has none: "
                f"add models -> {base[1]} -> data -> evaluation, or remove metrics",
                of_key=True,
            )
        return metrics.available_metrics(
            has_evaluation_data=has_evaluation,
            top_k=[output.top_k for output in outputs if output.kind is OutputKind.CLASSES] or 1,
            conditions=conditions,
            quantized=quantized,
            kind=[output.kind for output in outputs],
            custom=custom.names if custom else (),
        )

    def conditions(self, base, data, inputs: tuple[InputSpec, ...], outputs: tuple[OutputSpec, ...]) -> list[str]:
        """The evaluation's conditions, where they can apply: images to perturb, labels to score, no stream to break."""
        conditions = [c for c in metrics.CONDITIONS if c in _mapping(_mapping(data.get("evaluation")).get("conditions"))]
        where = base + ("data", "evaluation", "conditions")
        if not conditions:
            return []
        stateful = next((output for output in outputs if output.state), None)
        if stateful is not None:
            self.fail(
                where,
                f"conditions perturb images, and {base[1]} runs over streams (output {stateful.name} feeds input {stateful.state} "
                "at the next step), where they would break what each step carries to the next: remove conditions",
                of_key=True,
            )
            return []
        if "blur" in conditions:
            for spec in inputs:
                if spec.layout == "NC":
                    layout_path = shown_path(("io", "inputs", spec.name, "layout") if spec.name else ("io", "input", "layout"))
                    self.fail(
                        where + ("blur",),
                        f"blur needs images: {layout_path} is NC (no spatial axes); remove blur or set the layout",
                        of_key=True,
                    )
        if not any(output.kind.has_labels for output in outputs):
            if len(outputs) == 1:
                has_none = f"this model's output kind {outputs[0].kind} has none"
            else:
                has_none = f"none of this model's outputs has any ({', '.join(f'{o.name}: {o.kind}' for o in outputs)})"
            self.fail(
                where,
                f"conditions measure accuracy against labels, and {has_none}: "
                "remove conditions (parity with the source model is measured without them)",
                of_key=True,
            )
            return []
        return conditions

    def check_overrides(self, base, model, overrides, targets) -> None:
        for target in overrides:
            if target not in targets:
                self.fail(
                    base + ("budget_overrides", target),
                    f"'{target}' is not one of this model's targets ({', '.join(targets)}): "
                    f"add it to models -> {model} -> targets or remove this override",
                    of_key=True,
                )

    def variant(self, base, name, conf, known_metrics: list[str] | None) -> Variant:
        precision = Precision(conf.get("quantize", Precision.FP32))
        if precision == Precision.FP32 and known_metrics is not None:
            known_metrics = [m for m in known_metrics if m != metrics.QUANTIZED_SHARE]
        return Variant(
            name=name,
            precision=precision,
            per_channel=conf.get("per_channel", True),
            palettize=conf.get("palettize"),
            budgets=tuple(self.budgets(base + ("variants", name, "budgets"), conf.get("budgets", {}), known_metrics)),
        )

    def check_variant(self, base, model, variant: Variant, source: Source, *, has_calibration: bool, stateful: bool = False) -> None:
        """The rules on a variant itself, checked once for each variant some target lists."""
        precision = variant.precision
        if not variant.per_channel and precision is not Precision.INT8:
            self.fail(
                base + ("variants", variant.name, "per_channel"),
                f"per_channel applies to int8 variants only ('{variant.name}' is {precision}): remove it",
            )
        variant_path = base + ("variants", variant.name, "quantize")
        if precision is Precision.INT8 and stateful:
            # Calibrating activations needs the states a stream produces, step after step; modelmake's calibration
            # feeds samples one by one.  Dynamic int8 quantizes activations at run time and needs no calibration.
            self.fail(
                variant_path,
                f"full int8 needs calibration over streams, which modelmake does not do for a stateful model ({model} feeds "
                "an output back as state): use dynamic_int8, or fp16",
            )
        elif precision is Precision.INT8 and not has_calibration:
            self.fail(variant_path, f"full int8 quantization needs calibration data: add models -> {model} -> data -> calibration")
        foreign = formats.for_source_kind(source.kind)
        if foreign is not None and not foreign.quantizes_own_files and precision is not Precision.FP32:
            self.fail(
                variant_path,
                f"a {source.kind} source is already converted and cannot be re-quantized: "
                "use a keras, saved_model or recipe source, or drop 'quantize'",
            )

    def budgets(self, path, conf, known_metrics: list[str] | None) -> list[Budget]:
        """Each valid budget; one on a metric the model does not measure is reported, unless known_metrics is None (not known)."""
        model = path[1]  # path is models -> <model> -> budgets or budget_overrides -> <target>
        out = []
        for key, limit in _mapping(conf).items():
            if not self.valid(path + (key,)):
                continue
            metric = key.split("_", 1)[1]
            if known_metrics is not None and metric not in known_metrics:
                self.fail(path + (key,), self.unknown_metric(model, metric, known_metrics, key, path=path), of_key=True)
                continue
            if self.limit_in_range(path + (key,), key, metric, limit):
                out.append(Budget.parse(key, limit))
        return out

    def limit_in_range(self, where, key: str, metric: str, limit) -> bool:
        """A budget's limit is a value its metric can take: refused here, not when the first artifact is measured."""
        bounds = metrics.metric_range(metric)
        if bounds is None or bounds[0] <= limit <= bounds[1]:
            return True
        low, high = bounds
        if math.isinf(high):
            range_text = f"{metric} is never below {low:g}: give a limit of {low:g} or more"
        elif (low, high) == (0.0, 1.0):
            range_text = f"{metric} is a fraction from 0 to 1: write 0.05 for 5 %"
        else:
            range_text = f"{metric} lies between {low:g} and {high:g}: give a limit in that range"
        self.fail(where, f"{key} is {limit!r}, out of range: {range_text}")
        return False

    def unknown_metric(self, model, metric, known_metrics, key="", *, path=()) -> str:
        message = f"no metric '{metric}' to budget; this model measures: {', '.join(known_metrics)}"
        declared = self.declared_outputs.get(model) or (DeclaredOutput(OutputSpec(), ("models", model, "io", "output")),)
        kinds = {output.spec.kind for output in declared}
        top = re.fullmatch(r"top([0-9]+)", metric)
        condition = next((c for c in metrics.CONDITIONS for kind in kinds if metric == metrics.condition_metric(c, kind)), None)
        # Which kinds measure it with evaluation data: a metric of another kind is refused for that reason.
        measured_by = [
            other
            for other in OutputKind
            if metric in metrics.parity_metrics(other) + metrics.labelled_metrics(other, conditions=metrics.CONDITIONS)
            or (other is OutputKind.CLASSES and top is not None)
        ]
        if measured_by and not kinds & set(measured_by):
            measured = f"{metric} is measured for {' and '.join(measured_by)} outputs"
            if len(declared) == 1:
                (output,) = declared
                return (
                    f"{message}; {measured} and this model's output is {output.spec.kind} "
                    f"({shown_path(output.where + ('kind',))}): bound one of the metrics it measures"
                )
            described = ", ".join(f"{output.spec.name} ({output.spec.kind})" for output in declared)
            return (
                f"{message}; {measured} and this model's outputs are {described} "
                f"(models -> {model} -> io -> outputs): bound one of the metrics they measure"
            )
        needs_evaluation = bool(measured_by)
        if needs_evaluation and metrics.COSINE_SIMILARITY not in known_metrics:
            return f"{message}; {metric} is measured on evaluation data: add models -> {model} -> data -> evaluation"
        if top is not None and int(top.group(1)) > 1:
            classes = next(output for output in declared if output.spec.kind is OutputKind.CLASSES)
            return f"{message}; to measure {metric} set {shown_path(classes.where + ('top_k',))}: {int(top.group(1))}"
        if condition is not None:
            return f"{message}; to measure {metric} add {condition} to models -> {model} -> data -> evaluation -> conditions"
        if metric == metrics.QUANTIZED_SHARE:
            where = f"variant '{path[3]}' is fp32" if len(path) > 3 and path[2] == "variants" else f"no variant of {model} is quantized"
            return f"{message}; {metric} applies to quantized variants only and {where}: remove {key} or set quantize"
        if key in known_metrics:
            return f"{message}; '{key}' is itself a metric: write max_{key} or min_{key}"
        hint = difflib.get_close_matches(metric, known_metrics, n=1)
        if hint:
            return f"{message}; did you mean '{hint[0]}'?"
        metrics_path = self.metrics_paths.get(model, ("models", model, "io", "output", "metrics"))
        return f"{message}; to bound a figure of your own, name it in {shown_path(metrics_path + ('names',))}"
