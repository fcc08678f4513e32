"""A MobileNet v1 network (depthwise-separable convolutions, width 1.0) trained on digits.

About 3.2 million parameters (12.9 MB of fp32 weights): big enough that size
and latency figures mean something, and trained on the same data so its
accuracy figures do too.  The 8x8 digits are upscaled to 32x32 by repeating
pixels; the first convolution has stride 2, as in MobileNet v1.
"""
import digits_data

UPSCALE = 4
WIDTH = 1.0
EPOCHS = 10
DROPOUT = 0.3
SHIFTED_COPIES = 2
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
# (filters at width 1.0, stride) of MobileNet v1's depthwise-separable blocks
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

METADATA = {
    "dataset": digits_data.DESCRIPTION + ", upscaled to 32x32",
    "seed": 11,
    "architecture": f"MobileNet v1, width {WIDTH}, {len(BLOCKS)} quantization-friendly depthwise-separable blocks",
    "hyperparameters": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "optimizer": "adam",
                        "dropout": DROPOUT, "augmentation": f"{SHIFTED_COPIES} copies shifted by up to one pixel"},
}


def load_data(split):
    return digits_data.load_split(split, upscale=UPSCALE)


def _augmented(x, y):
    """The 8x8 training images plus copies shifted by up to one pixel, then upscaled."""
    import numpy as np

    rng = np.random.default_rng(METADATA["seed"])
    copies, labels = [x], [y]
    for _ in range(SHIFTED_COPIES):
        shifts = rng.integers(-1, 2, size=(len(x), 2))
        copies.append(np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts)]))
        labels.append(y)
    x = np.concatenate(copies)
    return np.kron(x, np.ones((1, UPSCALE, UPSCALE, 1), dtype=np.float32)), np.concatenate(labels)


def build_model():
    import keras
    from keras import layers

    def conv_bn_relu(h, filters, kernel, stride):
        h = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization(momentum=0.9)(h)
        return layers.ReLU()(h)

    x, y = _augmented(*digits_data.load_split("train"))
    inputs = keras.Input((8 * UPSCALE, 8 * UPSCALE, 1), name="image")
    h = conv_bn_relu(inputs, int(32 * WIDTH), 3, 2)
    for filters, stride in BLOCKS:
        # Quantization-friendly separable block (Sheng et al., 2018): no batch norm or activation
        # after the depthwise convolution, so its weights keep similar ranges across channels and
        # one int8 scale per tensor represents them well.
        h = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(h)
        h = conv_bn_relu(h, int(filters * WIDTH), 1, 1)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dropout(DROPOUT)(h)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(h)
    model = keras.Model(inputs, outputs, name="mobilenet_digits")
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 16.0, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
    return model
