"""Named samples in, ONNX Runtime feeds out, and its results back as named samples.

Every array of a ``Tensors`` mapping holds its samples along its first axis.
An ONNX tensor holds them along its batch axis, which is not always the
first (a recurrent state [2, N, 64] has it second) and which some tensors
lack (a sample-rate scalar, the same for every sample).  The batch axis is:

1. the axis whose dimension is denoted DATA_BATCH (ONNX's standard dimension
   denotation), which the converter writes on every artifact it builds, so
   that a batch fixed at 1 stays known as the batch;
2. else the axis named by the model's batch symbol (the dim_param of the
   first symbolic leading dimension among the inputs), as exporters name it;
3. else the first axis, when it is dynamic or of size 1;
4. else the first dynamic axis (a state [2, ?, 64]);
5. else none: one value serves every sample of a run.

A run feeds a shared input (no batch axis, or a static one of size 1 in a
file whose batch is dynamic elsewhere, like a sample rate [1]) one value for
all its samples; samples that differ there run one at a time.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ...errors import StepError
from ...tensors import shown

BATCH_DENOTATION = "DATA_BATCH"


@dataclass(frozen=True)
class Layout:
    """One graph input or output as modelmake feeds or reads it."""

    name: str
    shape: tuple[int | None, ...] | None  # None: unknown rank; a None dimension is dynamic
    dtype: np.dtype
    batch_axis: int | None

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the file fixes (its batch axis is static), else None."""
        if self.shape is None or self.batch_axis is None:
            return None
        return self.shape[self.batch_axis]

    @property
    def sample_shape(self) -> tuple[int | None, ...] | None:
        """The shape of one sample: the tensor's shape without its batch axis."""
        if self.shape is None or self.batch_axis is None:
            return self.shape
        return self.shape[: self.batch_axis] + self.shape[self.batch_axis + 1 :]


def _dims(value) -> list | None:
    """Each dimension as an int, a dim_param string or None (unknown); None for an unknown rank."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return dims


def batch_symbol(graph, initializers: set[str]) -> str | None:
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = _dims(value)
        if dims and isinstance(dims[0], str):
            return dims[0]
    return None


def batch_axis(value, symbol: str | None) -> int | None:
    """The axis of ``value`` (a ValueInfoProto) that holds the samples, by the rules of this module's docstring."""
    dimensions = value.type.tensor_type.shape.dim if value.type.tensor_type.HasField("shape") else []
    for axis, dim in enumerate(dimensions):
        if dim.denotation == BATCH_DENOTATION:
            return axis
    dims = _dims(value)
    if dims is None:
        return 0  # unknown rank: exporters put the batch first
    if symbol is not None and symbol in dims:
        return dims.index(symbol)
    if not dims:
        return None
    if not isinstance(dims[0], int) or dims[0] == 1:
        return 0
    return next((axis for axis, d in enumerate(dims) if not isinstance(d, int)), None)


def graph_layouts(model) -> tuple[list[Layout], list[Layout]]:
    """(inputs, outputs) of the model's main graph, in the model's order; initializers listed as inputs are left out."""
    import onnx

    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    symbol = batch_symbol(graph, initializers)

    def layout(value) -> Layout:
        dims = _dims(value)
        shape = None if dims is None else tuple(d if isinstance(d, int) else None for d in dims)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        return Layout(value.name, shape, dtype, batch_axis(value, symbol))

    inputs = [layout(v) for v in graph.input if v.name not in initializers]
    return inputs, [layout(v) for v in graph.output]


def mark_batch_axes(model, axes: Mapping[str, int | None]) -> None:
    """Denote the batch axis of each graph input and output named in ``axes`` (before its size was fixed)."""
    for value in [*model.graph.input, *model.graph.output]:
        axis = axes.get(value.name)
        if axis is None or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if axis < len(dims):
            dims[axis].denotation = BATCH_DENOTATION


