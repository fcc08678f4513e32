"""A digest of what a SavedModel computes, the same for every export of the same model.

Two exports of one Keras model differ in their bytes: ``model.export`` lists
the variables in the order of a set keyed by object address, and the
checkpoint, the object graph and the save and restore functions follow that
order; TensorFlow numbers the functions it traces from a process-wide counter
(``__inference___call___2674``), so the numbers depend on what the process
traced before.  A digest of the files would call every re-run of an unchanged
source a new model, and every conversion of it would run again.

This digest covers what the converters read instead: each signature's inputs
and outputs, and its function with the variables folded in as constants, so
that every weight is in it, bound to the operation that reads it.  Of that
graph it keeps the nodes the outputs depend on, in name order, without the
attributes that only record how it was traced; freezing a loop leaves a
varying number of unused placeholders behind, and those go too.  A changed
weight, operation or signature changes the digest; the order of a list in the
object graph and the numbers TensorFlow gave its functions do not.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .. import fsutil

# Attributes that describe how a function was traced, not what a node computes.
_TRACING_ATTRIBUTES = ("_has_manual_control_dependencies", "_user_specified_name")
# What TensorFlow appends to a traced function's name: its uid, and for a
# forward/backward pair the uid of the other one (__forward_call_1234_1301).
_FUNCTION_NUMBER = re.compile(r"(?:_\d+)+$")


def saved_model_digest(loaded, directory: Path) -> str:
    """The digest of ``loaded`` (``tf.saved_model.load(directory)``): its signatures, their frozen graphs, its assets.

    A model whose graphs cannot be frozen whole (a lookup table, say, is a
    resource that stays outside the graph, and its contents with it) gets the
    digest of its files: every re-export of it then converts again, but no
    change goes unseen.
    """
    try:
        return _content_digest(loaded, directory)
    except Exception as exc:
        print(
            f"{directory}: the source record holds the digest of these files, which differ between two exports of one "
            f"model, as what the model computes cannot be read whole ({type(exc).__name__}: {exc}); each re-export "
            "converts it again"
        )
        return fsutil.sha256_tree(directory)


class _NotFolded(Exception):
    """A signature's function reads a resource that freezing leaves outside the graph."""


def _content_digest(loaded, directory: Path) -> str:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    digest = hashlib.sha256()
    for key in sorted(loaded.signatures):
        function = loaded.signatures[key]
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        frozen = convert_variables_to_constants_v2(function)
        arguments = frozen.inputs[: len(tf.nest.flatten(function.structured_input_signature))]
        if len(frozen.inputs) > len(arguments):
            captured = ", ".join(f"{tensor.name} ({tensor.dtype.name})" for tensor in frozen.inputs[len(arguments):])
            raise _NotFolded(f"signature {key} reads {captured}, which are not variables")
        produced = {name: tensor.name for name, tensor in tf.nest.pack_sequence_as(outputs, frozen.outputs).items()}
        digest.update(f"signature {key}\0".encode())
        for name in sorted(inputs):
            digest.update(f"input {name} {inputs[name].dtype.name} {inputs[name].shape}\0".encode())
        for name in sorted(outputs):
            digest.update(f"output {name} {outputs[name].dtype.name} {outputs[name].shape} {produced[name]}\0".encode())
        digest.update(_graph_digest(frozen.graph.as_graph_def(), sorted(produced.values())).encode())
    assets = Path(directory) / "assets"
    if assets.is_dir():
        digest.update(b"assets\0" + fsutil.sha256_tree(assets).encode())
    return digest.hexdigest()


def _graph_digest(graph_def, outputs: list[str]) -> str:
    """The nodes ``outputs`` depend on, in name order, with each library function named by its content."""
    nodes = {node.name: node for node in graph_def.node}
    graph = type(graph_def)()
    graph.node.extend(nodes[name] for name in sorted(_needed(nodes, outputs)))
    _canonical_functions(graph, graph_def.library)
    for node in graph.node:
        for attribute in _TRACING_ATTRIBUTES:
            node.attr.pop(attribute, None)
    return hashlib.sha256(graph.SerializeToString(deterministic=True)).hexdigest()


def _needed(nodes: dict, outputs: list[str]) -> set[str]:
    needed: set[str] = set()
    pending = [_node_name(tensor) for tensor in outputs]
    while pending:
        name = pending.pop()
        if name not in needed and name in nodes:
            needed.add(name)
            pending.extend(_node_name(tensor) for tensor in nodes[name].input)
    return needed


def _node_name(tensor: str) -> str:
    """``node`` of an input ``node:1`` or a control input ``^node``."""
    return tensor.lstrip("^").split(":", 1)[0]


def _canonical_functions(graph, library) -> None:
    """Give ``graph`` the functions of ``library`` its nodes call, each named by its base name and its content.

    Freezing inlines the functions it can; what stays (a loop it cannot lower)
    is called by the name TensorFlow numbered, which differs between processes.
    """
    functions = {function.signature.name: function for function in library.function}
    names: dict[str, str] = {}

    def canonical(name: str, calling: frozenset[str] = frozenset()) -> str:
        if name not in functions:
            return name  # an op
        if name in calling:
            return _FUNCTION_NUMBER.sub("", name)  # a recursive call: the function's name without its number
        if name not in names:
            function = type(functions[name])()
            function.CopyFrom(functions[name])
            _rename_calls(function.node_def, lambda called: canonical(called, calling | {name}))
            for node in function.node_def:
                for attribute in _TRACING_ATTRIBUTES:
                    node.attr.pop(attribute, None)
            _sort(function.node_def, key=lambda node: node.name)
            function.signature.name = ""
            function.arg_attr.clear()  # argument names as the Python function spelled them (_user_specified_name)
            content = hashlib.sha256(function.SerializeToString(deterministic=True)).hexdigest()[:16]
            names[name] = f"{_FUNCTION_NUMBER.sub('', name)}.{content}"
            function.signature.name = names[name]
            graph.library.function.append(function)
        return names[name]

    _rename_calls(graph.node, canonical)
    _sort(graph.library.function, key=lambda function: function.signature.name)


def _sort(messages, key) -> None:
    """Sort a repeated message field in place (through copies: the field owns its elements)."""
    ordered = [type(message)() for message in messages]
    for copy, message in zip(ordered, sorted(messages, key=key), strict=True):
        copy.CopyFrom(message)
    del messages[:]
    messages.extend(ordered)


def _rename_calls(nodes, rename) -> None:
    """Name each function a node calls (as its op, or in an attribute) as ``rename`` says."""
    for node in nodes:
        node.op = rename(node.op)
        for value in node.attr.values():
            _rename_attribute(value, rename)


def _rename_attribute(value, rename) -> None:
    calls = [value.func] if value.HasField("func") else list(value.list.func) if value.HasField("list") else []
    for call in calls:
        call.name = rename(call.name)
        for nested in call.attr.values():
            _rename_attribute(nested, rename)
