"""ONNX ops that ONNX Runtime's QNN execution provider can hand to Qualcomm's HTP backend.

Source: the "Supported ONNX operators" table of the QNN Execution Provider
documentation, github.com/onnxruntime/onnxruntime-qnn
docs/execution_providers/QNN-ExecutionProvider.md (QNN EP 2.x, the plugin
provider for ONNX Runtime 1.24 and later), checked against the op builders
registered in onnxruntime/core/providers/qnn/builder/op_builder_factory.cc
of the same repository.  Listing means the provider has a builder for the
op; a builder may still reject one node for its attributes or data types,
which only a device can tell.  The provider gains ops release by release:
re-read the table when the app's onnxruntime-qnn is upgraded.
"""

QNN_HTP_OPS = {
    "": frozenset(
        {
            "Abs", "Add", "And", "ArgMax", "ArgMin", "Asin", "Atan", "AveragePool",
            "BatchNormalization", "Cast", "Ceil", "Clip", "Concat", "Conv", "ConvTranspose",
            "Cos", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Einsum", "Elu",
            "Equal", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements",
            "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater",
            "GreaterOrEqual", "GridSample", "GroupNormalization", "HardSigmoid", "HardSwish",
            "Identity", "InstanceNormalization", "Inverse", "IsNaN", "LRN", "LSTM",
            "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
            "LpNormalization", "MatMul", "Max", "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg",
            "NonZero", "Not", "Or", "PRelu", "Pad", "Pow", "QuantizeLinear",
            "RandomNormalLike", "RandomUniformLike", "Reciprocal", "ReduceL2", "ReduceMax",
            "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "Relu", "RMSNormalization",
            "Reshape", "Resize", "RoiAlign", "Round", "RotaryEmbedding", "STFT",
            "ScatterElements", "ScatterND", "Sigmoid", "Sign", "Sin", "Slice", "Softmax",
            "Softplus", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
            "ThresholdedRelu", "Tile", "TopK", "Transpose", "Unsqueeze", "Upsample", "Where",
        }
    ),
    "com.microsoft": frozenset(
        {
            # 16-bit Q/DQ below opset 21
            "DequantizeLinear", "QuantizeLinear",
            "FusedMatMul", "Gelu", "MatMulNBits", "QuickGelu", "RotaryEmbedding",
            "SimplifiedLayerNormalization",
        }
    ),
}
QNN_HTP_OPS["ai.onnx"] = QNN_HTP_OPS[""]

# Dynamic quantization runs on the HTP only as the whole pattern
# DynamicQuantizeLinear -> ConvInteger/MatMulInteger -> Cast -> Mul with
# constant int8/uint8 weights, which the provider fuses into one quantized op.
QNN_DYNAMIC_QUANT_OPS = frozenset({"ConvInteger", "MatMulInteger"})

# The ops that mark a model as quantized (QDQ) and bracket each quantized node.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