def batch_axes(model) -> dict[str, int | None]:
    inputs, outputs = graph_layouts(model)
    return {layout.name: layout.batch_axis for layout in [*inputs, *outputs]}


def fixed_batch(inputs: list[Layout]) -> int | None:
    """The batch size every run must have where the file fixes it (no input has a dynamic batch axis); else None."""
    if any(layout.batch_axis is not None and layout.fixed_batch is None for layout in inputs):
        return None
    return next((layout.fixed_batch for layout in inputs if layout.fixed_batch is not None), None)


def is_shared(layout: Layout, fixed: int | None) -> bool:
    """Whether a run feeds this input one value for all its samples: it has no batch axis, or a static one
    in a file whose batch is dynamic elsewhere (a sample rate [1] beside audio [N, 512])."""
    return layout.batch_axis is None or (fixed is None and layout.fixed_batch is not None)


def _fits(shape: tuple, expected: tuple | None) -> bool:
    return expected is not None and len(shape) == len(expected) and all(e is None or e == a for e, a in zip(expected, shape, strict=True))


def samples_first(inputs: list[Layout], given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The given arrays with their samples first, also accepting one run in the model's own layout.

    A stream feeds each step as the model takes it: a state [2, 1, 64] with
    its batch axis second, a scalar sample rate as a 0-d array.  An array
    that does not fit the samples-first form but fits the tensor's own shape
    is moved to it; a 0-d array serves every sample.
    """
    layouts = {layout.name: layout for layout in inputs}
    arrays = {name: np.asarray(values) for name, values in given.items()}
    for name, array in arrays.items():
        layout = layouts.get(name)
        if layout is None or layout.batch_axis is None or array.ndim == 0 or _fits(array.shape[1:], layout.sample_shape):
            continue
        if _fits(array.shape, layout.shape):
            arrays[name] = np.moveaxis(array, layout.batch_axis, 0)
    count = next((len(array) for array in arrays.values() if array.ndim), 1)
    return {name: np.repeat(array[np.newaxis], count, axis=0) if array.ndim == 0 else array for name, array in arrays.items()}


def check_inputs(inputs: list[Layout], given: Mapping[str, np.ndarray], *, what: str, partial: bool = False) -> None:
    """Every input of the file has samples (unless ``partial``), nothing else is given, and each sample has the input's shape."""
    names = [layout.name for layout in inputs]
    listed = ", ".join(names)
    unknown = [name for name in given if name not in names]
    if unknown:
        raise StepError(f"{what} has no input named {', '.join(unknown)}; its inputs are {listed}: feed those names")
    missing = [name for name in names if name not in given]
    if missing and not partial:
        raise StepError(f"{what} needs every one of its inputs ({listed}); no samples were given for {', '.join(missing)}")
    counts = {len(np.asarray(given[name])) for name in names if name in given and np.ndim(given[name])}
    if len(counts) > 1:
        raise StepError(f"{what}: its inputs were given different numbers of samples ({sorted(counts)}); give each the same")
    for layout in inputs:
        if layout.name not in given or layout.sample_shape is None:
            continue
        actual = tuple(np.shape(given[layout.name])[1:])
        expected = layout.sample_shape
        if len(actual) != len(expected) or any(e is not None and e != a for e, a in zip(expected, actual, strict=True)):
            raise StepError(
                f"{what} takes samples of shape {shown(expected)} for its input {layout.name}, but was given {actual}: "
                "fix the data so each sample matches the input"
            )


def cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as the input's type: integers rounded and clipped to its range, integers given as integers kept exact."""
    values = np.asarray(values)
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype)
    if dtype == np.bool_:
        return values != 0
    if np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def to_model(layout: Layout, chunk: np.ndarray, *, shared: bool = False) -> np.ndarray:
    """A run's samples (samples first) in the tensor's own layout and type; a shared input takes the first sample's value."""
    if layout.batch_axis is None:
        return cast(chunk[0], layout.dtype)
    if shared:
        chunk = np.repeat(chunk[:1], layout.fixed_batch or 1, axis=0)
    return cast(np.moveaxis(chunk, 0, layout.batch_axis), layout.dtype)


