"""Small modelmake workspaces and real `doit` runs in subprocesses."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "test-bundle"
VERSION = "0.3.0"

# Every artifact the spec below asks for, as it appears in task names.
DIGITS_ARTIFACTS = (
    "digits.fp32.tflite@pixel-8",
    "digits.fp16.tflite@pixel-8",
    "digits.int8.tflite@pixel-8",
    "digits.fp32.tflite@android-arm64-cpu",
    "digits.int8.tflite@android-arm64-cpu",
)
GLYPHS_ARTIFACTS = ("glyphs.fp32.tflite@android-arm64-cpu",)
ARTIFACTS = DIGITS_ARTIFACTS + GLYPHS_ARTIFACTS


def model_tasks(model: str) -> set[str]:
    """Every task that builds something of one model of the spec below."""
    artifacts = [a for a in ARTIFACTS if a.startswith(f"{model}.")]
    datasets = {"digits": ("calibration", "evaluation"), "glyphs": ("evaluation",)}[model]
    return (
        {f"source:{model}", f"reference:{model}"}
        | {f"data:{model}.{role}" for role in datasets}
        | {f"{kind}:{a}" for kind in ("convert", "evaluate") for a in artifacts}
    )


BUNDLE_TASKS = {f"package:{BUNDLE}", f"report:{BUNDLE}"}
ALL_TASKS = model_tasks("digits") | model_tasks("glyphs") | BUNDLE_TASKS

MODELS_YAML = f"""\
format: 1
bundle:
  name: {BUNDLE}
  version: "{VERSION}"
  signing: {{key: "file:keys/signing.pem"}}

models:
  digits:
    description: A dense network for scikit-learn's 8x8 digits
    source: {{recipe: recipes/digits.py}}
    data:
      calibration: {{recipe: recipes/digits.py, split: calibration}}
      evaluation: {{recipe: recipes/digits.py, split: test}}
    io:
      input: {{layout: NHWC, scale: 1/16}}
      output: {{labels: recipes/labels.txt, top_k: 3}}
    variants:
      fp32: {{}}
      fp16: {{quantize: fp16}}
      int8: {{quantize: int8}}
    targets:
      pixel-8: [fp32, fp16, int8]
      android-arm64-cpu: [fp32, int8]
    budgets: {{max_size_kb: 64, max_accuracy_drop: 0.05}}

  glyphs:
    description: A linear classifier for the same digits, flattened to 64 values
    source: {{recipe: recipes/glyphs.py}}
    data:
      evaluation: {{recipe: recipes/glyphs.py, split: test}}
    io:
      input: {{layout: NC, scale: 1/16}}
    variants:
      fp32: {{}}
    targets:
      android-arm64-cpu: [fp32]
"""

# The workspace's own chipset profiles (targets/ overrides the built-in ones): they pin
# the formats built here to TFLite, whatever formats the built-in profiles add.
TARGET_PROFILES = {
    "pixel-8": """\
name: pixel-8
description: Google Pixel 8, TFLite only
soc: Google Tensor G3
platform: android
min_os: Android 14 (API 34)
formats:
  tflite:
    delegates: [xnnpack, gpu, nnapi]
    precisions: [fp32, fp16, dynamic_int8, int8]
""",
    "android-arm64-cpu": """\
name: android-arm64-cpu
description: Any arm64-v8a Android phone, CPU only, TFLite only
soc: generic arm64-v8a
platform: android
min_os: Android 8.1 (API 27)
formats:
  tflite:
    delegates: [xnnpack]
    precisions: [fp32, dynamic_int8, int8]
