"""TFLite builtin ops the GPU delegate can take, from the delegate's operation parser
(tensorflow/lite/delegates/gpu/common/model_builder.cc, NewOperationParser).

Kept as data because TFLite's model analyzer, asked for GPU compatibility,
reports every op as compatible in the TensorFlow 2.21 wheel (UNIQUE and WHERE
included, which the delegate rejects); an op missing here is reported as
running on the CPU.  Ops that are listed may still be refused for their
tensor types or shapes at run time on the device.
"""

GPU_DELEGATE_OPS = frozenset(
    """
    ABS ADD ADD_N AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D COS CUMSUM DENSIFY
    DEPTH_TO_SPACE DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD
    FULLY_CONNECTED GATHER GELU GREATER GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG
    LOGICAL_AND LOGISTIC LSTM MAX_POOL_2D MAXIMUM MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT
    PACK PAD PADV2 POW PRELU QUANTIZE REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU_N1_TO_1 RELU6
    RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT_V2 SIN SLICE SOFTMAX SPACE_TO_DEPTH
    SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE
    TRANSPOSE_CONV
    """.split()
)