def from_model(layout: Layout, result: np.ndarray, used: int) -> np.ndarray:
    """A run's output as float32 samples first, padding dropped; an output without a batch axis is one sample's."""
    result = np.asarray(result)
    if layout.batch_axis is None or layout.batch_axis >= result.ndim:
        return result[np.newaxis].astype(np.float32)
    return np.moveaxis(result, layout.batch_axis, 0)[:used].astype(np.float32)


def agree(values: np.ndarray) -> bool:
    values = np.asarray(values)
    return len(values) <= 1 or bool(np.all(values == values[:1]))


def runs(
    inputs: list[Layout], outputs: list[Layout], tensors: Mapping[str, np.ndarray], step: int, *, pad: str = "zeros"
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(feed, samples used) for each run over ``tensors``, ``step`` samples a run where the file allows.

    A file that fixes its batch gets runs of exactly that size, the last one
    padded (``pad``: "zeros", or "cycle" through the samples, which
    calibration prefers: it adds no value it has not seen).  A run holds one
    sample where an output has no batch axis, or where the shared inputs
    (is_shared) differ between the samples of a run.
    """
    count = len(np.asarray(next(iter(tensors.values())))) if tensors else 0
    fixed = fixed_batch(inputs)
    step = max(1, min(step, fixed) if fixed else step)
    shared = {layout.name for layout in inputs if is_shared(layout, fixed)}
    single = any(layout.batch_axis is None for layout in outputs)
    for start in range(0, count, step):
        stop = min(start + step, count)
        chunk = {name: np.asarray(values)[start:stop] for name, values in tensors.items()}
        if single or not all(agree(chunk[name]) for name in shared if name in chunk):
            pieces = [(index, dict(one_each(tensors, index))) for index in range(start, stop)]
        else:
            pieces = [(start, chunk)]
        for first, piece in pieces:
            used = len(next(iter(piece.values())))
            if fixed and used < fixed:
                piece = _padded(piece, fixed, tensors, first, pad)
            feed = {
                layout.name: to_model(layout, piece[layout.name], shared=layout.name in shared) for layout in inputs if layout.name in piece
            }
            yield feed, used


def one_each(tensors: Mapping[str, np.ndarray], index: int) -> Iterator[tuple[str, np.ndarray]]:
    """Each tensor's sample ``index``, kept as a run of one."""
    for name, values in tensors.items():
        yield name, np.asarray(values)[index : index + 1]


def _padded(piece: dict[str, np.ndarray], size: int, tensors: Mapping[str, np.ndarray], start: int, pad: str) -> dict[str, np.ndarray]:
    used = len(next(iter(piece.values())))
    if pad == "cycle":
        count = len(next(iter(tensors.values())))
        indices = (np.arange(start, start + size)) % count
        return {name: np.asarray(values)[indices] for name, values in tensors.items()}
    return {name: np.concatenate([values, np.zeros((size - used, *values.shape[1:]), values.dtype)]) for name, values in piece.items()}


def zeros(layout: Layout) -> np.ndarray:
    """A feed of zeros in the tensor's shape, a dynamic dimension taken as 1."""
    shape = [1 if d is None else d for d in (layout.shape or ())]
    return np.zeros(shape, layout.dtype)


def one_sample(layout: Layout, sample: np.ndarray, fixed: int | None) -> np.ndarray:
    """One sample (without its batch axis) as a feed, repeated to the file's fixed batch."""
    shared = is_shared(layout, fixed)
    return to_model(layout, np.repeat(np.asarray(sample)[np.newaxis], 1 if shared else fixed or 1, axis=0), shared=shared)
