"""Bringing an ONNX source exported at an older opset up to the target profile's.

ONNX Runtime's quantizer writes the ops of the opset it finds: on an opset
below 13 its per-channel DequantizeLinear carries an ``axis`` that opset does
not define, and the result fails the ONNX checker.  The profile's opset is
what the device's runtime loads, so an older source is upgraded to it once,
before any precision rewrites the graph.
"""
from __future__ import annotations

from ...errors import StepError
from ..base import tool_message

# The first opset whose QuantizeLinear/DequantizeLinear take a per-channel axis.
PER_CHANNEL_QDQ_OPSET = 13


def default_opset(model) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def upgraded(model, opset: int, *, what: str):
    """``model`` at ``opset`` when it was exported at an older one; otherwise ``model`` itself, untouched."""
    import onnx
    from onnx import version_converter

    used = default_opset(model)
    if used is None or used >= opset:
        return model
    print(
        f"{what} uses ONNX opset {used}, older than the opset {opset} the target profile runs: "
        f"upgrading it with onnx's version converter so that the converted ops are those of opset {opset}"
    )
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted, full_check=True)
    except Exception as exc:
        raise StepError(
            f"{what} uses ONNX opset {used}, and onnx's version converter could not upgrade it to the profile's opset {opset} "
            f"({tool_message(exc, first=True)}): re-export it at opset {opset} "
            f"(int8 needs opset {PER_CHANNEL_QDQ_OPSET} or newer)"
        ) from exc
    print(f"{what}: upgraded from opset {used} to {opset}")
    return converted
