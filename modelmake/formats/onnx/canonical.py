"""One node order and one set of names for an ONNX graph, so that every conversion of the same graph gives the same bytes."""
from __future__ import annotations

import hashlib

import numpy as np


def canonicalize(model) -> None:
    """Give a tf2onnx graph one node order and one set of names, whatever tf2onnx's internal state was.

    tf2onnx does not repeat itself within a process (and doit runs every task
    in one): it names what it creates from a process-wide counter, sorts nodes
    by those names, and its optimizers walk sets of node objects, so the node
    order, the numbers in names and which of two equal constants survives
    change from one conversion to the next, while the graph they describe
    stays the same.  Ordering the nodes by what they compute and naming them
    by position gives every conversion of that graph the same bytes.  Input
    and output names, which apps use, are kept.
    """
    graph = model.graph
    kept = {v.name for v in graph.input} | {v.name for v in graph.output}
    digests: dict[str, bytes] = {"": _digest(b"absent")}
    for value in graph.input:
        digests[value.name] = _digest(b"input", value.name.encode())
    for tensor in graph.initializer:
        digests[tensor.name] = _digest(b"tensor", *_tensor_bytes(tensor))
    node_digests = []
    for node in graph.node:
        inputs = [digests.get(name) or _digest(b"outer", name.encode()) for name in node.input]
        digest = _digest(node.domain.encode(), node.op_type.encode(), *inputs, *(_attribute_bytes(a) for a in node.attribute))
        node_digests.append(digest)
        for index, name in enumerate(node.output):
            digests[name] = _digest(digest, str(index).encode())
    sort_topologically(graph, priority=lambda index: (node_digests[index], index))

    renames: dict[str, str] = {}
    taken = set(kept)

    def rename(old: str, new: str) -> None:
        while new in taken:  # only an input or output already named like a generated name
            new = "_" + new
        renames[old] = new
        taken.add(new)

    initializers = {t.name for t in graph.initializer}
    per_op: dict[str, int] = {}
    for node in graph.node:
        number = per_op.get(node.op_type, 0)
        per_op[node.op_type] = number + 1
        node.name = f"{node.op_type}_{number}"
        node.doc_string = ""
        formal = _formal_inputs(node)
        for index, name in enumerate(node.input):
            if name in initializers and name not in renames and name not in kept:
                rename(name, f"{node.name}/{formal[index] if index < len(formal) else f'input{index}'}")
        for name in sorted(_captured_names(node)):
            if name in initializers and name not in renames and name not in kept:
                rename(name, f"{node.name}/captured{len(renames)}")
        for index, name in enumerate(node.output):
            if name and name not in kept:
                rename(name, f"{node.name}:{index}")
    unused = sorted((t for t in graph.initializer if t.name not in renames and t.name not in kept), key=lambda t: digests[t.name])
    for number, tensor in enumerate(unused):
        rename(tensor.name, f"unused_{number}")

    def apply(g) -> None:
        for node in g.node:
            node.input[:] = [renames.get(name, name) for name in node.input]
            node.output[:] = [renames.get(name, name) for name in node.output]
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    apply(sub)

    apply(graph)
    position = {name: index for index, name in enumerate(renames)}
    ordered = sorted(graph.initializer, key=lambda t: position.get(t.name, -1))
    for tensor in ordered:
        tensor.name = renames.get(tensor.name, tensor.name)
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    # Shapes of intermediate tensors are optional, and tf2onnx's use its numbered symbolic dimensions.
    del graph.value_info[:]
    dimensions: dict[str, str] = {}
    for value in [*graph.input, *graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = dimensions.setdefault(dim.dim_param, f"dim_{len(dimensions)}")


def _digest(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.digest()


def _tensor_bytes(tensor) -> tuple[bytes, ...]:
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    return array.dtype.str.encode(), repr(array.shape).encode(), np.ascontiguousarray(array).tobytes()


def _attribute_bytes(attribute) -> bytes:
    """An attribute's content without the names tf2onnx gives its tensors."""
    import onnx

    copy = onnx.AttributeProto()
    copy.CopyFrom(attribute)
    if copy.HasField("t"):
        copy.t.name = ""
    for tensor in copy.tensors:
        tensor.name = ""
    return copy.SerializeToString(deterministic=True)


def _formal_inputs(node) -> list[str]:
    """The schema's names for a node's inputs (W, B, shape...), numbered where the schema repeats one."""
    import onnx

    try:
        schema = onnx.defs.get_schema(node.op_type, domain=node.domain)
    except onnx.defs.SchemaError:
        return []
    names = []
    for index in range(len(node.input)):
        formal = schema.inputs[min(index, len(schema.inputs) - 1)] if schema.inputs else None
        if formal is None:
            names.append(f"input{index}")
        elif index >= len(schema.inputs) - 1 and formal.option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
            names.append(f"{formal.name}{index - len(schema.inputs) + 1}")
        else:
            names.append(formal.name)
    return names


def sort_topologically(graph, priority=None) -> None:
    """Order the nodes so that each comes after the producers of its inputs.

    Among the nodes ready at each point, the one with the lowest ``priority``
    (by default, the earliest in the current order) comes first.
    """
    import heapq

    priority = priority or (lambda index: index)

    nodes = list(graph.node)
    available = {""} | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    produced_here = {name for node in nodes for name in node.output}
    needs = []
    for node in nodes:
        wanted = set(node.input) | _captured_names(node)
        needs.append({name for name in wanted if name in produced_here and name not in available})
    waiting_on: dict[str, list[int]] = {}
    for index, wanted in enumerate(needs):
        for name in wanted:
            waiting_on.setdefault(name, []).append(index)
    missing = [len(wanted) for wanted in needs]
    ready = [(priority(index), index) for index, count in enumerate(missing) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, index = heapq.heappop(ready)
        order.append(index)
        for name in nodes[index].output:
            for waiter in waiting_on.pop(name, []):
                missing[waiter] -= 1
                if missing[waiter] == 0:
                    heapq.heappush(ready, (priority(waiter), waiter))
    if len(order) != len(nodes):
        return  # a cycle: leave the order alone and let the checker name the node
    del graph.node[:]
    graph.node.extend(nodes[index] for index in order)


def _captured_names(node) -> set[str]:
    """Names a node's subgraphs read from the enclosing graph."""
    names: set[str] = set()
    for attribute in node.attribute:
        for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            defined = {v.name for v in sub.input} | {t.name for t in sub.initializer} | {o for n in sub.node for o in n.output}
            for inner in sub.node:
                names |= {name for name in inner.input if name not in defined}
                names |= _captured_names(inner) - defined
    return names
