"""The interface every format (TFLite, ONNX, Core ML, ...) implements: one package per format.

A backend is a light object: importing it imports no framework, so the spec
and the graph can ask it what it supports while doit loads the graph.  The
heavy parts (converter, runtime) are imported by its methods when a step
calls them.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np

    from ..contracts import ConvertJob, ExportJob
    from ..kinds import Precision
    from ..plan import FormatSupport
    from ..tensors import Tensors


def tensor_signature(name: str, shape, dtype) -> dict:
    """One input or output of a signature (modelmake/tensors.py): {name, shape (None for a dynamic dimension), dtype}."""
    return {"name": name, "shape": [None if d is None or d < 0 else int(d) for d in shape], "dtype": str(dtype)}


def tool_message(error: BaseException, *, first: bool = False) -> str:
    """What a converter's or checker's exception says, in one line: its last line (where converters put the
    cause), or with ``first`` its first (where checkers put the verdict); its type when it says nothing."""
    lines = str(error).strip().splitlines()
    return (lines[0] if first else lines[-1]) if lines else type(error).__name__


class NotMeasurable(Exception):
    """A figure this host cannot measure (Core ML off macOS); the reason is reported instead of a number."""


class FormatRuntime(Protocol):
    """Loads and runs a file of the format; imported only by the steps that need it.

    Inputs and outputs are named tensors (modelmake/tensors.py) under the
    file's own names, which every converter keeps from the source.
    """

    def predict(self, path: Path | str, inputs: Mapping[str, np.ndarray], *, what: str, batch: int | None = None) -> Tensors:
        """Float32 outputs by name for preprocessed inputs by name (every input of the file; each cast to the
        input's dtype), run ``batch`` samples at a time (None: as many as the runtime suits; 1 must work for
        every file); raises NotMeasurable where this host cannot run the format."""

    def median_latency_ms(self, path: Path | str, *, what: str, sample: Mapping[str, np.ndarray] | None = None) -> float:
        """Median single-sample latency on the build host, one thread; ``sample`` is one sample per input, without
        its batch dimension (zeros when None)."""

    def io_details(self, path: Path | str, *, what: str) -> dict:
        """{"inputs": [{name, dtype, shape, quantization?}, ...], "outputs": [...]} as an app binds them."""

    def accelerator_coverage(self, path: Path | str, support: FormatSupport) -> dict | None:
        """{"accelerator", "ops", "on_accelerator", "fallback"} for the profile's accelerator, or None when it names none."""

    def structural_check(
        self, path: Path | str, *, what: str, source_signature: dict, precision: Precision, palettize: int | None
    ) -> dict | None:
        """What can be proven without running the file (for formats this host cannot run); None where running it proves more."""

    def weight_share(self, path: Path | str, precision: Precision, palettize: int | None = None) -> float | None:
        """Share of the weight bytes stored at ``precision`` (float16; 8-bit integers for the int8 kinds), read
        from the file; None for fp32, where no weight is meant to be reduced."""


class FormatBackend(Protocol):
    name: str  # as written in profiles and artifact names: tflite, onnx, coreml
    suffix: str  # the artifact file's suffix; a directory format ships as a reproducible zip
    source_kinds: tuple[str, ...]  # the source kinds it converts from
    palettizes: bool  # whether its files can store weights as palettes (look-up tables)
    quantizes_own_files: bool  # whether a source file of this format can be built at another precision than fp32
    precisions: tuple[Precision, ...]  # the precisions its converter makes
    convert_tools: tuple[str, ...]  # distributions whose versions decide the converted bytes
    runtime_tools: tuple[str, ...]  # distributions that load and run its files
    accelerators: dict[str, str]  # the accelerators whose op coverage its runtime reports, with what each is
    profile_properties: dict[str, Any]  # JSON schema of the keys of its own section in a target profile
    quantization_aware: bool  # whether its converter turns a quantization-aware trained model into int8
    prunes_after_conversion: bool  # whether it prunes a converted model's weights itself (no training needed)

    def parse_settings(self, section: dict) -> Any:
        """Its profile section (already schema-valid, common keys removed) as its frozen settings record."""

    def variant_problem(self, support: FormatSupport, precision: Precision, palettize: int | None) -> str | None:
        """Why this target cannot build a variant with these options, checked at plan time; None when it can."""

    def convert(self, job: ConvertJob) -> None:
        """Write ``job.out`` and then ``job.out_record`` (an ArtifactRecord), which later tasks depend on."""

    def runtime(self) -> FormatRuntime:
        """The module or object that loads and runs its files."""

    def source_signature(self, path: Path, *, what: str) -> dict:
        """The inputs and outputs (tensors.signature) of a file of this format given as a model's source."""

    # Optional: a format whose conversions share one float model per source (ONNX: the tf2onnx export per opset).
    export_tools: tuple[str, ...]  # distributions whose versions decide the exported bytes
    export_prepared: tuple[str, ...]  # the kinds of ExportJob.out_prepared its export writes (the float model as its quantizers take it)

    def export_options(self, support: FormatSupport, source_kind: str) -> dict[str, Any] | None:
        """The settings the float model of a ``source_kind`` source depends on for this target, exported once per
        distinct value (an ``export`` task) and converted from by every variant; None when conversions read the source."""

    def export(self, job: ExportJob) -> None:
        """Write ``job.out`` (the float model) and then ``job.out_record`` (an ExportRecord)."""
    def weight_sparsity(self, path: Path | str) -> tuple[int, int, int]:
        """(zero elements, elements, tensors stored sparse) over the file's weight tensors of rank 2 and up, read from it."""


class PackageBackend:
    """What every backend does alike: its convert and runtime modules, imported when a step first needs them.

    A backend subclasses this in its package's ``__init__.py`` and sets the
    attributes of ``FormatBackend``; the heavy modules sit beside it as
    ``convert.py`` and ``runtime.py``.
    """

    palettizes: bool = False
    export_tools: tuple[str, ...] = ()
    export_prepared: tuple[str, ...] = ()

    def export_options(self, support: FormatSupport, source_kind: str) -> dict[str, Any] | None:
        return None

    def export(self, job: ExportJob) -> None:
        importlib.import_module(f"{type(self).__module__}.export").export(job)
    quantization_aware: bool = False
    prunes_after_conversion: bool = False

    def variant_problem(self, support: FormatSupport, precision: Precision, palettize: int | None) -> str | None:
        return None

    def convert(self, job: ConvertJob) -> None:
        importlib.import_module(f"{type(self).__module__}.convert").convert(job)

    def runtime(self) -> FormatRuntime:
        return cast("FormatRuntime", importlib.import_module(f"{type(self).__module__}.runtime"))

    def source_signature(self, path: Path, *, what: str) -> dict:
        return importlib.import_module(f"{type(self).__module__}.runtime").source_signature(path, what=what)

    def weight_sparsity(self, path: Path | str) -> tuple[int, int, int]:
        return importlib.import_module(f"{type(self).__module__}.sparsity").measure(Path(path))


def count_zeros(values: np.ndarray) -> tuple[int, int]:
    """(zero elements, elements) of a weight array: what each format's ``sparsity.measure`` adds up."""
    import numpy as np

    return int(values.size - np.count_nonzero(values)), int(values.size)