""",
}

# Modules that a build step may import; loading the task graph must import none of them.
# numpy too: importing it alone costs a no-op build about as much as the rest of graph loading.
HEAVY_MODULES = ("numpy", "tensorflow", "keras", "ai_edge_litert", "sklearn", "matplotlib", "tf2onnx", "onnxruntime", "coremltools")

DOIT_IN_PROCESS = textwrap.dedent(
    f"""\
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain
    import dodo
    code = DoitMain(ModuleTaskLoader(dodo)).run(sys.argv[1:])
    sys.stdout.flush()
    print("IMPORTED:" + json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))
    sys.exit(code)
    """
)

# What TensorFlow, absl, Keras and tqdm print; none of it belongs on the console.
NOISE = [
    re.compile(r"WARNING: All log messages before absl"),
    re.compile(r"^[IWEF]\d{4} ", re.M),  # absl / glog prefixes such as I0000 and W0000
    re.compile(r"\b(oneDNN|cpu_feature_guard|TF_ENABLE_ONEDNN_OPTS|XNNPACK delegate|tensorflow/)"),
    re.compile(r"\d+%\|"),  # tqdm bars
    re.compile(r"\d+/\d+ \[[=>.]+\]"),  # Keras progress bars
]

TASK_LINE = re.compile(r"^(\.  |-- )(\S+)$")  # doit: `.  name` ran, `-- name` up to date


def subprocess_env() -> dict:
    """The environment of every build: nothing from the caller that quiets TensorFlow or changes the build."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "MODELMAKE_", "ABSL_"))}
    env.pop("SOURCE_DATE_EPOCH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class DoitRun:
    args: tuple
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def executed(self) -> set[str]:
        """Tasks doit ran (`.  name`)."""
        return {m.group(2) for m in map(TASK_LINE.match, self.stdout.splitlines()) if m and m.group(1) == ".  "}

    @property
    def up_to_date(self) -> set[str]:
        """Tasks doit skipped as up to date (`-- name`)."""
        return {m.group(2) for m in map(TASK_LINE.match, self.stdout.splitlines()) if m and m.group(1) == "-- "}

    def describe(self) -> str:
        return f"doit {' '.join(self.args)} exited {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Workspace({self.root})"

    @property
    def build(self) -> Path:
        return self.root / "build"

    def doit(
        self, *args: str, ok: bool | None = True, timeout: float = 900, env: dict | None = None, umask: int | None = None
    ) -> DoitRun:
        """Run `python -m doit ARGS` in the workspace; ok=True/False asserts success/failure, None checks nothing.

        ``env`` adds variables to subprocess_env() (which drops the caller's MODELMAKE_* and SOURCE_DATE_EPOCH);
        ``umask`` runs doit under that umask.
        """
        command = [sys.executable, "-m", "doit", *args]
        if umask is not None:
            command = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', *command]
        return self._run(command, args, ok, timeout, env)

    def doit_in_process(self, *args: str, ok: bool | None = True) -> tuple[DoitRun, list[str]]:
        """Run doit inside one Python process and report which heavy modules it imported."""
        run = self._run([sys.executable, "-c", DOIT_IN_PROCESS, *args], args, ok, 900)
        lines = run.stdout.splitlines()
        assert lines and lines[-1].startswith("IMPORTED:"), run.describe()
        imported = json.loads(lines[-1][len("IMPORTED:"):])
        run.stdout = "\n".join(lines[:-1]) + "\n"
        return run, imported

    def _run(self, command, args, ok, timeout, env: dict | None = None) -> DoitRun:
        result = subprocess.run(
            command, cwd=self.root, env=subprocess_env() | (env or {}), capture_output=True, text=True, timeout=timeout
        )
        run = DoitRun(tuple(args), result.returncode, result.stdout, result.stderr)
        if ok is True:
            assert run.returncode == 0, run.describe()
        elif ok is False:
            assert run.returncode != 0, run.describe()
        return run

    def spec(self) -> str:
        return (self.root / "models.yaml").read_text(encoding="utf-8")

    def edit_spec(self, old: str, new: str) -> None:
        text = self.spec()
        assert text.count(old) == 1, f"{old!r} is not in models.yaml exactly once"
        (self.root / "models.yaml").write_text(text.replace(old, new), encoding="utf-8")

    def add_model(self, yaml_text: str) -> None:
        """Append a model to the spec (yaml_text is the model's block, indented as under `models:`)."""
        with open(self.root / "models.yaml", "a", encoding="utf-8") as spec:
            spec.write("\n" + textwrap.indent(textwrap.dedent(yaml_text), "  "))

    def write(self, relative: str, text: str | bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def bundle_bytes(self) -> dict[str, bytes]:
        """Every file under build/bundles/ (the versioned directory and any archives beside it), by relative path."""
        root = self.build / "bundles"
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    def outputs(self, *, logs: bool = False) -> dict[str, str]:
        """sha256 of every file under build/ except doit's own state (and the logs, unless asked)."""
        found = {}
        for path in sorted(self.build.rglob("*")):
            relative = path.relative_to(self.build).as_posix()
            # doit's state and modelmake's task-graph cache record the build; they are not its outputs.
            if not path.is_file() or relative.startswith((".doit.db", ".modelmake/")):
                continue
            if relative.startswith("logs/") and not logs:
                continue
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    def leftovers(self) -> list[str]:
        """Temporary files or directories of interrupted writes under build/, outside doit's state."""
        return sorted(
            p.relative_to(self.build).as_posix()
            for p in self.build.rglob("*")
            if not p.name.startswith(".doit.db") and (p.name.endswith(".partial") or (p.name.startswith(".") and p.name.endswith(".old")))
        )


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path, with the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_workspace(source: Path, destination: Path) -> Workspace:
    """A copy of a workspace, timestamps included, so that a built copy is as up to date as its original."""
    shutil.copytree(source, destination, symlinks=True)
    return Workspace(destination)


def write_signing_key(path: Path, pem: bytes | None = None) -> None:
    """Write ``pem`` (a new P-256 key when None) as a private key file only its owner reads."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if pem is None:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    path.chmod(0o600)


def modelmake(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m modelmake.cli ARGS` in ``cwd``, with the build environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "modelmake.cli", *map(str, args)],
        cwd=cwd, env=subprocess_env() | (env or {}), capture_output=True, text=True, timeout=300,
    )


@dataclass
class BuiltWorkspace:
    workspace: Workspace
    first_build: DoitRun  # the output of the build from scratch
    bundle: dict[str, bytes]


def tflite_cpu_profile(*precisions: str) -> str:
    """A workspace's own android-arm64-cpu profile: TFLite only, at the given precisions (the shipped one adds ONNX)."""
    return (
        "name: android-arm64-cpu\nsoc: generic arm64\nplatform: android\nformats:\n"
        f"  tflite: {{precisions: [{', '.join(precisions)}]}}\n"
    )
